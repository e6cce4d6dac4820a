//! Property tests: for random listeners, routes and requests, the index
//! ([`super::table::RouteTable`]) picks exactly the route, rule and match the reference
//! semantics ([`super::reference::decide`]) pick; and path normalisation is idempotent and
//! never lets a request climb out of a prefix.
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method};
use proptest::prelude::*;
use regex::Regex;

use super::reference::decide;
use super::table::*;
use tollgate_model::http_path::normalize;

const PORT: u16 = 8080;
const HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "x.a.example.com",
    "example.com",
    "other.org",
];
const SEGMENTS: &[&str] = &["a", "b", "c"];
const REGEXES: &[&str] = &["/a/.*", "/[ab]/b", "/c", "/.*/c/?", "/a"];

fn host_pattern() -> impl Strategy<Value = HostPattern> {
    prop_oneof![
        (0..HOSTS.len()).prop_map(|i| HostPattern::Exact(HOSTS[i].to_owned())),
        prop::sample::select(vec![".example.com", ".a.example.com", ".org"])
            .prop_map(|s| HostPattern::Wildcard(s.to_owned())),
        Just(HostPattern::Any),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(SEGMENTS.to_vec()), 0..4),
        any::<bool>(),
    )
        .prop_map(|(segs, trailing)| {
            let mut p = String::new();
            for s in &segs {
                p.push('/');
                p.push_str(s);
            }
            if p.is_empty() || trailing {
                p.push('/');
            }
            p
        })
}

fn path_match() -> impl Strategy<Value = PathMatch> {
    prop_oneof![
        path().prop_map(PathMatch::Exact),
        path().prop_map(|p| {
            let t = p.trim_end_matches('/');
            PathMatch::Prefix(if t.is_empty() { "/".into() } else { t.into() })
        }),
        prop::sample::select(REGEXES.to_vec())
            .prop_map(|r| PathMatch::Regex(Regex::new(&format!("^(?:{r})$")).unwrap())),
    ]
}

fn value_match() -> impl Strategy<Value = ValueMatch> {
    prop_oneof![
        prop::sample::select(vec!["1", "2"]).prop_map(|v| ValueMatch::Exact(v.into())),
        Just(ValueMatch::Regex(Regex::new("^(?:[12])$").unwrap())),
    ]
}

fn match_def() -> impl Strategy<Value = MatchDef> {
    (
        path_match(),
        prop::option::of(prop::sample::select(vec![Method::GET, Method::POST])),
        prop::collection::btree_map(
            prop::sample::select(vec!["x-a", "x-b"]),
            value_match(),
            0..3,
        ),
        prop::collection::btree_map(prop::sample::select(vec!["q", "r"]), value_match(), 0..2),
        // GRPCRoute precedence keys, mixed in so that the index and the reference must agree
        // on them too.
        prop::sample::select(vec![(0, 0), (0, 0), (3, 0), (3, 4), (0, 4)]),
    )
        .prop_map(|(path, method, headers, query, grpc_chars)| MatchDef {
            path,
            method,
            headers: headers
                .into_iter()
                .map(|(n, value)| HeaderMatch {
                    name: HeaderName::from_static(n),
                    value,
                })
                .collect(),
            query: query
                .into_iter()
                .map(|(n, value)| QueryMatch {
                    name: n.to_owned(),
                    value,
                })
                .collect(),
            grpc_chars,
        })
}

/// A route: the listeners it names (indexes, taken modulo the listener count), its hostnames,
/// and its rules (each a list of matches).
type RawRoute = (Vec<usize>, Vec<HostPattern>, Vec<Vec<MatchDef>>);

fn raw_route() -> impl Strategy<Value = RawRoute> {
    (
        prop::collection::vec(0..3usize, 1..3),
        prop::collection::vec(
            host_pattern().prop_filter("a route names hosts", |h| *h != HostPattern::Any),
            0..3,
        ),
        prop::collection::vec(prop::collection::vec(match_def(), 1..4), 1..4),
    )
}

