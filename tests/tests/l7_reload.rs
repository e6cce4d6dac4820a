//! Hot reload of the L7 proxy: revisions swap under load without failing a request, listeners
//! come and go with the Gateway without disturbing the others, and an invalid revision is
//! refused whole while the routes in force keep serving.
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use tollgate_tests::l7::{
    backend_object, curl, documents, gateway, port_is_closed, route_object, start_agent, to,
    wait_for_port, Backend,
};
use tollgate_tests::{
    http_get, l4_policy, metric_value, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED,
};

const PROXY: u16 = 18083;
const EXTRA: u16 = 18084;
const ADMIN: u16 = 19600;

/// Revision `i`: the main listener always; the extra one on odd revisions; the route alternates
/// between the two backends and stamps its revision on every response.
fn revision(i: usize) -> String {
    let mut listeners = vec![("http", PROXY, None)];
    if i % 2 == 1 {
        listeners.push(("extra", EXTRA, None));
    }
    let backend = if i.is_multiple_of(2) { "one" } else { "two" };
    documents(&[
        &gateway(&listeners),
        &backend_object("one", &[19601], ""),
        &backend_object("two", &[19602], ""),
        &route_object(
            "main",
            &format!(
                "  rules:\n    - backendRefs: [{}]\n      filters:\n        - type: ResponseHeaderModifier\n          responseHeaderModifier: {{ set: [{{ name: x-revision, value: 'r{i}' }}] }}\n",
                to(backend)
            ),
        ),
    ])
}

/// Totals of a load generator's runs.
#[derive(Debug, Default)]
struct Load {
    ok: u64,
    failed: u64,
    problems: Vec<String>,
}

/// `hey` (HTTP/1.1, keep-alive) in rounds of 300 requests on 4 connections until `stop`;
/// `rounds` counts the rounds done (each opens new connections).
fn hey_until(stop: Arc<AtomicBool>, rounds: Arc<AtomicU64>, url: String) -> Load {
    let mut load = Load::default();
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new("hey")
            .args(["-n", "300", "-c", "4", "-t", "10", &url])
            .output()
            .expect("run hey (Debian package hey)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut section = "";
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with("Status code distribution") {
                section = "status";
            } else if t.starts_with("Error distribution") {
                section = "errors";
            } else if t.is_empty() {
                section = "";
            } else if let Some(rest) = t.strip_prefix('[') {
                let (first, after) = rest.split_once(']').unwrap_or(("0", ""));
                let n: u64 = first.parse().unwrap_or(0);
                match section {
                    "status" => {
                        let count: u64 = after
                            .split_whitespace()
                            .next()
                            .and_then(|c| c.parse().ok())
                            .unwrap_or(0);
                        if n == 200 {
                            load.ok += count;
                        } else {
                            load.failed += count;
                            load.problems.push(format!("hey: {count} x status {n}"));
                        }
                    }
                    "errors" => {
                        load.failed += n;
                        load.problems.push(format!("hey: {t}"));
                    }
                    _ => {}
                }
            }
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
    load
}

/// `h2load` (HTTP/2 with prior knowledge) in rounds of 300 requests, 2 connections of 8
/// streams, until `stop`; `rounds` counts the rounds done.
fn h2load_until(stop: Arc<AtomicBool>, rounds: Arc<AtomicU64>, url: String) -> Load {
    let mut load = Load::default();
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new("h2load")
            .args(["-n", "300", "-c", "2", "-m", "8", &url])
            .output()
            .expect("run h2load (Debian package nghttp2-client)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |line: &str, name: &str| -> u64 {
            line.split(',')
                .find(|p| p.trim().ends_with(name))
                .and_then(|p| {
                    p.split_whitespace()
                        .rev()
                        .nth(1)
                        .or_else(|| p.split_whitespace().next())
                })
                .and_then(|n| n.trim_start_matches("requests:").trim().parse().ok())
                .unwrap_or(0)
        };
        let Some(requests) = text.lines().find(|l| l.starts_with("requests:")) else {
            load.failed += 1;
            load.problems
                .push(format!("h2load printed no summary: {text}"));
            continue;
        };
        let codes = text
            .lines()
            .find(|l| l.starts_with("status codes:"))
            .unwrap_or_default();
        let two_xx = codes
            .trim_start_matches("status codes:")
            .split(',')
            .find(|p| p.trim().ends_with("2xx"))
            .and_then(|p| p.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0u64);
        let total = requests
            .trim_start_matches("requests:")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0u64);
        let failed =
            field(requests, "failed") + field(requests, "errored") + field(requests, "timeout");
        load.ok += two_xx;
        let bad = failed + total.saturating_sub(two_xx);
        if bad > 0 {
            load.failed += bad;
            load.problems.push(format!("h2load: {requests} / {codes}"));
        }
        rounds.fetch_add(1, Ordering::Relaxed);
    }
    load
}

