//! The L7 proxy routes real clients' requests (curl over HTTP/1.1 and h2c) to real backends
//! by host, path, method and header, applies filters, refuses path tricks, and sets the
//! forwarding headers.
use tollgate_tests::l7::{
    access_log, backend_object, curl, documents, gateway, one_route, one_route_with, route_object,
    start_agent, to, Backend,
};
use tollgate_tests::{require_root, Lab};

const PROXY: u16 = 18080;
const ADMIN: u16 = 19580;

fn url(path: &str) -> String {
    format!("http://127.0.0.1:{PROXY}{path}")
}

#[test]
fn requests_are_routed_by_host_path_method_and_header_over_http1_and_h2c() {
    require_root!();
    let lab = Lab::new("l7route", &[]);
    let _web = Backend::start("web", 19581);
    let _api = Backend::start("api", 19582);
    let _writes = Backend::start("writes", 19583);
    let _beta = Backend::start("beta", 19584);
    let policy = documents(&[
        &gateway(&[("http", PROXY, None)]),
        &backend_object("web", &[19581], ""),
        &backend_object("api", &[19582], ""),
        &backend_object("writes", &[19583], ""),
        &backend_object("beta", &[19584], ""),
        &route_object(
            "site",
            &format!("  hostnames: [www.example.com]\n  rules:\n    - backendRefs: [{}]\n", to("web")),
        ),
        &route_object(
            "api",
            &format!(
                "  hostnames: ['*.example.com']
  rules:
    - matches: [{{ path: {{ type: PathPrefix, value: /v1 }} }}]
      backendRefs: [{api}]
    - matches: [{{ path: {{ type: PathPrefix, value: /v1 }}, method: POST }}]
      backendRefs: [{writes}]
    - matches: [{{ path: {{ type: PathPrefix, value: /v1 }}, headers: [{{ name: x-beta, value: 'yes' }}] }}]
      backendRefs: [{beta}]
    - matches: [{{ path: {{ type: Exact, value: /v1/exact }} }}]
      backendRefs: [{web}]
",
                api = to("api"),
                writes = to("writes"),
                beta = to("beta"),
                web = to("web"),
            ),
        ),
    ]);
    lab.write_policy("l7.yaml", &policy);
    let agent = start_agent(&lab, ADMIN, &[PROXY], &[]);

    for h2 in [false, true] {
        let proto: &[&str] = if h2 {
            &["--http2-prior-knowledge"]
        } else {
            &["--http1.1"]
        };
        let get = |host: &str, path: &str, extra: &[&str]| {
            let u = url(path);
            let header = format!("Host: {host}");
            let mut args: Vec<&str> = proto.to_vec();
            args.extend_from_slice(&["-H", &header]);
            args.extend_from_slice(extra);
            args.push(&u);
            curl(&args)
        };
        let r = get("www.example.com", "/anything", &[]);
        assert_eq!((r.status, r.backend()), (200, "web".into()), "{r:?}");
        assert_eq!(r.version, if h2 { "HTTP/2" } else { "HTTP/1.1" });
        // The wildcard route, for another host under example.com.
        let r = get("shop.example.com", "/v1/orders", &[]);
        assert_eq!((r.status, r.backend()), (200, "api".into()), "{r:?}");
        assert_eq!(r.json()["path"], "/v1/orders");
        // Method and header matches beat the plain prefix on the same path.
        let r = get(
            "shop.example.com",
            "/v1/orders",
            &["-X", "POST", "-d", "x=1"],
        );
        assert_eq!(r.backend(), "writes", "{r:?}");
        assert_eq!(r.json()["body"], "x=1");
        let r = get("shop.example.com", "/v1/orders", &["-H", "X-Beta: yes"]);
        assert_eq!(r.backend(), "beta", "{r:?}");
        // Exact beats prefix.
        let r = get("shop.example.com", "/v1/exact", &[]);
        assert_eq!(r.backend(), "web", "{r:?}");
        // /v1x is not under the prefix /v1; an unknown host matches no route: 404.
        let r = get("shop.example.com", "/v1x", &[]);
        assert_eq!(r.status, 404, "{r:?}");
        let r = get("example.org", "/v1/orders", &[]);
        assert_eq!(r.status, 404, "{r:?}");
        // The Host, with its port and in any case, picks the route.
        let r = get("WWW.Example.COM:18080", "/", &[]);
        assert_eq!(r.backend(), "web", "{r:?}");
    }

    let log = access_log(&agent);
    let line = log
        .iter()
        .find(|l| l["path"] == "/v1/orders" && l["method"] == "POST")
        .unwrap_or_else(|| panic!("no access log line for POST /v1/orders:\n{}", agent.log()));
    assert_eq!(line["route"], "default/api");
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream"], "127.0.0.1:19583");
    assert!(line["bytes"].as_u64().unwrap() > 0, "{line}");
    assert!(line["latency_ms"].as_f64().is_some(), "{line}");
    assert!(
        log.iter()
            .any(|l| l["status"] == 404 && l["route"] == "none" && l["reason"] == "no_route"),
        "{log:?}"
    );
}

