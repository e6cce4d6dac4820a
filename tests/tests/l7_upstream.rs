//! Backends as the L7 proxy sees them: weighted splits, timeouts (504), dead endpoints (503;
//! ejected while another endpoint is healthy), retries on chosen status codes, and the metrics
//! that count all of it.
use std::time::{Duration, Instant};

use tollgate_tests::l7::{
    backend_object, curl, documents, gateway, route_object, start_agent, to, Backend,
};
use tollgate_tests::{metric_value, require_root, Lab};

const PROXY: u16 = 18081;
const ADMIN: u16 = 19590;

fn url(path: &str) -> String {
    format!("http://127.0.0.1:{PROXY}{path}")
}

fn metrics() -> String {
    tollgate_tests::admin::metrics(ADMIN)
}

#[test]
fn a_weighted_split_of_1000_requests_follows_the_weights() {
    require_root!();
    let lab = Lab::new("l7split", &[]);
    let _stable = Backend::start("stable", 19591);
    let _canary = Backend::start("canary", 19592);
    let policy = documents(&[
        &gateway(&[("http", PROXY, None)]),
        &backend_object("stable", &[19591], ""),
        &backend_object("canary", &[19592], ""),
        &route_object(
            "split",
            "  rules:
    - backendRefs:
        - { group: tollgate.dev, kind: Backend, name: stable, weight: 90 }
        - { group: tollgate.dev, kind: Backend, name: canary, weight: 10 }
",
        ),
    ]);
    lab.write_policy("l7.yaml", &policy);
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &["--access-log", "off"]);

    // 1000 requests on one keep-alive connection (curl's URL globbing).
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "120", &url("/split/[1-1000]")])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let stable = text.matches("\"backend\": \"stable\"").count();
    let canary = text.matches("\"backend\": \"canary\"").count();
    assert_eq!(
        stable + canary,
        1000,
        "not every request was answered: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Binomial(1000, 0.1): mean 100, standard deviation 9.5; 55..=145 is beyond 4.5 of them.
    assert!(
        (55..=145).contains(&canary),
        "canary got {canary} of 1000 (weight 10%)"
    );
    let m = metrics();
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_requests_total{route=\"default/split\",method=\"GET\",code=\"200\"}"
        ),
        Some(1000),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_request_duration_seconds_count{route=\"default/split\"}"
        ),
        Some(1000),
        "{m}"
    );
}

#[test]
fn a_hanging_backend_gets_a_504_when_the_backend_timeout_passes() {
    require_root!();
    let lab = Lab::new("l7hang", &[]);
    let _stuck = Backend::hanging("stuck", 19591);
    let policy = documents(&[
        &gateway(&[("http", PROXY, None)]),
        &backend_object("stuck", &[19591], ""),
        &route_object(
            "slow",
            &format!("  rules:\n    - backendRefs: [{}]\n      timeouts: {{ request: 5s, backendRequest: 700ms }}\n", to("stuck")),
        ),
    ]);
    lab.write_policy("l7.yaml", &policy);
    let agent = start_agent(&lab, ADMIN, &[PROXY], &[]);

    let started = Instant::now();
    let r = curl(&[&url("/slow")]);
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    let m = metrics();
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_upstream_errors_total{route=\"default/slow\",reason=\"timeout\"}"
        ),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_requests_total{route=\"default/slow\",method=\"GET\",code=\"504\"}"
        ),
        Some(1),
        "{m}"
    );
    assert!(
        agent.log().contains("\"reason\":\"timeout\""),
        "{}",
        agent.log()
    );
}