#[test]
fn a_hundred_reloads_under_load_fail_no_request() {
    require_root!();
    let lab = Lab::new("l7reload", &[]);
    let _one = Backend::start("one", 19601);
    let _two = Backend::start("two", 19602);
    lab.write_policy("l7.yaml", &revision(0));
    let mut agent = start_agent(&lab, ADMIN, &[PROXY], &["--access-log", "off"]);

    let stop = Arc::new(AtomicBool::new(false));
    let (hey_rounds, h2_rounds) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let url = format!("http://127.0.0.1:{PROXY}/load");
    let hey = {
        let (stop, rounds, url) = (stop.clone(), hey_rounds.clone(), url.clone());
        thread::spawn(move || hey_until(stop, rounds, url))
    };
    let h2 = {
        let (stop, rounds, url) = (stop.clone(), h2_rounds.clone(), url.clone());
        thread::spawn(move || h2load_until(stop, rounds, url))
    };
    // Both generators are running (one round done each) before the first reload.
    while hey_rounds.load(Ordering::Relaxed) == 0 || h2_rounds.load(Ordering::Relaxed) == 0 {
        assert!(
            !hey.is_finished() && !h2.is_finished(),
            "a load generator stopped"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let rounds_before = (
        hey_rounds.load(Ordering::Relaxed),
        h2_rounds.load(Ordering::Relaxed),
    );

    const RELOADS: usize = 100;
    for i in 1..=RELOADS {
        lab.write_policy("l7.yaml", &revision(i));
        agent.sighup();
        agent
            .wait_for_log_count(POLICY_APPLIED, i + 1, APPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("reload {i}: {e}"));
        // The extra listener follows the Gateway: open on odd revisions, closed on even ones.
        if i % 2 == 1 {
            wait_for_port(&mut agent, EXTRA);
        } else {
            let mut tries = 0;
            while !port_is_closed(EXTRA) {
                tries += 1;
                assert!(tries < 100, "reload {i}: port {EXTRA} still open");
                thread::sleep(Duration::from_millis(20));
            }
        }
        // Let some requests run on each revision.
        thread::sleep(Duration::from_millis(40));
    }
    let rounds_during = (
        hey_rounds.load(Ordering::Relaxed) - rounds_before.0,
        h2_rounds.load(Ordering::Relaxed) - rounds_before.1,
    );
    stop.store(true, Ordering::Relaxed);
    let hey = hey.join().expect("the hey thread");
    let h2 = h2.join().expect("the h2load thread");

    // The load spanned the reloads: several whole rounds (each with new connections) of each
    // generator started and ended while revisions were being swapped.
    assert!(
        rounds_during.0 >= 3 && rounds_during.1 >= 3,
        "too little load during the reloads: {rounds_during:?} rounds (hey, h2load)"
    );
    assert_eq!(
        (hey.failed, h2.failed),
        (0, 0),
        "requests failed during reloads: {:?} {:?}",
        hey.problems,
        h2.problems
    );
    // The last revision is the one in force.
    let r = curl(&[&url]);
    assert_eq!(
        r.header("x-revision"),
        Some(format!("r{RELOADS}").as_str()),
        "{r:?}"
    );
    assert_eq!(
        r.backend(),
        if RELOADS.is_multiple_of(2) {
            "one"
        } else {
            "two"
        }
    );
    eprintln!(
        "under {RELOADS} reloads: hey {} ok, h2load {} ok, 0 failed; rounds during the reloads {rounds_during:?}",
        hey.ok, h2.ok
    );
}

#[test]
fn a_broken_route_applies_in_part_and_an_l4_problem_still_refuses_the_whole_revision() {
    require_root!();
    let lab = Lab::new("l7refuse", &[]);
    let _one = Backend::start("one", 19601);
    lab.write_policy("l7.yaml", &revision(0));
    let mut agent = start_agent(&lab, ADMIN, &[PROXY], &[]);
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{PROXY}/")]).backend(),
        "one"
    );

    // A route naming a Backend that does not exist, next to a valid change of the L4 side:
    // the revision is applied, the unresolved rule answers 500 (Gateway API), and the agent
    // says what is not served.
    let l4 = |ports: &str| {
        l4_policy(
            "edge",
            "allow",
            &format!(
                "- name: no-telnet\n  action: deny\n  protocol: TCP\n  ports: [\"{ports}\"]\n"
            ),
        )
    };
    lab.write_policy("edge.yaml", &l4("23"));
    lab.write_policy(
        "l7.yaml",
        &revision(0).replace("name: one }]", "name: nowhere }]"),
    );
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = agent.log();
    assert!(log.contains("revision applied in part"), "{log}");
    assert!(
        log.contains("l7.yaml: HTTPRoute/main: spec.rules[0].backendRefs[0].name: its share of the rule's requests is answered 500: no (valid) Backend default/nowhere"),
        "{log}"
    );
    let r = curl(&[&format!("http://127.0.0.1:{PROXY}/")]);
    assert_eq!(r.status, 500, "{r:?}");
    let (_, m) = http_get(ADMIN, "/metrics", "").expect("admin server");
    assert_eq!(
        metric_value(&m, "tollgate_policy_partial_problems"),
        Some(1),
        "{m}"
    );
    assert_eq!(
        metric_value(&m, "tollgate_policy_objects_refused{kind=\"HTTPRoute\"}"),
        Some(0),
        "{m}"
    );
    let (_, status) = http_get(ADMIN, "/status", "").expect("admin server");
    let status: serde_json::Value = serde_json::from_str(&status).expect("JSON status");
    assert_eq!(status["not_served"]["partial_count"], 1, "{status}");
    assert_eq!(
        status["not_served"]["routes"][0]["parents"][0]["conditions"][1]["reason"],
        "BackendNotFound",
        "{status}"
    );

    // An L4 problem refuses the whole revision, the route's fix with it: the revision in
    // force (its 500 included) stays.
    lab.write_policy("edge.yaml", &l4("0"));
    lab.write_policy("l7.yaml", &revision(0));
    agent.sighup();
    agent
        .wait_for_log("revision refused", APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        agent.log_count(POLICY_APPLIED),
        2,
        "nothing of the refused revision was applied"
    );
    let r = curl(&[&format!("http://127.0.0.1:{PROXY}/")]);
    assert_eq!(r.status, 500, "{r:?}");
    let (_, m) = http_get(ADMIN, "/metrics", "").expect("admin server");
    assert_eq!(
        metric_value(
            &m,
            "tollgate_policy_apply_failures_total{reason=\"invalid\"}"
        ),
        Some(1),
        "{m}"
    );
    lab.write_policy("edge.yaml", &l4("23"));

    // A revision without a Gateway (only the L4 policy) closes the listener.
    lab.remove_policy("l7.yaml");
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 3, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tries = 0;
    while !port_is_closed(PROXY) {
        tries += 1;
        assert!(tries < 100, "port {PROXY} is still open without a Gateway");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        agent.log().contains("HTTP listener closed"),
        "{}",
        agent.log()
    );
}

#[test]
fn a_port_that_cannot_be_bound_refuses_the_revision() {
    require_root!();
    let lab = Lab::new("l7bind", &[]);
    let _one = Backend::start("one", 19601);
    lab.write_policy("l7.yaml", &revision(0));
    let mut agent = start_agent(&lab, ADMIN, &[PROXY], &[]);
    // Something else holds the extra port.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", EXTRA)).expect("bind the extra port");
    lab.write_policy("l7.yaml", &revision(1));
    agent.sighup();
    agent
        .wait_for_log(
            "apply failed; the previous revision stays enforced",
            APPLY_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        agent.log().contains(
            "cannot listen on 127.0.0.1:18084 for listener \"extra\" of Gateway default/edge"
        ),
        "{}",
        agent.log()
    );
    // Revision 0 stays in force: backend one, stamped r0.
    let r = curl(&[&format!("http://127.0.0.1:{PROXY}/")]);
    assert_eq!(
        (r.backend(), r.header("x-revision")),
        ("one".into(), Some("r0")),
        "{r:?}"
    );
}

/// Runs curl in a thread (a request that stays in flight while the test does something else).
fn curl_in_background(args: Vec<String>) -> thread::JoinHandle<tollgate_tests::l7::Reply> {
    thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args)
    })
}

