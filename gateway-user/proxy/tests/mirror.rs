//! The `RequestMirror` filter, in process: copies of requests reach each mirror backend with
//! the method, target, headers and body the main backend gets; shares (`percent`, `fraction`)
//! are honoured; a mirror that is slow, down or failing never touches the client's response;
//! a mirror whose backend does not resolve is reported and the route still serves.
mod harness;

use std::time::{Duration, Instant};

use harness::yaml::{backend, documents, gateway, route, to};
use harness::{Backend, Gateway, Step};

/// Waits until `b` received `n` requests (copies are sent from their own task).
async fn wait_for(b: &Backend, n: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    while b.count() < n && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        b.count(),
        n,
        "backend {} received {} copies",
        b.name,
        b.count()
    );
}

#[tokio::test]
async fn copies_reach_every_mirror_with_the_request_as_forwarded_and_shares_are_honoured() {
    let app = Backend::start("app").await;
    let shadow = Backend::start("shadow").await;
    let audit = Backend::start("audit").await;
    let never = Backend::start("never").await;
    let half = Backend::start("half").await;
    let mirror = |name: &str, share: &str| {
        format!(
            "        - type: RequestMirror\n          requestMirror: {{ backendRef: {{ group: tollgate.dev, kind: Backend, name: {name} }}{share} }}\n"
        )
    };
    let rules = format!(
        "  rules:
    - matches: [{{ path: {{ value: /orders }} }}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {{ set: [{{ name: x-env, value: prod }}] }}
{}{}{}{}      backendRefs: [{}]
",
        mirror("shadow", ""),
        mirror("audit", ", percent: 100"),
        mirror("never", ", percent: 0"),
        mirror("half", ", fraction: { numerator: 1, denominator: 2 }"),
        to("app")
    );
    let gw = Gateway::start(|p| {
        documents(&[
            &gateway(&[("http", p, None)]),
            &backend("app", &[app.port()], ""),
            &backend("shadow", &[shadow.port()], ""),
            &backend("audit", &[audit.port()], ""),
            &backend("never", &[never.port()], ""),
            &backend("half", &[half.port()], ""),
            &route("app", &rules),
        ])
    })
    .await;

    let r = gw
        .request("POST", "/orders?id=7")
        .header("content-type", "application/json")
        .body(r#"{"item":"book"}"#)
        .send()
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("app"));
    wait_for(&shadow, 1).await;
    wait_for(&audit, 1).await;
    for b in [&shadow, &audit] {
        let copy = b.last();
        let main = app.last();
        assert_eq!(copy.method, "POST");
        assert_eq!(copy.target, "/orders?id=7");
        assert_eq!(&copy.body[..], br#"{"item":"book"}"#);
        assert!(copy.complete);
        assert_eq!(
            copy.header("x-env").as_deref(),
            Some("prod"),
            "filters applied first"
        );
        assert_eq!(
            copy.header("x-forwarded-for"),
            main.header("x-forwarded-for")
        );
        assert_eq!(copy.header("host"), main.header("host"));
    }

    // 200 more requests: every one to shadow and audit, none to never, about half to half.
    for _ in 0..200 {
        assert_eq!(gw.get("/orders").send().await.status, 200);
    }
    wait_for(&shadow, 201).await;
    wait_for(&audit, 201).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(never.count(), 0);
    let got = half.count();
    // Binomial(201, 0.5): 70..=131 holds with a probability far above 1 - 1e-5.
    assert!((70..=131).contains(&got), "half got {got} of 201");
    assert_eq!(
        gw.count("tollgate_http_mirrored_requests_total{route=\"default/app\",result=\"ok\"}"),
        (201 * 2 + got) as u64
    );
}

#[tokio::test]
async fn a_slow_failing_or_missing_mirror_never_touches_the_response() {
    let app = Backend::start("app").await;
    let slow = Backend::start("slow").await;
    let failing = Backend::start("failing").await;
    // Nothing listens on this port: connections to it are refused.
    let down = harness::free_port();
    slow.script([Step::Delay(Duration::from_secs(3))]);
    failing.fail(1, 500);
    let rules = format!(
        "  rules:
    - filters:
        - type: RequestMirror
          requestMirror: {{ backendRef: {{ group: tollgate.dev, kind: Backend, name: slow }} }}
        - type: RequestMirror
          requestMirror: {{ backendRef: {{ group: tollgate.dev, kind: Backend, name: failing }} }}
        - type: RequestMirror
          requestMirror: {{ backendRef: {{ group: tollgate.dev, kind: Backend, name: down }} }}
        - type: RequestMirror
          requestMirror: {{ backendRef: {{ group: tollgate.dev, kind: Backend, name: not-there }} }}
      backendRefs: [{}]
",
        to("app")
    );
    let gw = Gateway::start(|p| {
        documents(&[
            &gateway(&[("http", p, None)]),
            &backend("app", &[app.port()], ""),
            &backend("slow", &[slow.port()], ""),
            &backend("failing", &[failing.port()], ""),
            &backend("down", &[down], ""),
            &route("app", &rules),
        ])
    })
    .await;
    let started = Instant::now();
    let r = gw.get("/").send().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some("app"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the response waited for the slow mirror: {:?}",
        started.elapsed()
    );
    wait_for(&failing, 1).await;
    wait_for(&slow, 1).await;
    let series = |result: &str| {
        format!(
            "tollgate_http_mirrored_requests_total{{route=\"default/app\",result=\"{result}\"}}"
        )
    };
    let until = Instant::now() + Duration::from_secs(8);
    while gw.count(&series("failed")) < 1 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gw.count(&series("failed")), 1, "the refused connection");
    // The 500 of the failing mirror is an answer: counted ok, and nobody else saw it.
    let until = Instant::now() + Duration::from_secs(8);
    while gw.count(&series("ok")) < 2 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw.count(&series("ok")),
        2,
        "the failing mirror's 500 and the slow one's 200"
    );
}
