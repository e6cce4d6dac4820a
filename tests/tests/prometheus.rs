//! A real Prometheus server (Debian's) scrapes the agent while a denied source sends pings; a
//! PromQL query through its HTTP API sees exactly the packets sent (tolerance: none — only the
//! test's pings come from that source, and the counters are exact).

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_tests::{http_get, l4_policy, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const ADMIN_PORT: u16 = 19466;
const PROM_PORT: u16 = 19090;

/// The Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tollgate\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROM_PORT}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus (cargo xtask setup installs Debian's prometheus package)");
        Prometheus { child, dir }
    }

    /// The value of a scalar PromQL query, if it has one.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (_, body) = http_get(PROM_PORT, &format!("/api/v1/query?query={encoded}"), "")?;
        let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_sees_the_packets_dropped_for_a_denied_source() {
    require_root!();
    let lab = Lab::new("prom", &[SCANNER]);
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block-scanners\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
    let mut agent = lab.start_agent(&["--admin", &format!("127.0.0.1:{ADMIN_PORT}")]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let prometheus = Prometheus::start(ADMIN_PORT);

    // Prometheus is up and scraping the agent.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prometheus.query("up{job=\"tollgate\"}") != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the agent:\n{}",
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    let sent = 9u32;
    let denied = lab.ping(
        SCANNER,
        sent,
        Duration::from_millis(20),
        Duration::from_secs(1),
    );
    assert_eq!(denied.received, 0);

    let query = "sum(tollgate_l4_packets_total{policy=\"edge\",rule=\"block-scanners\",action=\"drop\",reason=\"policy\"})";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = prometheus.query(query);
        if seen == Some(f64::from(sent)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        seen,
        Some(f64::from(sent)),
        "{query} through Prometheus; log:\n{}",
        prometheus.log()
    );
    let revision = prometheus.query("count(tollgate_policy_revision_info)");
    assert_eq!(revision, Some(1.0), "one revision in force");
    assert!(agent.is_running());
}