#[test]
fn a_dead_endpoint_gets_a_503_and_is_ejected_only_while_a_live_one_takes_the_requests() {
    require_root!();
    let lab = Lab::new("l7dead", &[]);
    let _live = Backend::start("live", 19591);
    // Nothing listens on 19593 or 19594.
    let passive = "  healthCheck: { passive: { consecutiveFailures: 2, ejectionTime: 60s } }\n";
    let policy = documents(&[
        &gateway(&[("http", PROXY, None)]),
        &backend_object("gone", &[19593], passive),
        &backend_object("mixed", &[19594, 19591], passive),
        &route_object(
            "gone",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /gone }} }}]\n      backendRefs: [{}]\n      retry: {{ attempts: 0 }}\n", to("gone")),
        ),
        &route_object(
            "mixed",
            &format!("  rules:\n    - matches: [{{ path: {{ value: /mixed }} }}]\n      backendRefs: [{}]\n", to("mixed")),
        ),
    ]);
    lab.write_policy("l7.yaml", &policy);
    let agent = start_agent(&lab, ADMIN, &[PROXY], &[]);

    // A backend whose only endpoint is dead: 503 (connection refused) every time, and the
    // endpoint is tried every time: the last healthy endpoint of a Backend is never ejected.
    let codes: Vec<u16> = (0..4).map(|_| curl(&[&url("/gone")]).status).collect();
    assert_eq!(codes, [503, 503, 503, 503]);

    // Two endpoints, one dead: every request succeeds (a refused connection is retried on the
    // other endpoint), and the dead one is ejected after two failures.
    for i in 0..20 {
        let r = curl(&[&url(&format!("/mixed/{i}"))]);
        assert_eq!(
            (r.status, r.backend()),
            (200, "live".into()),
            "request {i}: {r:?}"
        );
    }
    let m = metrics();
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_upstream_errors_total{route=\"default/gone\",reason=\"connect\"}"
        ),
        Some(4),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "tollgate_http_upstream_errors_total{route=\"default/gone\",reason=\"no_healthy_endpoint\"}"),
        None,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_upstream_errors_total{route=\"default/mixed\",reason=\"connect\"}"
        ),
        Some(2),
        "the dead endpoint is tried until it is ejected, then never again: {m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_endpoint_ejections_total{backend=\"default/gone\"}"
        ),
        None,
        "the only endpoint is never ejected: {m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "tollgate_http_endpoint_ejections_total{backend=\"default/mixed\"}"
        ),
        Some(1),
        "{m}"
    );
    assert_eq!(
        agent.log_count("endpoint ejected after consecutive failures"),
        1,
        "{}",
        agent.log()
    );
}

#[test]
fn a_503_is_retried_when_the_rule_asks_for_it_and_not_otherwise() {
    require_root!();
    let lab = Lab::new("l7retry", &[]);
    // /flaky/... answers 503, then 200, then 503, ...
    let _app = Backend::start("app", 19591);
    let policy = documents(&[
        &gateway(&[("http", PROXY, None)]),
        &backend_object("app", &[19591], "  healthCheck: { passive: { consecutiveFailures: 100 } }\n"),
        &route_object(
            "retried",
            &format!(
                "  hostnames: [retried.test]\n  rules:\n    - backendRefs: [{}]\n      retry: {{ codes: [503], attempts: 2, backoff: 10ms }}\n",
                to("app")
            ),
        ),
        &route_object(
            "plain",
            &format!("  hostnames: [plain.test]\n  rules:\n    - backendRefs: [{}]\n", to("app")),
        ),
    ]);
    lab.write_policy("l7.yaml", &policy);
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &[]);

    let r = curl(&["-H", "Host: retried.test", &url("/flaky/a")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.json()["hits"],
        2,
        "the 503 of the first attempt was retried once"
    );
    // A POST with a small body is retried too: the body is sent again.
    let r = curl(&[
        "-H",
        "Host: retried.test",
        "-d",
        "payload",
        &url("/flaky/b"),
    ]);
    assert_eq!(
        (r.status, r.json()["body"].as_str()),
        (200, Some("payload")),
        "{r:?}"
    );

    let r = curl(&["-H", "Host: plain.test", &url("/flaky/c")]);
    assert_eq!(
        r.status, 503,
        "no retry configured: the backend's 503 is passed on: {r:?}"
    );
}
