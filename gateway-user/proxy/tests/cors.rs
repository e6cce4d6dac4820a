//! The `CORS` filter of an HTTPRoute rule, in process, on the cases of the Gateway API's
//! HTTPRouteCORS conformance test: preflights answered by the proxy (allowed origins get the
//! CORS headers, others a 403 without them), simple requests forwarded with
//! `Access-Control-Allow-Origin` for allowed origins only, wildcards, credentials, and CORS
//! headers on the errors of a route with authentication.
mod harness;

use harness::yaml::{backend, documents, gateway, policy, route, to};
use harness::{Backend, Gateway, Options, Secrets};

fn rule(path: &str, cors: &str) -> String {
    format!(
        "    - matches: [{{ path: {{ value: {path} }} }}]
      filters:
        - type: CORS
          cors: {cors}
      backendRefs: [{}]
",
        to("app")
    )
}

#[tokio::test]
async fn preflights_are_answered_and_allowed_origins_get_the_cors_headers() {
    let app = Backend::start("app").await;
    let rules = [
        rule(
            "/cors-1",
            "{ allowOrigins: ['https://www.foo.com', 'http://www.foo.com', 'https://*.bar.com'], allowMethods: [GET, OPTIONS], allowHeaders: [x-header-1, x-header-2], exposeHeaders: [x-header-3, x-header-4], allowCredentials: true, maxAge: 3600 }",
        ),
        rule(
            "/cors-2",
            "{ allowOrigins: ['https://www.foo.com'], allowMethods: ['*'] }",
        ),
        rule("/cors-wildcard-origin", "{ allowOrigins: ['*'], allowMethods: [PUT] }"),
        rule(
            "/cors-wildcard-methods-headers",
            "{ allowOrigins: ['*'], allowMethods: ['*'], allowHeaders: ['*'], exposeHeaders: ['*'], allowCredentials: true }",
        ),
        "    - matches: [{ path: { value: /plain } }]\n      backendRefs: [".to_owned()
            + &to("app")
            + "]\n",
    ]
    .concat();
    let gw = Gateway::start(|p| {
        documents(&[
            &gateway(&[("http", p, None)]),
            &backend("app", &[app.port()], ""),
            &route("app", &format!("  rules:\n{rules}")),
        ])
    })
    .await;

    let preflight = |path: &str, origin: &str, method: &str, headers: Option<&str>| {
        let mut r = gw
            .request("OPTIONS", path)
            .header("origin", origin)
            .header("access-control-request-method", method);
        if let Some(h) = headers {
            r = r.header("access-control-request-headers", h);
        }
        r.send()
    };
    let before = app.count();
    // An exact origin, and origins matching `*.bar.com` (any number of labels before it).
    for origin in [
        "https://www.foo.com",
        "https://www.bar.com",
        "https://xpto.www.bar.com",
    ] {
        let r = preflight("/cors-1", origin, "GET", Some("x-header-1, x-header-2")).await;
        assert_eq!(r.status, 200, "{origin}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("GET, OPTIONS")
        );
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("x-header-1, x-header-2")
        );
        assert_eq!(
            r.header("access-control-expose-headers"),
            Some("x-header-3, x-header-4")
        );
        assert_eq!(r.header("access-control-max-age"), Some("3600"));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(r.header("vary"), Some("Origin"));
    }
    // Origins that do not match: another host, `*.bar.com` itself, another scheme or port.
    for origin in [
        "https://foobar.com",
        "https://bar.com",
        "http://www.bar.com",
        "https://www.foo.com:8443",
        "null",
    ] {
        let r = preflight("/cors-1", origin, "GET", None).await;
        assert_eq!(r.status, 403, "{origin}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), None, "{origin}");
    }
    assert_eq!(app.count(), before, "preflights never reach the backend");

    // A wildcard method without credentials: `*`, and no Allow-Credentials.
    let r = preflight("/cors-2", "https://www.foo.com", "POST", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-methods"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://www.foo.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(r.header("access-control-max-age"), Some("5"), "the default");
    // Every origin, with or without a port, is echoed.
    for origin in ["https://foobar.com", "https://foobar.com:12345"] {
        let r = preflight("/cors-wildcard-origin", origin, "PUT", None).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
        let r = gw
            .request("PUT", "/cors-wildcard-origin")
            .header("origin", origin)
            .send()
            .await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    }
    // Wildcards with credentials: what the preflight asked for is allowed, by name.
    let r = preflight(
        "/cors-wildcard-methods-headers",
        "https://other.foo.com",
        "PUT",
        Some("x-header-1, x-header-2"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://other.foo.com")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("x-header-1, x-header-2")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    // ... and the response's header names are exposed by name: with credentials, `*` would
    // be read as a header named `*` (HTTPCORSFilter.exposeHeaders).
    let r = gw
        .get("/cors-wildcard-methods-headers")
        .header("origin", "https://other.foo.com")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(
        !exposed.split(',').any(|n| n.trim() == "*"),
        "{exposed:?}: {r:?}"
    );
    // An origin written with its scheme's default port is the same origin.
    for origin in ["https://www.foo.com:443", "http://www.foo.com:80"] {
        let r = preflight("/cors-1", origin, "GET", None).await;
        assert_eq!(r.status, 200, "{origin}: {r:?}");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    }
    let r = preflight("/cors-1", "https://www.foo.com:8443", "GET", None).await;
    assert_eq!(r.status, 403, "another port is another origin: {r:?}");

    // Simple requests are forwarded; an allowed origin gets the headers, another none.
    let r = gw
        .get("/cors-1")
        .header("origin", "https://www.foo.com")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://www.foo.com")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-header-3, x-header-4")
    );
    assert_eq!(app.last().target, "/cors-1");
    let r = gw
        .get("/cors-1")
        .header("origin", "https://foobar.com")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = gw.get("/cors-1").send().await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        None,
        "no Origin, no CORS"
    );
    // A rule without the filter forwards OPTIONS like any request.
    let before = app.count();
    let r = preflight("/plain", "https://www.foo.com", "GET", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(app.count(), before + 1);
}

#[tokio::test]
async fn a_route_with_authentication_answers_preflights_and_its_errors_carry_cors_headers() {
    let app = Backend::start("app").await;
    let secrets = Secrets::new();
    secrets.api_keys("keys", &[("app-1", "k3y-0ne")]);
    let auth = policy(
        "AuthPolicy",
        "app-auth",
        "app",
        "  apiKey: { header: X-Api-Key, credentialRefs: [{ name: keys }] }\n",
    );
    let options = Options {
        secrets: Some(secrets),
        ..Options::default()
    };
    let gw = Gateway::start_with(options, |p| {
        documents(&[
            &gateway(&[("http", p[0], None)]),
            &backend("app", &[app.port()], ""),
            &route(
                "app",
                &format!(
                    "  rules:\n{}",
                    rule(
                        "/",
                        "{ allowOrigins: ['https://app.example.com'], allowHeaders: [x-api-key], allowCredentials: true }"
                    )
                ),
            ),
            &auth,
        ])
    })
    .await;
    // The preflight carries no credentials and is answered all the same.
    let r = gw
        .request("OPTIONS", "/items")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-api-key")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("access-control-allow-headers"), Some("x-api-key"));
    // The 401 is readable by the page.
    let r = gw
        .get("/items")
        .header("origin", "https://app.example.com")
        .send()
        .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    let r = gw
        .get("/items")
        .header("origin", "https://app.example.com")
        .header("x-api-key", "k3y-0ne")
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
}