#[test]
fn filters_change_headers_and_paths_and_redirect() {
    require_root!();
    let lab = Lab::new("l7filter", &[]);
    let _app = Backend::start("app", 19581);
    let policy = one_route_with(PROXY, 19581, &format!(
                "  rules:
    - matches: [{{ path: {{ value: /old }} }}]
      filters:
        - type: URLRewrite
          urlRewrite: {{ hostname: internal.app, path: {{ type: ReplacePrefixMatch, replacePrefixMatch: /new }} }}
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{{ name: x-set, value: set-by-tollgate }}]
            add: [{{ name: x-add, value: added }}]
            remove: [x-remove]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{{ name: x-served-by, value: tollgate }}]
            remove: [x-backend]
      backendRefs: [{app}]
    - matches: [{{ path: {{ type: Exact, value: /moved }} }}]
      filters:
        - type: RequestRedirect
          requestRedirect: {{ scheme: https, hostname: new.example.com, statusCode: 301 }}
    - matches: [{{ path: {{ value: /legacy }} }}]
      filters:
        - type: RequestRedirect
          requestRedirect: {{ path: {{ type: ReplacePrefixMatch, replacePrefixMatch: /v2 }} }}
",
                app = to("app")
            ));
    lab.write_policy("l7.yaml", &policy);
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &[]);

    let r = curl(&[
        "-H",
        "X-Set: from-client",
        "-H",
        "X-Add: first",
        "-H",
        "X-Remove: secret",
        &url("/old/items?id=7"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["path"], "/new/items?id=7");
    assert_eq!(r.seen_header("host").as_deref(), Some("internal.app"));
    assert_eq!(r.seen_header("x-set").as_deref(), Some("set-by-tollgate"));
    assert_eq!(r.seen_header("x-add").as_deref(), Some("first,added"));
    assert_eq!(r.seen_header("x-remove"), None);
    assert_eq!(r.header("x-served-by"), Some("tollgate"));
    assert_eq!(r.header("x-backend"), None);

    let r = curl(&[&url("/moved?a=b")]);
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://new.example.com/moved?a=b")
    );
    let r = curl(&["-H", "Host: shop.example.com", &url("/legacy/page")]);
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("http://shop.example.com:18080/v2/page"),
        "the listener's port is kept when the redirect sets no scheme"
    );
}

#[test]
fn path_tricks_cannot_reach_a_route_they_should_not() {
    require_root!();
    let lab = Lab::new("l7path", &[]);
    let _public = Backend::start("public", 19581);
    let _admin = Backend::start("admin", 19582);
    // /admin is only routed with the right header (a stand-in for authentication, which comes
    // later); /public is open. No other route.
    let policy = documents(&[
        &gateway(&[("http", PROXY, None)]),
        &backend_object("public", &[19581], ""),
        &backend_object("admin", &[19582], ""),
        &route_object(
            "site",
            &format!(
                "  rules:
    - matches: [{{ path: {{ value: /public }} }}]
      backendRefs: [{public}]
    - matches: [{{ path: {{ value: /admin }}, headers: [{{ name: x-admin-key, value: s3cret }}] }}]
      backendRefs: [{admin}]
",
                public = to("public"),
                admin = to("admin")
            ),
        ),
    ]);
    lab.write_policy("l7.yaml", &policy);
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &[]);

    let raw = |path: &str| curl(&["--path-as-is", &url(path)]);
    // The legitimate ways in.
    assert_eq!(raw("/public/a").backend(), "public");
    let r = curl(&["-H", "X-Admin-Key: s3cret", &url("/admin/users")]);
    assert_eq!(r.backend(), "admin", "{r:?}");

    // Dot segments, encoded or not, and doubled slashes are resolved before routing: they land
    // on /admin without the key (404), never on the admin backend through /public's route.
    for trick in [
        "/public/../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/%2E%2e/admin/users",
        "/public/.%2e/admin/users",
        "//admin/users",
        "/public/./../admin/users",
        "/%61dmin/users",
    ] {
        let r = raw(trick);
        assert_eq!(r.status, 404, "{trick}: {r:?}");
    }
    // Encoded separators, backslashes, NUL, and climbing above the root are refused outright.
    for trick in [
        "/public/..%2fadmin/users",
        "/public%2f..%2fadmin",
        "/public/..%5cadmin",
        "/public/%00/x",
        "/../admin/users",
        "/public/../../admin",
        "/public/%zz",
    ] {
        let r = raw(trick);
        assert_eq!(r.status, 400, "{trick}: {r:?}");
    }
    // The public backend receives normalised paths only.
    let r = raw("/public//a/./b/../c");
    assert_eq!(r.json()["path"], "/public/a/c", "{r:?}");
    let r = raw("/public/%7euser/%c3%a9");
    assert_eq!(r.json()["path"], "/public/~user/%C3%A9", "{r:?}");
}

