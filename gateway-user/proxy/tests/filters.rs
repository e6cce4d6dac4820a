//! What the proxy changes on the way, in process: the HTTPRoute filters (request and response
//! header modifiers, URL rewrites, redirects), the forwarding headers (`X-Forwarded-*`, believed
//! only from a trusted proxy), hop-by-hop headers, which stop at the proxy both ways, and
//! `Cookie` fields, joined into one (RFC 9113 section 8.2.3).
mod harness;

use std::net::{IpAddr, Ipv4Addr};

use harness::yaml::{backend, documents, gateway, one_route, route, to};
use harness::{Backend, Gateway, Options, Step};

#[tokio::test]
async fn filters_change_headers_and_paths_and_redirects_answer_without_a_backend() {
    let app = Backend::start("app").await;
    let gw = Gateway::start(|p| {
        documents(&[
            &gateway(&[("http", p, None)]),
            &backend("app", &[app.port()], ""),
            &route(
                "app",
                &format!(
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
    - matches: [{{ path: {{ type: Exact, value: /whole }} }}]
      filters:
        - type: URLRewrite
          urlRewrite: {{ path: {{ type: ReplaceFullPath, replaceFullPath: /elsewhere }} }}
      backendRefs: [{app}]
    - matches: [{{ path: {{ type: Exact, value: /moved }} }}]
      filters:
        - type: RequestRedirect
          requestRedirect: {{ scheme: https, hostname: new.example.com, statusCode: 301 }}
    - matches: [{{ path: {{ value: /legacy }} }}]
      filters:
        - type: RequestRedirect
          requestRedirect: {{ path: {{ type: ReplacePrefixMatch, replacePrefixMatch: /v2 }}, statusCode: 308 }}
",
                    app = to("app")
                ),
            ),
        ])
    })
    .await;

    let r = gw
        .get("/old/items?id=7")
        .header("x-set", "from-client")
        .header("x-add", "first")
        .header("x-remove", "secret")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = app.last();
    assert_eq!(seen.target, "/new/items?id=7");
    assert_eq!(seen.header("host").as_deref(), Some("internal.app"));
    assert_eq!(seen.header("x-set").as_deref(), Some("set-by-tollgate"));
    assert_eq!(seen.header("x-add").as_deref(), Some("first,added"));
    assert_eq!(seen.header("x-remove"), None);
    assert_eq!(r.header("x-served-by"), Some("tollgate"));
    assert_eq!(r.header("x-backend"), None);
    // The prefix is replaced as whole segments: /old itself becomes /new.
    gw.get("/old").send().await;
    assert_eq!(app.last().target, "/new");
    let r = gw.get("/whole?q=1").send().await;
    assert_eq!(
        (r.status, app.last().target),
        (200, "/elsewhere?q=1".to_owned())
    );

    // Redirects are answered by the proxy; the backend hears nothing.
    let before = app.count();
    let r = gw.get("/moved?a=b").send().await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("https://new.example.com/moved?a=b")
    );
    let r = gw
        .get("/legacy/page")
        .host("shop.example.com")
        .h2()
        .send()
        .await;
    assert_eq!(r.status, 308, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("http://shop.example.com:{}/v2/page", gw.port()).as_str()),
        "the listener's port is kept when the redirect sets no scheme"
    );
    assert_eq!(app.count(), before);
}

