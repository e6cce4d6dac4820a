//! `tollgate explain`: the verdict a packet would get, from the same compiled snapshot the
//! kernel gets (the table lookup the data path does, not a separate interpretation).
use std::path::PathBuf;

use clap::Args;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use tollgate_compile::l4::failsafe::{Failsafe, FAILSAFE_OBJECT};
use tollgate_compile::l4::packet::{Outcome, Packet, Reason};
use tollgate_compile::l4::RuleKind;
use tollgate_compile::l7::table::{LimitKey, MatchDef, PathMatch};
use tollgate_compile::snapshot::{
    compile_documents, compile_documents_for_node, ANY_OTHER_INTERFACE,
};
use tollgate_dataplane::bans::BanKind;
use tollgate_proxy::decide::{decide, Decision, RequestParts};
use tollgate_source::dir::read_dir;

/// Arguments of `tollgate explain`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["packet", "request"])))]
pub struct ExplainArgs {
    /// Policy directory (or file).
    #[arg(long)]
    pub source: PathBuf,
    /// The packet, e.g. 'tcp 203.0.113.7:51000 -> 10.0.0.1:22' or 'icmp 192.0.2.1 -> 10.0.0.1 type 8'.
    #[arg(long)]
    pub packet: Option<String>,
    /// The interface it arrives on (default: one that no policy names).
    #[arg(long, default_value = ANY_OTHER_INTERFACE)]
    pub interface: String,
    /// A failsafe endpoint as the agent would have it (`tollgate run --failsafe`, or the API
    /// server in Kubernetes mode), ADDR:PORT; repeat for more. Its TCP replies pass whatever
    /// the policy says (lock-out protection).
    #[arg(long = "failsafe", value_name = "ADDR:PORT")]
    pub failsafe: Vec<Failsafe>,
    /// The node the packet arrives at (L4Policy nodeSelector): the policies it does not
    /// select are left out, and named.
    #[command(flatten)]
    pub node: super::node::NodeArgs,
    /// An HTTP request to the L7 proxy: 'METHOD URL', e.g.
    /// 'GET http://api.example.com:18000/v1/orders?id=7' (the URL's port is the listener's).
    #[arg(long)]
    pub request: Option<String>,
    /// A request header ('Name: value'); repeat for more.
    #[arg(
        long = "header",
        short = 'H',
        value_name = "NAME: VALUE",
        requires = "request"
    )]
    pub headers: Vec<String>,
}

