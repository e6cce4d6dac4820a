//! The admin server of a running agent: /metrics in valid OpenMetrics (checked by promtool)
//! with the packets a denied source sent counted on its rule, /healthz, /readyz, /status.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use tollgate_tests::{
    http_get, l4_policy, metric_value, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED,
};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

/// GET `path` from the admin server; returns (status code, body).
fn get(port: u16, path: &str) -> (u16, String) {
    get_with(port, path, "")
}

/// GET with extra header lines (each ending in \r\n).
fn get_with(port: u16, path: &str, headers: &str) -> (u16, String) {
    http_get(port, path, headers)
        .unwrap_or_else(|| panic!("nothing answers on the admin port {port}"))
}

#[test]
fn metrics_count_the_dropped_packets_of_a_denied_source_and_pass_promtool() {
    require_root!();
    let port = 19464;
    let lab = Lab::new("metrics", &[SCANNER]);
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
    let mut agent = lab.start_agent(&["--admin", &format!("127.0.0.1:{port}")]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(get(port, "/healthz").0, 200);
    let (code, ready) = get(port, "/readyz");
    assert_eq!(code, 200, "{ready}");

    let sent = 7;
    let denied = lab.ping(
        SCANNER,
        sent,
        Duration::from_millis(20),
        Duration::from_secs(1),
    );
    assert_eq!(denied.received, 0);
    let (code, text) = get(port, "/metrics");
    assert_eq!(code, 200);
    let dropped = metric_value(&text, "tollgate_l4_packets_total{policy=\"edge\",rule=\"block-scanners\",action=\"drop\",reason=\"policy\"}")
        .unwrap_or_else(|| panic!("no counter for block-scanners:\n{text}"));
    assert_eq!(
        dropped,
        u64::from(sent),
        "every echo request of the denied source is counted once:\n{text}"
    );
    assert!(
        text.contains("tollgate_policy_revision_info{source="),
        "{text}"
    );
    assert!(text.contains("tollgate_build_info{version="), "{text}");
    assert!(
        !text.contains("203.0.113"),
        "no client address is a label value:\n{text}"
    );

    // promtool (Debian's prometheus package) checks the exposition format and naming.
    let file = std::env::temp_dir().join(format!("tollgate-metrics-{}.txt", std::process::id()));
    std::fs::write(&file, &text).unwrap();
    let check = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < {}", file.display()))
        .output()
        .expect("run promtool (cargo xtask setup installs Debian's prometheus package)");
    let _ = std::fs::remove_file(&file);
    assert!(
        check.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // Prometheus asks for OpenMetrics, and gets it.
    let (code, om) = get_with(
        port,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0\r\n",
    );
    assert_eq!(code, 200);
    assert!(
        om.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF:\n{om}"
    );
    assert!(om.contains("tollgate_l4_packets_total{policy=\"edge\",rule=\"block-scanners\",action=\"drop\",reason=\"policy\"}"), "{om}");

    let (code, status) = get(port, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status)
        .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {status}"));
    assert!(
        status["applied"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("dir:")),
        "{status}"
    );
    assert_eq!(status["interfaces"][0]["mode"], "native", "{status}");
    assert_eq!(get(port, "/no-such-page").0, 404);

    // `tollgate status` asks the running agent.
    let out = std::process::Command::new(tollgate_tests::tollgate_bin())
        .args(["status", "--admin", &format!("127.0.0.1:{port}")])
        .output()
        .expect("tollgate status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("applied:    dir:")
            && text.contains(&format!("interface:  {} (native)", lab.iface())),
        "{text}"
    );

    // Bad requests get 4xx answers and change nothing.
    let long_path = format!("/{}", "a".repeat(200_000));
    // The server may answer and close before the client has written the whole path: the
    // write then fails, which is no answer (0) here.
    let code = http_get(port, &long_path, "").map_or(0, |(code, _)| code);
    assert!(
        (400..500).contains(&code) || code == 0,
        "a 200 kB path: {code}"
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = "x".repeat(1 << 20);
    let _ = write!(s, "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(
        raw.starts_with("HTTP/1.1 405"),
        "POST /metrics: {}",
        raw.lines().next().unwrap_or("")
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"\x00\x01garbage\r\n\r\n");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(
        raw.is_empty() || raw.starts_with("HTTP/1.1 4"),
        "garbage request: {raw}"
    );
    assert_eq!(get(port, "/healthz").0, 200, "the server still answers");
    assert!(agent.is_running());
}

#[test]
fn an_agent_with_only_an_invalid_revision_is_alive_but_not_ready() {
    require_root!();
    let port = 19465;
    let lab = Lab::new("notready", &[]);
    lab.write_policy("bad.yaml", "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: bad }\nspec:\n  rules:\n    - name: x\n      action: deny\n      from: [not-a-cidr]\n");
    let mut agent = lab.start_agent(&["--admin", &format!("127.0.0.1:{port}")]);
    agent
        .wait_for_log("revision refused", APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(get(port, "/healthz").0, 200, "alive");
    assert_eq!(get(port, "/readyz").0, 503, "nothing is enforced");
    let (_, text) = get(port, "/metrics");
    assert_eq!(
        metric_value(
            &text,
            "tollgate_policy_apply_failures_total{reason=\"invalid\"}"
        ),
        Some(1),
        "{text}"
    );
    let (_, status) = get(port, "/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not-a-cidr")),
        "{status}"
    );
}

#[test]
fn scrapes_during_applies_always_answer_and_never_hold_up_a_revision() {
    require_root!();
    let port = 19469;
    let lab = Lab::new("scrapeapply", &[SCANNER]);
    let policy = |n: u32| {
        l4_policy("edge", "allow", &format!("- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24, \"2001:db8:1::/64\", \"2001:db8:2::1/128\"]\n- name: r{n}\n  action: deny\n  from: [192.0.2.{n}/32]\n"))
    };
    lab.write_policy("edge.yaml", &policy(0));
    let mut agent = lab.start_agent(&["--admin", &format!("127.0.0.1:{port}")]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let scraper = std::thread::spawn(move || {
        let mut scrapes = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let (code, text) = get(port, "/metrics");
            assert_eq!(code, 200, "a scrape during applies: {text}");
            assert!(text.contains("tollgate_policy_revision_info{"), "{text}");
            scrapes += 1;
        }
        scrapes
    });
    for n in 1..=20u32 {
        lab.write_policy("edge.yaml", &policy(n));
        agent.sighup();
        agent
            .wait_for_log_count(POLICY_APPLIED, n as usize + 1, APPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("apply {n}: {e}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().expect("the scraper saw only good answers");
    assert!(scrapes > 0);
    let (_, status) = get(port, "/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["rules"], 3,
        "the last revision is in force: {status}"
    );
    // The /32 is in the kernel's exact-address table, the IPv6 /64 and /128 in the
    // exact-prefix one, behind the filter (keyed by their first 64 bits: two keys).
    assert_eq!(status["fast_path"]["exact_v4_ways"], 1, "{status}");
    assert_eq!(status["fast_path"]["exact_v6_ways"], 2, "{status}");
    assert_eq!(status["fast_path"]["exact_v6_filter_bits"], 2, "{status}");
    assert_eq!(status["fast_path"]["ipv6_rule_sets_on_trie"], 0, "{status}");
    let (_, text) = get(port, "/metrics");
    for line in [
        "tollgate_map_entries{map=\"exact_v4\"} 1",
        "tollgate_map_entries{map=\"exact_v6\"} 2",
        "tollgate_map_entries{map=\"filter_v6\"} 2",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}