#[tokio::test]
async fn forwarding_headers_are_believed_only_from_trusted_proxies_and_hop_by_hop_ones_stop() {
    let app = Backend::start("app").await;
    // 127.0.0.2 plays a load balancer in front of the proxy; 127.0.0.1 an ordinary client.
    let options = Options {
        trusted_proxies: vec!["127.0.0.2/32".parse().unwrap()],
        ..Options::default()
    };
    let gw = Gateway::start_with(options, |p| one_route(p[0], app.port(), &[])).await;
    let spoofed = |from: [u8; 4], path: &str| {
        gw.get(path)
            .from(IpAddr::V4(Ipv4Addr::from(from)))
            .host("app.example.com:8443")
            .header("x-forwarded-for", "203.0.113.66")
            .header("x-forwarded-proto", "https")
            .header("forwarded", "for=203.0.113.66")
    };

    let r = spoofed([127, 0, 0, 1], "/direct").send().await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = app.last();
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        seen.header("x-forwarded-host").as_deref(),
        Some("app.example.com:8443")
    );
    assert_eq!(seen.header("forwarded"), None);

    let r = spoofed([127, 0, 0, 2], "/via-lb").send().await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = app.last();
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.66, 127.0.0.2")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));

    // Hop-by-hop headers, and those Connection names, are not forwarded, either way.
    app.script([Step::Headers(
        200,
        vec![
            ("connection", "x-hop".into()),
            ("x-hop", "must-not-pass".into()),
            ("keep-alive", "timeout=60".into()),
            ("x-end-to-end", "passes".into()),
        ],
    )]);
    let r = gw
        .get("/hops")
        .header("connection", "x-private")
        .header("x-private", "do-not-forward")
        .header("proxy-authorization", "Basic eDp5")
        .header("te", "trailers")
        .header("x-public", "forward-me")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = app.last();
    for h in ["x-private", "proxy-authorization", "te"] {
        assert_eq!(seen.header(h), None, "{h} was forwarded: {seen:?}");
    }
    assert_eq!(seen.header("x-public").as_deref(), Some("forward-me"));
    assert_eq!(
        (r.header("x-hop"), r.header("keep-alive")),
        (None, None),
        "{r:?}"
    );
    assert_eq!(r.header("x-end-to-end"), Some("passes"));
}

#[tokio::test]
async fn a_backend_refs_own_header_filters_apply_to_its_requests_only_after_the_rules() {
    let app = Backend::start("app").await;
    let other = Backend::start("other").await;
    let gw = Gateway::start(|p| {
        documents(&[
            &gateway(&[("http", p, None)]),
            &backend("app", &[app.port()], ""),
            &backend("other", &[other.port()], ""),
            &route(
                "app",
                "  rules:
    - matches: [{ path: { value: /app } }]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [{ name: x-order, value: rule }, { name: x-rule, value: '1' }] }
      backendRefs:
        - group: tollgate.dev
          kind: Backend
          name: app
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: { set: [{ name: x-order, value: backend }], remove: [x-drop] }
            - type: ResponseHeaderModifier
              responseHeaderModifier: { add: [{ name: x-served-by, value: app-ref }] }
    - matches: [{ path: { value: /other } }]
      backendRefs: [{ group: tollgate.dev, kind: Backend, name: other }]
",
            ),
        ])
    })
    .await;
    let r = gw.get("/app").header("x-drop", "secret").send().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-served-by"), Some("app-ref"));
    let seen = app.last();
    assert_eq!(
        seen.header("x-order").as_deref(),
        Some("backend"),
        "the backendRef's filter comes last"
    );
    assert_eq!(seen.header("x-rule").as_deref(), Some("1"));
    assert_eq!(seen.header("x-drop"), None);
    // Another rule's backend gets none of it.
    let r = gw.get("/other").header("x-drop", "kept").send().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-served-by"), None);
    assert_eq!(other.last().header("x-drop").as_deref(), Some("kept"));
}

/// RFC 9113 section 8.2.3: an HTTP/2 client may split `Cookie` into several fields, which MUST be
/// joined with `; ` before an HTTP/1.1 hop. The backend (HTTP/1.1) gets one `Cookie` line.
#[tokio::test]
async fn cookie_fields_split_by_an_http2_client_reach_the_backend_as_one() {
    let app = Backend::start("app").await;
    let gw = Gateway::start(|p| one_route(p, app.port(), &[])).await;
    let cookies = |seen: &harness::Received| -> Vec<String> {
        seen.headers
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };

    let r = gw
        .get("/h2")
        .h2()
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .send()
        .await;
    assert_eq!((r.status, r.version), (200, http::Version::HTTP_2), "{r:?}");
    assert_eq!(cookies(&app.last()), ["a=1; b=2"]);

    // Three fields, one empty, over HTTP/1.1 too (RFC 6265 section 5.4 forbids sending more
    // than one, but joining them is what a server would read them as).
    let r = gw
        .get("/h1")
        .header("cookie", "a=1")
        .header("cookie", "")
        .header("cookie", "b=2; c=3")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(cookies(&app.last()), ["a=1; b=2; c=3"]);

    // One field, or none, is passed as it came.
    gw.get("/one").h2().header("cookie", "a=1").send().await;
    assert_eq!(cookies(&app.last()), ["a=1"]);
    gw.get("/none").h2().send().await;
    assert!(cookies(&app.last()).is_empty());
}