/// Runs `explain`; exit 0 pass, 1 drop, 2 error.
pub fn explain(args: ExplainArgs) -> anyhow::Result<i32> {
    if let Some(request) = &args.request {
        return explain_request(&args.source, request, &args.headers);
    }
    let text = args.packet.clone().unwrap_or_default();
    let (packet, source_port) = match Packet::parse_with_source_port(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let mut docs = match read_dir(&args.source) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    args.node.apply(&mut docs);
    let mut interfaces: Vec<String> = vec![args.interface.clone()];
    if args.interface != ANY_OTHER_INTERFACE {
        interfaces.push(ANY_OTHER_INTERFACE.into());
    }
    let snapshot = match compile_documents_for_node(
        &mut Default::default(),
        &docs,
        Some(&interfaces),
        &args.failsafe,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprint!("the policy is invalid, nothing would be applied:\n{e}");
            return Ok(2);
        }
    };
    for w in snapshot
        .warnings
        .iter()
        .filter(|w| w.location.object == FAILSAFE_OBJECT)
    {
        eprintln!("warning: {}", w.message);
    }
    let l4 = &snapshot.l4;
    let d = l4.decide_with_source_port(&args.interface, &packet, source_port);
    let verdict = match (d.outcome, d.reason) {
        (Outcome::Drop, _) => "DROP",
        (Outcome::Pass, Reason::Audit) => "PASS (audit: would DROP)",
        (Outcome::Pass, _) => "PASS",
    };
    println!("packet:    {text}");
    println!("interface: {}", args.interface);
    println!("verdict:   {verdict}");
    if !l4.failsafe.is_empty() {
        let list: Vec<String> = l4.failsafe.iter().map(ToString::to_string).collect();
        println!("failsafe:  {}", list.join(", "));
    }
    if let Some(node) = args.node.node() {
        println!(
            "node:      {} ({})",
            node.name,
            super::node::labels_text(&node)
        );
        for name in &snapshot.not_for_this_node {
            println!(
                "not applied on this node: L4Policy/{name}: its spec.nodeSelector does not select the node's labels"
            );
        }
    }
    let find = |r: &tollgate_compile::l4::packet::RuleRef| {
        l4.rules
            .iter()
            .find(|i| i.policy == r.policy && i.rule == r.rule)
    };
    match (&d.rule, d.reason) {
        (Some(r), _) => {
            let info = find(r);
            let kind = match info.map(|i| i.kind) {
                Some(RuleKind::Deny) => "deny",
                Some(RuleKind::Allow) => "allow",
                _ => "default",
            };
            println!(
                "decided by: L4Policy/{} rule {} ({kind}, {})",
                r.policy,
                r.rule,
                info.map(|i| i.file.as_str()).unwrap_or("")
            );
        }
        (None, Reason::Unconfigured) => println!(
            "decided by: no L4Policy applies to interface {}",
            args.interface
        ),
        (None, Reason::Failsafe) => {
            let f = l4.failsafe.iter().find(|f| f.addr == packet.src);
            println!(
                "decided by: lock-out protection: a reply from failsafe endpoint {} passes whatever the policy says",
                f.map_or_else(|| packet.src.to_string(), ToString::to_string)
            )
        }
        (None, Reason::Malformed) => println!(
            "decided by: the parser: an IPv6 packet from an IPv4-mapped source (::ffff:0:0/96) is never on the wire, and no rule judges it"
        ),
        (None, Reason::Fragment) => {
            println!("decided by: non-first fragment; no rule without ports or ICMP types matches, so it passes (its first fragment was judged)")
        }
        (None, _) => {
            let set = &l4.sets[l4.interfaces[&args.interface]];
            println!(
                "decided by: defaultAction {:?} of {} (no rule matches)",
                set.default_action,
                set.policies.join(", ")
            );
        }
    }
    let why = match d.reason {
        Reason::Policy if d.outcome == Outcome::Drop => {
            "a deny rule matches; deny wins over any allow"
        }
        Reason::Policy => "an allow rule matches and no deny rule does",
        Reason::Default => "no rule matches",
        Reason::Audit => "audit mode: the packet would be dropped, it is only counted",
        Reason::Fragment => "fragments after the first carry no ports",
        Reason::Unconfigured => "unconfigured interfaces pass everything",
        Reason::RateLimit => "rate limit",
        Reason::Malformed if d.outcome == Outcome::Pass => {
            "audit mode: the packet would be dropped as malformed (a dual-stack socket would take it for IPv4 traffic from the address inside), it is only counted"
        }
        Reason::Malformed => {
            "a dual-stack socket would take it for IPv4 traffic from the address inside, which IPv4 rules and bans would not see: dropped as malformed"
        },
        Reason::Failsafe => {
            "the node must keep reaching its API server: TCP replies from a failsafe endpoint pass before any rule (a ban still drops them)"
        }
    };
    println!("why:       {why}");
    // The packet is judged by the policy, but replies from this address would not be.
    if d.reason != Reason::Failsafe && packet.protocol == 6 {
        if let Some(port) = l4.failsafe_port(&args.interface, packet.src) {
            let given = source_port.map_or_else(
                || "no source port given".to_owned(),
                |p| format!("source port {p}"),
            );
            println!(
                "failsafe note: replies from {} port {port} pass whatever the policy says (lock-out protection); this packet ({given}) is judged by the policy",
                packet.src
            );
        }
    }
    for r in &d.limits {
        if let Some(l) = find(r).and_then(|i| i.rate_limit) {
            println!(
                "rate limit: {r}: {} packets/s, burst {}, per source /{} (IPv4) /{} (IPv6); over it the packet is dropped (reason ratelimit)",
                l.packets_per_second, l.burst, l.ipv4_prefix, l.ipv6_prefix
            );
        }
    }
    println!("revision:  {}", snapshot.revision.id);
    Ok(if d.outcome == Outcome::Drop { 1 } else { 0 })
}