fn policy() -> impl Strategy<Value = L7Policy> {
    (
        prop::collection::vec(host_pattern(), 1..4),
        prop::collection::vec(raw_route(), 1..7),
    )
        .prop_map(|(listener_hosts, raw_routes)| {
            let mut listeners: Vec<ListenerDef> = Vec::new();
            for h in listener_hosts {
                if !listeners.iter().any(|l| l.hostname == h) {
                    listeners.push(ListenerDef {
                        gateway: "default/edge".into(),
                        name: format!("l{}", listeners.len()),
                        port: PORT,
                        hostname: h,
                        tls: None,
                    });
                }
            }
            let mut routes = Vec::new();
            for (i, (parents, hostnames, rules)) in raw_routes.into_iter().enumerate() {
                let label: Arc<str> = format!("default/r{i}").into();
                let mut attachments: Vec<Attachment> = Vec::new();
                for p in parents {
                    let li = p % listeners.len();
                    let l = &listeners[li];
                    let effective: Vec<HostPattern> = if hostnames.is_empty() {
                        vec![l.hostname.clone()]
                    } else {
                        hostnames
                            .iter()
                            .filter_map(|h| l.hostname.intersect(h))
                            .collect()
                    };
                    if effective.is_empty() || attachments.iter().any(|a| a.listener == li) {
                        continue;
                    }
                    let mut dedup = Vec::new();
                    for h in effective {
                        if !dedup.contains(&h) {
                            dedup.push(h);
                        }
                    }
                    attachments.push(Attachment {
                        listener: li,
                        hostnames: dedup,
                    });
                }
                let rules = rules
                    .into_iter()
                    .enumerate()
                    .map(|(ri, matches)| RuleDef {
                        rule: Arc::new(Rule {
                            route: label.clone(),
                            index: ri,
                            request_headers: None,
                            response_headers: None,
                            rewrite: None,
                            redirect: None,
                            cors: None,
                            mirrors: Vec::new(),
                            backends: vec![],
                            timeouts: Timeouts {
                                request: None,
                                backend_request: None,
                            },
                            retry: Retry {
                                codes: vec![],
                                attempts: 0,
                                backoff: Duration::ZERO,
                                after_send: false,
                            },
                            rate_limits: Default::default(),
                            auth: None,
                            max_request_body: None,
                            unresolved_weight: 0,
                            failure: None,
                            grpc: false,
                        }),
                        matches: matches.into_iter().map(Arc::new).collect(),
                    })
                    .collect();
                routes.push(RouteDef {
                    label,
                    order: i as u32,
                    attachments,
                    rules,
                });
            }
            L7Policy {
                listeners,
                routes,
                backends: vec![],
                rate_limits: vec![],
                auth: vec![],
                bans: Default::default(),
            }
        })
}

#[derive(Debug, Clone)]
struct Request {
    host: String,
    path: String,
    method: Method,
    headers: Vec<(&'static str, &'static str)>,
    query: Option<String>,
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop::sample::select(HOSTS.to_vec()),
        path(),
        prop::sample::select(vec![Method::GET, Method::POST]),
        prop::collection::vec(
            (
                prop::sample::select(vec!["x-a", "x-b"]),
                prop::sample::select(vec!["1", "2", "3"]),
            ),
            0..3,
        ),
        prop::option::of(prop::sample::select(vec!["q=1", "q=2&r=1", "r=2", "q=3"])),
    )
        .prop_map(|(host, path, method, headers, query)| Request {
            host: host.to_owned(),
            path,
            method,
            headers,
            query: query.map(str::to_owned),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_index_routes_every_request_as_the_reference_does(
        policy in policy(),
        requests in prop::collection::vec(request(), 1..16),
    ) {
        let table = RouteTable::build(policy.clone()).expect("regexes build");
        for r in &requests {
            let mut headers = HeaderMap::new();
            for (k, v) in &r.headers {
                headers.append(*k, v.parse().unwrap());
            }
            let view = RequestView {
                host: &r.host,
                path: &r.path,
                method: &r.method,
                headers: &headers,
                query: r.query.as_deref(),
            };
            let got = table
                .ports
                .get(&PORT)
                .and_then(|p| p.route(&view))
                .map(|c| (c.rule.route.to_string(), c.rule.index, c.match_index));
            let want = decide(&policy, PORT, &view).map(|d| (d.route, d.rule, d.matched));
            prop_assert_eq!(got, want, "request {:?}", r);
        }
    }

    #[test]
    fn normalising_is_idempotent_and_stays_under_the_root(
        parts in prop::collection::vec(
            prop::sample::select(vec!["a", "b", ".", "..", "", "%2e", "%2E%2e", "%61", "c%20d", "%7E"]),
            0..8,
        ),
        trailing in any::<bool>(),
    ) {
        let mut raw = String::new();
        for p in &parts {
            raw.push('/');
            raw.push_str(p);
        }
        if raw.is_empty() || trailing {
            raw.push('/');
        }
        if let Ok(once) = normalize(&raw) {
            prop_assert_eq!(normalize(&once), Ok(once.clone()));
            prop_assert!(once.starts_with('/'));
            prop_assert!(!once.contains("//"), "{}", once);
            for seg in once.split('/') {
                prop_assert!(seg != "." && seg != "..", "{}", once);
            }
        }
    }

    #[test]
    fn a_dot_dot_never_escapes_a_prefix_it_was_not_inside(
        inside in prop::collection::vec(prop::sample::select(vec!["x", "y"]), 0..3),
        climbs in 1usize..4,
        rest in prop::collection::vec(prop::sample::select(vec!["admin", "z"]), 0..3),
    ) {
        // /public/<inside...>/<..>*climbs/<rest...>: normalised, it is under /public exactly
        // when the climbs do not exceed the segments inside it.
        let mut raw = String::from("/public");
        for s in &inside { raw.push('/'); raw.push_str(s); }
        for _ in 0..climbs { raw.push_str("/%2e%2e"); }
        for s in &rest { raw.push('/'); raw.push_str(s); }
        match normalize(&raw) {
            Ok(p) => {
                let under = prefix_matches("/public", &p);
                prop_assert_eq!(under, climbs <= inside.len(), "{} -> {}", raw, p);
            }
            Err(e) => prop_assert_eq!(e, tollgate_model::http_path::PathError::EscapesRoot),
        }
    }
}
