//! Revisions applied one after another to a running proxy, in process, as the agent applies
//! them: the new routes take over, ports come and go, rate limit buckets survive a reload that
//! keeps their limit, and a revision that cannot be applied (a missing credential file) changes
//! nothing.
mod harness;

use std::time::{Duration, Instant};

use harness::yaml::{app_and_free, backend, documents, gateway, one_route, policy, route, to};
use harness::{free_port, Backend, Gateway, Request};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_new_revision_takes_over_and_a_refused_one_changes_nothing() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let limit = policy(
        "RateLimitPolicy",
        "per-client",
        "app",
        "  limits: [{ key: clientIP, requests: 2, per: 1h }]\n",
    );
    let mut gw = Gateway::start(|p| one_route(p, a.port(), &[&limit])).await;
    let port = gw.port();
    assert_eq!(gw.proxy().revision(), "r1");
    let r = gw.get("/").send().await;
    assert_eq!((r.status, r.backend()), (200, Some("a")), "{r:?}");

    // Backend b instead of a, the same limit, and a second port.
    let next = |extra: u16| {
        documents(&[
            &gateway(&[("http", port, None), ("more", extra, Some("more.test"))]),
            &backend("app", &[b.port()], ""),
            &route(
                "app",
                &format!("  rules:\n    - backendRefs: [{}]\n", to("app")),
            ),
            &limit,
        ])
    };
    // Another process may take the free port before the proxy binds it: then pick again.
    let extra = (0..20)
        .map(|_| free_port())
        .find(|&p| match gw.apply(&next(p)) {
            Ok(()) => true,
            Err(e) if e.contains("cannot listen") => false,
            Err(e) => panic!("{e}"),
        })
        .expect("a free port for the second listener");
    assert_eq!(gw.proxy().revision(), "r2");
    assert_eq!(gw.proxy().ports(), {
        let mut p = vec![port, extra];
        p.sort();
        p
    });
    let r = gw.get("/").send().await;
    assert_eq!((r.status, r.backend()), (200, Some("b")), "{r:?}");
    // The bucket kept its count across the reload: 2 an hour, both used.
    let r = gw.get("/").send().await;
    assert_eq!(r.status, 429, "{r:?}");
    let r = Request::new(extra, "GET", "/")
        .host("more.test")
        .send()
        .await;
    assert_eq!(r.status, 429, "{r:?}");

    // A revision whose AuthPolicy names a file that is not there: refused, naming the policy
    // and the file; the revision in force keeps serving, on the same ports.
    let auth = policy(
        "AuthPolicy",
        "app-auth",
        "app",
        "  basicAuth: { credentialRefs: [{ name: nobody }] }\n",
    );
    let broken = app_and_free(port, b.port(), &[&auth]);
    let e = gw
        .apply(&broken)
        .expect_err("a revision with a missing file");
    assert!(
        e.contains("AuthPolicy default/app-auth") && e.contains("default/nobody/htpasswd"),
        "{e}"
    );
    assert_eq!(gw.proxy().revision(), "r2");
    assert_eq!(gw.proxy().ports().len(), 2);
    let r = Request::new(extra, "GET", "/")
        .host("more.test")
        .send()
        .await;
    assert_eq!((r.status, r.backend()), (429, None), "{r:?}");

    // Without the second port and the limit: the port closes, the bucket goes.
    gw.apply(&one_route(port, b.port(), &[]))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gw.proxy().ports(), [port]);
    let r = gw.get("/").send().await;
    assert_eq!((r.status, r.backend()), (200, Some("b")), "{r:?}");
    // The accept loop sees its stop on its next turn: give it a few.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(("127.0.0.1", extra)).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => assert!(
                Instant::now() < deadline,
                "port {extra} still open: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.count(), 1);
}