#[test]
fn x_forwarded_for_is_believed_only_from_a_trusted_proxy_and_hop_by_hop_headers_stop_here() {
    require_root!();
    let lab = Lab::new("l7xff", &[]);
    let _app = Backend::start("app", 19581);
    let policy = one_route(PROXY, 19581);
    lab.write_policy("l7.yaml", &policy);
    // 127.0.0.2 plays a load balancer in front of Tollgate; 127.0.0.1 is an ordinary client.
    let agent = start_agent(&lab, ADMIN, &[PROXY], &["--trusted-proxy", "127.0.0.2/32"]);

    let spoof = [
        "-H",
        "X-Forwarded-For: 203.0.113.66",
        "-H",
        "X-Forwarded-Proto: https",
    ];
    let mut args = vec![
        "--interface",
        "127.0.0.1",
        "-H",
        "Host: app.example.com:18080",
    ];
    args.extend_from_slice(&spoof);
    let u = url("/direct");
    args.push(&u);
    let r = curl(&args);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        r.seen_header("x-forwarded-host").as_deref(),
        Some("app.example.com:18080")
    );

    let mut args = vec!["--interface", "127.0.0.2"];
    args.extend_from_slice(&spoof);
    let u = url("/via-lb");
    args.push(&u);
    let r = curl(&args);
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("203.0.113.66, 127.0.0.2"),
        "{r:?}"
    );
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));

    let log = access_log(&agent);
    let client = |path: &str| {
        log.iter()
            .find(|l| l["path"] == path)
            .map(|l| l["client"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("no access log line for {path}: {log:?}"))
    };
    assert_eq!(client("/direct"), "127.0.0.1");
    assert_eq!(client("/via-lb"), "203.0.113.66");

    // Hop-by-hop headers, and the ones Connection names, are not forwarded either way.
    let r = curl(&[
        "-H",
        "Connection: keep-alive, X-Private",
        "-H",
        "X-Private: do-not-forward",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "Proxy-Authorization: Basic eDp5",
        "-H",
        "TE: trailers",
        "-H",
        "X-Public: forward-me",
        &url("/hop"),
    ]);
    assert_eq!(r.status, 200, "{r:?}");
    for h in [
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "te",
        "connection",
    ] {
        assert_eq!(r.seen_header(h), None, "{h} reached the backend: {r:?}");
    }
    assert_eq!(r.seen_header("x-public").as_deref(), Some("forward-me"));
    // The backend's own hop-by-hop headers stop at the proxy too.
    assert_eq!(r.header("x-hop"), None, "{r:?}");
    assert_eq!(r.header("keep-alive"), None, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("app"));
}

#[test]
fn oversized_request_heads_are_refused_and_the_proxy_keeps_serving() {
    require_root!();
    let lab = Lab::new("l7limits", &[]);
    let _app = Backend::start("app", 19581);
    let policy = one_route(PROXY, 19581);
    lab.write_policy("l7.yaml", &policy);
    let agent = start_agent(&lab, ADMIN, &[PROXY], &[]);

    // One header of 70 KiB: more than the 64 KiB head limit.
    let big = format!("X-Big: {}", "a".repeat(70 * 1024));
    let r = curl(&["--http1.1", "-H", &big, &url("/")]);
    assert_eq!(r.status, 431, "{r:?}");
    // 120 headers: more than the 100 allowed.
    let many: Vec<String> = (0..120).map(|i| format!("X-H{i}: v")).collect();
    let mut args: Vec<&str> = vec!["--http1.1"];
    for h in &many {
        args.extend_from_slice(&["-H", h]);
    }
    let u = url("/");
    args.push(&u);
    let r = curl(&args);
    assert_eq!(r.status, 431, "{r:?}");
    // Within the limits, and afterwards: served.
    let ok = format!("X-Big: {}", "a".repeat(16 * 1024));
    let r = curl(&["-H", &ok, &url("/")]);
    assert_eq!((r.status, r.backend()), (200, "app".into()), "{r:?}");
    drop(agent);
}