#[test]
fn a_request_in_flight_finishes_on_its_revision_when_its_listener_is_removed() {
    require_root!();
    let lab = Lab::new("l7flight", &[]);
    let _one = Backend::start("one", 19601);
    let _two = Backend::start("two", 19602);
    lab.write_policy("l7.yaml", &revision(1));
    let mut agent = start_agent(&lab, ADMIN, &[PROXY, EXTRA], &[]);

    let slow = curl_in_background(vec![format!("http://127.0.0.1:{EXTRA}/slow/1500")]);
    thread::sleep(Duration::from_millis(300));
    // Revision 2 has no extra listener and routes to the other backend.
    lab.write_policy("l7.yaml", &revision(2));
    agent.sighup();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tries = 0;
    while !port_is_closed(EXTRA) {
        tries += 1;
        assert!(tries < 100, "port {EXTRA} still accepts connections");
        thread::sleep(Duration::from_millis(20));
    }
    let r = slow.join().expect("the curl thread");
    assert_eq!(r.status, 200, "the request in flight was cut: {r:?}");
    assert_eq!(
        (r.backend(), r.header("x-revision")),
        ("two".into(), Some("r1")),
        "it finished on the revision it started on"
    );
    let r = curl(&[&format!("http://127.0.0.1:{PROXY}/")]);
    assert_eq!(
        (r.backend(), r.header("x-revision")),
        ("one".into(), Some("r2"))
    );
}

#[test]
fn a_stopping_agent_lets_requests_in_flight_finish() {
    require_root!();
    let lab = Lab::new("l7drain", &[]);
    let _one = Backend::start("one", 19601);
    lab.write_policy("l7.yaml", &revision(0));
    let mut agent = start_agent(&lab, ADMIN, &[PROXY], &[]);
    let slow = curl_in_background(vec![format!("http://127.0.0.1:{PROXY}/slow/1500")]);
    thread::sleep(Duration::from_millis(300));
    let status = agent.sigterm(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "the agent did not stop cleanly: {status:?}\n{}",
        agent.log()
    );
    let r = slow.join().expect("the curl thread");
    assert_eq!((r.status, r.backend()), (200, "one".into()), "{r:?}");
    assert!(port_is_closed(PROXY));
}
