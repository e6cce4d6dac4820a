//! Backends, retries and timeouts, in process: the real proxy (listener, router, upstream) in
//! this test's process, in front of hyper backends on 127.0.0.1, driven by a hyper client. The
//! scenarios are those of the Gateway API's HTTPRoute conformance tests (`HTTPRouteRetry`,
//! `HTTPRouteRetryBackendTimeout`, `HTTPRouteRetryConnectionError`,
//! `HTTPRouteRetryWithTimeouts`, `HTTPRouteRequestTimeout`), plus passive health and the
//! retry budget.
//!
//! [`upstream_harness`] is this file's own minimal harness (a shared one is being written in
//! `tests/harness`; this one should be folded into it).

mod upstream_harness;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use upstream_harness::{backend_yaml, route_yaml, Backend, Gateway, Reply};

// --- The retry budget -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_never_short_at_low_request_rates() {
    // Every request needs two retries (HTTPRouteRetry: "succeeds after 2 retries"). 40 of
    // them one after the other, then 8 clients at once: far more retries in a second than a
    // per-second budget of 10 allows, at a rate no backend needs protecting from.
    let backend = Backend::start(0, |hit| {
        if hit.attempt <= 2 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let gw = Gateway::start(&[
        &backend_yaml("app", &[backend.port()], ""),
        &route_yaml(
            "app",
            "app",
            "      retry: { codes: [500], attempts: 3, backoff: 1ms }\n",
        ),
    ]);
    for i in 0..40 {
        let r = gw.get(&format!("/seq?id=s{i}")).await;
        assert_eq!(r.status, 200, "sequential request {i}: {r:?}");
    }
    let gw = Arc::new(gw);
    let mut clients = Vec::new();
    for c in 0..8 {
        let gw = gw.clone();
        clients.push(tokio::spawn(async move {
            for i in 0..10 {
                let r = gw.get(&format!("/par?id=c{c}-{i}")).await;
                assert_eq!(r.status, 200, "client {c} request {i}: {r:?}");
            }
        }));
    }
    for c in clients {
        c.await.expect("client task");
    }
    assert_eq!(backend.hits(), 3 * (40 + 80));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_still_caps_retries_when_many_requests_fail_at_once() {
    // 300 requests at once to a backend that answers each with 503 after 100 ms: without a
    // budget, each would be retried (600 attempts). The budget lets a share of them through.
    const REQUESTS: usize = 300;
    let backend = Backend::start(0, |_| Reply::status(503).after(Duration::from_millis(100))).await;
    let gw = Arc::new(Gateway::start(&[
        &backend_yaml("app", &[backend.port()], ""),
        &route_yaml(
            "app",
            "app",
            "      retry: { codes: [503], attempts: 1, backoff: 1ms }\n",
        ),
    ]));
    let mut all = Vec::new();
    for i in 0..REQUESTS {
        let gw = gw.clone();
        all.push(tokio::spawn(
            async move { gw.get(&format!("/x?id={i}")).await },
        ));
    }
    for r in all {
        assert_eq!(r.await.expect("request task").status, 503);
    }
    let retries = backend.hits() - REQUESTS;
    eprintln!("{retries} retries for {REQUESTS} requests that failed at once");
    assert!(
        (10..=REQUESTS / 2).contains(&retries),
        "{retries} retries for {REQUESTS} failed requests at once"
    );
}

// --- Passive health ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_endpoint_of_a_backend_is_never_ejected() {
    let backend = Backend::start(0, |hit| {
        if hit.total <= 5 {
            Reply::status(503)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let gw = Gateway::start(&[
        &backend_yaml(
            "app",
            &[backend.port()],
            "  healthCheck: { passive: { consecutiveFailures: 2, ejectionTime: 60s } }\n",
        ),
        &route_yaml("app", "app", ""),
    ]);
    for i in 0..5 {
        let r = gw.get("/x").await;
        assert_eq!(r.status, 503, "{i}: {r:?}");
        assert!(r.body.contains("from the backend"), "{i}: {r:?}");
    }
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "the backend is back: {r:?}");
    assert_eq!(backend.hits(), 6, "every request reached the only endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_only_endpoint_answers_504_every_time_never_503() {
    let backend = Backend::start(0, |_| Reply::status(200).after(Duration::from_millis(300))).await;
    let gw = Gateway::start(&[
        &backend_yaml("app", &[backend.port()], ""),
        &route_yaml("app", "app", "      timeouts: { backendRequest: 100ms }\n"),
    ]);
    for i in 0..8 {
        let r = gw.get("/x").await;
        assert_eq!(r.status, 504, "{i}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_back_from_a_5s_outage_serves_within_3s() {
    // Default passive health (5 failures, 30 s ejection). `one` has a single endpoint; `two`
    // has two, both down.
    let a = Backend::start(0, |_| Reply::status(200)).await;
    let b1 = Backend::start(0, |_| Reply::status(200)).await;
    let b2 = Backend::start(0, |_| Reply::status(200)).await;
    let (pa, pb1, pb2) = (a.port(), b1.port(), b2.port());
    let gw = Arc::new(Gateway::start(&[
        &backend_yaml("one", &[pa], ""),
        &backend_yaml("two", &[pb1, pb2], ""),
        &route_yaml("one", "one", ""),
        &route_yaml("two", "two", ""),
    ]));
    assert_eq!(gw.get("/one/x").await.status, 200);
    assert_eq!(gw.get("/two/x").await.status, 200);
    a.stop().await;
    b1.stop().await;
    b2.stop().await;
    // Five seconds of traffic to dead endpoints: 20 requests a second each.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(5) {
        for path in ["/one/x", "/two/x"] {
            let r = gw.get(path).await;
            assert!(r.status >= 500, "{path} during the outage: {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _a = Backend::start(pa, |_| Reply::status(200)).await;
    let _b1 = Backend::start(pb1, |_| Reply::status(200)).await;
    let _b2 = Backend::start(pb2, |_| Reply::status(200)).await;
    let back = Instant::now();
    let mut served = [None, None];
    while back.elapsed() < Duration::from_secs(3) && served.iter().any(Option::is_none) {
        for (k, path) in ["/one/x", "/two/x"].iter().enumerate() {
            if served[k].is_none() && gw.get(path).await.status == 200 {
                served[k] = Some(back.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "after the 5 s outage, served again after: one endpoint {:?}, two endpoints {:?}",
        served[0], served[1]
    );
    assert!(
        served.iter().all(Option::is_some),
        "not served within 3 s of the backends' return: {served:?}"
    );
}

// --- Timeouts ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_at_the_request_deadline_is_always_504() {
    // HTTPRouteRetryWithTimeouts: every attempt fails with 500 after 70-149 ms, and 500 is
    // retried up to 5 times, so no request can end before its 400 ms deadline (6 attempts take
    // at least 420 ms): the answer is 504, whenever the last 500 arrives. (Attempts that could
    // be quicker would let a request use up its retries before the deadline, and then its
    // answer is rightly the last 500.) Then without retries, a 500 that comes with the
    // deadline: 504.
    let backend = Backend::start(0, |hit| {
        let delay = if hit.path.starts_with("/slow") {
            300
        } else {
            70 + (hit.total * 37 % 80) as u64
        };
        Reply::status(500).after(Duration::from_millis(delay))
    })
    .await;
    let gw = Arc::new(Gateway::start(&[
        &backend_yaml("app", &[backend.port()], ""),
        &route_yaml(
            "retried",
            "app",
            "      retry: { codes: [500], attempts: 5, backoff: 10ms }\n      timeouts: { request: 400ms, backendRequest: 200ms }\n",
        ),
        &route_yaml("slow", "app", "      timeouts: { request: 300ms }\n"),
    ]));
    for (path, rounds) in [("/retried", 13), ("/slow", 13)] {
        for round in 0..rounds {
            let mut batch = Vec::new();
            for i in 0..8 {
                let gw = gw.clone();
                let url = format!("{path}?id={round}-{i}");
                batch.push(tokio::spawn(async move {
                    let started = Instant::now();
                    (gw.get(&url).await, started.elapsed())
                }));
            }
            for t in batch {
                let (r, took) = t.await.expect("request task");
                assert_eq!(r.status, 504, "{path} round {round}, after {took:?}: {r:?}");
            }
        }
    }
}

// --- Retries ----------------------------------------------------------------------------

/// A backend that answers 200 on the attempt after `fail` (per request `id`), and fails the
/// ones before with `failure`.
async fn flaky(fail: usize, failure: Reply) -> Backend {
    let fail = Arc::new(AtomicUsize::new(fail));
    Backend::start(0, move |hit| {
        let limit = hit
            .query_param("succeedAfter")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| fail.load(Ordering::Relaxed));
        if hit.attempt <= limit {
            failure.clone()
        } else {
            Reply::status(200)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_codes_are_retried_up_to_attempts_then_the_backend_status_is_passed_on() {
    // HTTPRouteRetry.
    for code in [500u16, 502, 503, 504] {
        let backend = Backend::start(0, move |hit| {
            let n: usize = hit.query_param("succeedAfter").unwrap().parse().unwrap();
            if hit.attempt <= n {
                Reply::status(code)
            } else {
                Reply::status(200)
            }
        })
        .await;
        let gw = Gateway::start(&[
            &backend_yaml("app", &[backend.port()], ""),
            &route_yaml(
                "all",
                "app",
                "      retry: { codes: [500, 502, 503, 504], attempts: 2 }\n",
            ),
            &route_yaml(
                "only500",
                "app",
                "      retry: { codes: [500], attempts: 3 }\n",
            ),
        ]);
        assert_eq!(
            gw.get("/all?id=a&succeedAfter=1").await.status,
            200,
            "{code}"
        );
        assert_eq!(
            gw.get("/all?id=b&succeedAfter=2").await.status,
            200,
            "{code}"
        );
        assert_eq!(gw.get("/all?id=c&succeedAfter=3").await.status, code);
        let r = gw.get("/only500?id=d&succeedAfter=1").await;
        assert_eq!(r.status, if code == 500 { 200 } else { code }, "{code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_reset_before_its_response_is_retried_then_answers_503() {
    // HTTPRouteRetryConnectionError: the backend closes the connection without an answer.
    let backend = flaky(2, Reply::close()).await;
    let gw = Gateway::start(&[
        &backend_yaml("app", &[backend.port()], ""),
        &route_yaml("app", "app", "      retry: { attempts: 3 }\n"),
    ]);
    let r = gw.get("/x?id=a&succeedAfter=2").await;
    assert_eq!(r.status, 200, "succeeds after 2 retries: {r:?}");
    let r = gw.get("/x?id=b&succeedAfter=4").await;
    assert_eq!(r.status, 503, "attempts exhausted: {r:?}");
    assert_eq!(backend.hits(), 3 + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_whose_body_was_sent_is_not_retried_after_a_reset() {
    let backend = flaky(1, Reply::close()).await;
    let gw = Gateway::start(&[
        &backend_yaml("app", &[backend.port()], ""),
        &route_yaml("app", "app", "      retry: { attempts: 3 }\n"),
    ]);
    let r = gw.post("/x?id=a", "an order").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        backend.hits(),
        1,
        "a POST that may have been applied is sent once"
    );
    // PUT is idempotent (RFC 9110 9.2.2).
    let r = gw.send("PUT", "/x?id=b", "a document").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(backend.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_retry_stanza_a_reset_is_not_retried() {
    let backend = flaky(1, Reply::close()).await;
    let gw = Gateway::start(&[
        &backend_yaml("app", &[backend.port()], ""),
        &route_yaml("app", "app", ""),
    ]);
    let r = gw.get("/x?id=a").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_then_answers_503() {
    let live = Backend::start(0, |_| Reply::status(200)).await;
    let dead = upstream_harness::closed_port();
    let gw = Gateway::start(&[
        &backend_yaml("gone", &[dead], ""),
        &backend_yaml("mixed", &[dead, live.port()], ""),
        &route_yaml("gone", "gone", "      retry: { attempts: 2 }\n"),
        &route_yaml("mixed", "mixed", ""),
    ]);
    let r = gw.get("/gone/x").await;
    assert_eq!(r.status, 503, "{r:?}");
    for i in 0..10 {
        let r = gw.post(&format!("/mixed/{i}"), "body").await;
        assert_eq!(
            r.status, 200,
            "a refused connection is retried for any method: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_try_timeout_is_retried_for_idempotent_requests_then_answers_504() {
    // HTTPRouteRetryBackendTimeout: attempts that take 300 ms against a 200 ms backendRequest.
    let backend = flaky(0, Reply::status(500).after(Duration::from_millis(300))).await;
    let gw = Gateway::start(&[
        &backend_yaml("app", &[backend.port()], ""),
        &route_yaml(
            "app",
            "app",
            "      retry: { attempts: 2 }\n      timeouts: { backendRequest: 200ms }\n",
        ),
    ]);
    let r = gw.get("/x?id=a&succeedAfter=2").await;
    assert_eq!(r.status, 200, "succeeds after 2 retries: {r:?}");
    let r = gw.get("/x?id=b&succeedAfter=3").await;
    assert_eq!(r.status, 504, "attempts exhausted: {r:?}");
    let before = backend.hits();
    let r = gw.post("/x?id=c&succeedAfter=1", "an order").await;
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(backend.hits(), before + 1, "a POST is not sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_request_timeout_and_succeed_within_it() {
    // HTTPRouteRetryWithTimeouts, request-timeout-200ms: one 500 then success fits in 400 ms.
    let backend = flaky(0, Reply::status(500).after(Duration::from_millis(100))).await;
    let gw = Gateway::start(&[
        &backend_yaml("app", &[backend.port()], ""),
        &route_yaml(
            "app",
            "app",
            "      retry: { codes: [500], attempts: 5 }\n      timeouts: { request: 400ms, backendRequest: 200ms }\n",
        ),
    ]);
    let r = gw.get("/x?id=a&succeedAfter=1").await;
    assert_eq!(r.status, 200, "{r:?}");
    let started = Instant::now();
    let r = gw.get("/x?id=b&succeedAfter=4").await;
    assert_eq!(r.status, 504, "{r:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(600),
        "the timeout error comes at the deadline: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waits_at_least_the_backoff() {
    let backend = flaky(1, Reply::status(503)).await;
    let gw = Gateway::start(&[
        &backend_yaml("app", &[backend.port()], ""),
        &route_yaml(
            "app",
            "app",
            "      retry: { codes: [503], attempts: 1, backoff: 150ms }\n",
        ),
    ]);
    let started = Instant::now();
    let r = gw.get("/x?id=a").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}