/// A request as `explain` takes it.
#[derive(Debug)]
struct RequestLine {
    method: Method,
    tls: bool,
    host: String,
    port: u16,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

fn parse_request(text: &str, headers: &[String]) -> Result<RequestLine, String> {
    let mut words = text.split_whitespace();
    let (Some(method), Some(url), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!(
            "--request {text:?}: expected 'METHOD URL', e.g. 'GET http://api.example.com:18000/v1/orders'"
        ));
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("--request: {method:?} is not an HTTP method"))?;
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--request: {url:?} is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(format!(
                "--request: {url:?} must start with http:// or https://"
            ))
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("--request: {url:?} has no host"))?
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let mut map = HeaderMap::new();
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("--header {h:?}: {:?} is not a header name", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("--header {h:?}: the value is not a valid header value"))?;
        map.append(name, value);
    }
    Ok(RequestLine {
        method,
        tls,
        host,
        port,
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: map,
    })
}

/// `explain --request`: the listener, route and rule a request would get, and everything the
/// rule does with it. Uses the proxy's own path normalisation and route index. Exit 0 when a
/// rule takes the request, 1 when the proxy would answer it itself (400, 404), 2 on errors.
fn explain_request(
    source: &std::path::Path,
    text: &str,
    headers: &[String],
) -> anyhow::Result<i32> {
    let req = match parse_request(text, headers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let docs = match read_dir(source) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let snapshot = match compile_documents(&docs, None) {
        Ok(s) => s,
        Err(e) => {
            eprint!("the policy is invalid, nothing would be applied:\n{e}");
            return Ok(2);
        }
    };
    let table = &snapshot.l7;
    let policy = &table.policy;
    println!("request:   {text}");
    let decision = decide(
        table,
        &RequestParts {
            port: req.port,
            host: &req.host,
            path: &req.path,
            method: &req.method,
            headers: &req.headers,
            query: req.query.as_deref(),
        },
    );
    let path = match &decision {
        Decision::BadPath(e) => {
            println!("verdict:   400 Bad Request (reason bad_path)");
            println!(
                "why:       the path {:?} is refused before routing: {}",
                req.path,
                e.as_str()
            );
            println!("revision:  {}", snapshot.revision.id);
            return Ok(1);
        }
        d => d.path().unwrap_or_default().to_owned(),
    };
    if path != req.path {
        println!(
            "path:      {path} (normalised from {}; routes and auth see this)",
            req.path
        );
    }
    let listener = match &decision {
        Decision::NoListener { .. } => {
            println!(
                "verdict:   no listener: nothing listens on port {}",
                req.port
            );
            let ports: Vec<String> = table.ports.keys().map(u16::to_string).collect();
            println!(
                "why:       the Gateways listen on {}",
                if ports.is_empty() {
                    "no port".to_owned()
                } else {
                    ports.join(", ")
                }
            );
            println!("revision:  {}", snapshot.revision.id);
            return Ok(1);
        }
        Decision::NoListenerForHost { .. } => {
            println!("verdict:   404 Not Found (reason no_route)");
            println!(
                "why:       no listener on port {} takes host {}",
                req.port, req.host
            );
            println!("revision:  {}", snapshot.revision.id);
            return Ok(1);
        }
        Decision::NoRoute { listener, .. } | Decision::Routed { listener, .. } => {
            &policy.listeners[*listener]
        }
        Decision::BadPath(_) => unreachable!("answered above"),
    };
    println!(
        "listener:  Gateway {} listener {:?} (port {}, {}{})",
        listener.gateway,
        listener.name,
        listener.port,
        if listener.tls.is_some() {
            "HTTPS"
        } else {
            "HTTP"
        },
        match listener.hostname.to_yaml().as_str() {
            "*" => String::new(),
            h => format!(", hostname {h}"),
        }
    );
    if req.tls != listener.tls.is_some() {
        println!(
            "note:      the URL says {} but the listener speaks {}",
            if req.tls { "https" } else { "http" },
            if listener.tls.is_some() {
                "HTTPS"
            } else {
                "plain HTTP"
            }
        );
    }
    let Decision::Routed { candidate, .. } = decision else {
        println!("verdict:   404 Not Found (reason no_route)");
        println!("why:       no HTTPRoute or GRPCRoute rule attached to this listener matches the host, path, method, headers and query");
        println!("revision:  {}", snapshot.revision.id);
        return Ok(1);
    };
    let rule = &candidate.rule;
    // A GRPCRoute's label is `grpc:namespace/name`.
    let (kind, label) = match rule.route.strip_prefix("grpc:") {
        Some(label) if rule.grpc => ("GRPCRoute", label),
        _ => ("HTTPRoute", &*rule.route),
    };
    println!(
        "route:     {kind} {label} rule {} match {} ({})",
        rule.index,
        candidate.match_index,
        describe_match(&candidate.matched)
    );
    if let Some(a) = rule.auth.and_then(|i| policy.auth.get(i)) {
        // Each method's own description: the words the proxy's auth module has for it.
        let how = tollgate_proxy::auth::describe(a);
        println!(
            "auth:      AuthPolicy {}: needs {}; without valid credentials: 401 with WWW-Authenticate",
            a.policy,
            how.join(" or ")
        );
        if let Some(allowed) = &a.allowed_consumers {
            let names: Vec<&str> = allowed.iter().map(|c| &**c).collect();
            println!(
                "           only consumers {} are allowed; others: 403",
                names.join(", ")
            );
        }
        if let Some(ban) = policy.bans.get(&(BanKind::Auth, a.policy.clone())) {
            println!(
                "           banOnAbuse: {} failures within {:?} from one client (IPv4 address, IPv6 /{}): its packets are dropped in XDP for {:?}",
                ban.threshold, ban.within, ban.ipv6_prefix, ban.block_for
            );
        }
    } else {
        println!("auth:      none (no AuthPolicy targets this route)");
    }
    let mut shown_bans: Vec<std::sync::Arc<str>> = Vec::new();
    for &i in &rule.rate_limits.limits {
        let l = &policy.rate_limits[i];
        let key = match &l.key {
            LimitKey::ClientIp(p) => {
                format!("client IP (per /{} IPv4, /{} IPv6 network)", p.v4, p.v6)
            }
            LimitKey::Header(h) => format!("header {h}"),
            LimitKey::Consumer => "consumer".to_owned(),
        };
        println!(
            "limit:     RateLimitPolicy {} limit {:?}: {} requests per {}s, burst {}, by {key}{}",
            l.policy,
            l.name,
            l.requests,
            l.per.as_secs(),
            l.burst,
            if l.shadow {
                " (shadow: counted, never refused)"
            } else {
                "; over it: 429 with Retry-After"
            }
        );
        let first_of_policy = !shown_bans.contains(&l.policy);
        shown_bans.push(l.policy.clone());
        if let Some(ban) = policy
            .bans
            .get(&(BanKind::Ratelimit, l.policy.clone()))
            .filter(|_| first_of_policy)
        {
            println!(
                "           banOnAbuse: {} rejections within {:?} from one client (IPv4 address, IPv6 /{}): its packets are dropped in XDP for {:?}",
                ban.threshold, ban.within, ban.ipv6_prefix, ban.block_for
            );
        }
    }
    if let Some(r) = &rule.redirect {
        println!(
            "verdict:   {} redirect (RequestRedirect filter)",
            r.status.as_u16()
        );
    } else {
        let total = rule.total_weight();
        let shares: Vec<String> = rule
            .backends
            .iter()
            .map(|b| {
                let def = &policy.backends[b.backend];
                let pct = if total == 0 {
                    0.0
                } else {
                    f64::from(b.weight) * 100.0 / total as f64
                };
                format!(
                    "Backend {} ({:.0}%: {})",
                    def.label,
                    pct,
                    def.endpoints.join(", ")
                )
            })
            .collect();
        if let Some(f) = &rule.failure {
            println!("verdict:   500: {}", f.message);
        } else if total == 0 {
            println!("verdict:   500: every backendRef of the rule has weight 0");
        } else if rule.unresolved_weight > 0 {
            let pct = f64::from(rule.unresolved_weight) * 100.0 / total as f64;
            let mut shares = shares;
            shares.push(format!(
                "500 for {pct:.0}% (backendRefs that did not resolve)"
            ));
            println!("verdict:   {}", shares.join("; "));
        } else {
            println!("verdict:   forwarded to {}", shares.join("; "));
        }
    }
    if let Some(rw) = &rule.rewrite {
        let new_path = rw
            .path
            .as_ref()
            .map(|m| m.apply(&path, candidate.prefix()))
            .unwrap_or_else(|| path.clone());
        println!(
            "rewrite:   path {new_path}{}",
            rw.hostname
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .map(|h| format!(", Host {h}"))
                .unwrap_or_default()
        );
    }
    for (what, m) in [
        ("request headers", &rule.request_headers),
        ("response headers", &rule.response_headers),
    ] {
        if let Some(m) = m {
            let mut parts = Vec::new();
            parts.extend(
                m.set
                    .iter()
                    .map(|(n, v)| format!("set {n}: {}", v.to_str().unwrap_or("?"))),
            );
            parts.extend(
                m.add
                    .iter()
                    .map(|(n, v)| format!("add {n}: {}", v.to_str().unwrap_or("?"))),
            );
            parts.extend(m.remove.iter().map(|n| format!("remove {n}")));
            println!("filter:    {what}: {}", parts.join(", "));
        }
    }
    let t = &rule.timeouts;
    let show = |d: Option<std::time::Duration>| {
        d.map(|d| format!("{d:?}")).unwrap_or_else(|| "none".into())
    };
    println!(
        "timeouts:  request {}, backend request {}",
        show(t.request),
        show(t.backend_request)
    );
    let r = &rule.retry;
    if r.after_send {
        let codes = if r.codes.is_empty() {
            String::new()
        } else {
            format!(" and on status {:?}", r.codes)
        };
        println!(
            "retries:   up to {} after connection failures, and after per-try timeouts and resets for idempotent requests{codes}, backoff {:?}",
            r.attempts, r.backoff
        );
    } else {
        println!(
            "retries:   up to {} after connection failures (another endpoint)",
            r.attempts
        );
    }
    println!("revision:  {}", snapshot.revision.id);
    Ok(0)
}

fn describe_match(m: &MatchDef) -> String {
    let mut parts = vec![match &m.path {
        PathMatch::Exact(p) => format!("path Exact {p}"),
        PathMatch::Prefix(p) => format!("path PathPrefix {p}"),
        PathMatch::Regex(r) => format!("path RegularExpression {}", r.as_str()),
    }];
    if let Some(method) = &m.method {
        parts.push(format!("method {method}"));
    }
    if !m.headers.is_empty() {
        parts.push(format!("{} header condition(s)", m.headers.len()));
    }
    if !m.query.is_empty() {
        parts.push(format!("{} query condition(s)", m.query.len()));
    }
    parts.join(", ")
}
