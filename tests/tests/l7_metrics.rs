//! What the L7 proxy reports: the HTTP metrics (checked by promtool, with bounded labels) and
//! the JSON access log, on, sampled, or off.
use std::process::Command;

use tollgate_tests::l7::{
    access_log, backend_object, curl, documents, gateway, route_object, start_agent, to, Backend,
};
use tollgate_tests::{http_get, metric_value, require_root, Lab};

const PROXY: u16 = 18085;
const ADMIN: u16 = 19610;

fn policy() -> String {
    documents(&[
        &gateway(&[("http", PROXY, None)]),
        &backend_object("app", &[19611], ""),
        &backend_object("gone", &[19612], ""),
        &route_object(
            "app",
            &format!(
                "  rules:\n    - backendRefs: [{}]\n    - matches: [{{ path: {{ value: /gone }} }}]\n      backendRefs: [{}]\n      retry: {{ attempts: 0 }}\n",
                to("app"),
                to("gone")
            ),
        ),
    ])
}

fn url(path: &str) -> String {
    format!("http://127.0.0.1:{PROXY}{path}")
}

#[test]
fn http_metrics_pass_promtool_and_keep_their_labels_bounded() {
    require_root!();
    let lab = Lab::new("l7metric", &[]);
    let _app = Backend::start("app", 19611);
    lab.write_policy("l7.yaml", &policy());
    let _agent = start_agent(&lab, ADMIN, &[PROXY], &["--access-log", "off"]);

    for _ in 0..3 {
        assert_eq!(curl(&[&url("/a")]).status, 200);
    }
    // The Python backend does not know PURGE (501); the method label is OTHER.
    assert_eq!(curl(&["-X", "PURGE", &url("/a")]).status, 501);
    assert_eq!(
        curl(&["-X", "POST", "-d", "x", &url("/status/418")]).status,
        418
    );
    assert_eq!(curl(&[&url("/gone")]).status, 503);
    assert_eq!(curl(&["--path-as-is", &url("/../x")]).status, 400);

    let (_, text) = http_get(ADMIN, "/metrics", "").expect("the admin server answers");
    for (series, want) in [
        (
            "tollgate_http_requests_total{route=\"default/app\",method=\"GET\",code=\"200\"}",
            3,
        ),
        (
            "tollgate_http_requests_total{route=\"default/app\",method=\"OTHER\",code=\"501\"}",
            1,
        ),
        (
            "tollgate_http_requests_total{route=\"default/app\",method=\"POST\",code=\"418\"}",
            1,
        ),
        (
            "tollgate_http_requests_total{route=\"default/app\",method=\"GET\",code=\"503\"}",
            1,
        ),
        (
            "tollgate_http_requests_total{route=\"none\",method=\"GET\",code=\"400\"}",
            1,
        ),
        (
            "tollgate_http_upstream_errors_total{route=\"default/app\",reason=\"connect\"}",
            1,
        ),
        (
            "tollgate_http_request_duration_seconds_count{route=\"default/app\"}",
            6,
        ),
    ] {
        assert_eq!(
            metric_value(&text, series),
            Some(want),
            "{series} in:\n{text}"
        );
    }
    assert!(
        !text.contains("PURGE") && !text.contains("127.0.0.1"),
        "unbounded label values:\n{text}"
    );

    let file = std::env::temp_dir().join(format!("tollgate-l7-metrics-{}.txt", std::process::id()));
    std::fs::write(&file, &text).unwrap();
    let check = Command::new("sh")
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
}

#[test]
fn the_access_log_has_a_json_line_per_request_or_a_sample_or_nothing() {
    require_root!();
    let lab = Lab::new("l7access", &[]);
    let _app = Backend::start("app", 19611);
    lab.write_policy("l7.yaml", &policy());

    // On (the default): one line per request, with what happened.
    {
        let agent = start_agent(&lab, ADMIN, &[PROXY], &["--log-format", "json"]);
        for i in 0..5 {
            assert_eq!(
                curl(&[
                    "-H",
                    "Host: App.Example.com",
                    &url(&format!("/item/{i}?secret=1"))
                ])
                .status,
                200
            );
        }
        assert_eq!(curl(&[&url("/gone")]).status, 503);
        let lines = access_log(&agent);
        assert_eq!(lines.len(), 6, "{}", agent.log());
        let first = &lines[0];
        assert_eq!(first["target"], "tollgate::access");
        assert_eq!(first["route"], "default/app");
        assert_eq!(first["method"], "GET");
        assert_eq!(first["host"], "app.example.com");
        assert_eq!(
            first["path"], "/item/0",
            "the query string is left out of the log"
        );
        assert_eq!(first["status"], 200);
        assert_eq!(first["upstream"], "127.0.0.1:19611");
        assert_eq!(first["client"], "127.0.0.1");
        assert!(first["bytes"].as_u64().unwrap() > 50, "{first}");
        assert!(first["latency_ms"].as_f64().unwrap() > 0.0, "{first}");
        assert_eq!(first["aborted"], false);
        let failed = &lines[5];
        assert_eq!(
            (failed["status"].as_u64(), failed["reason"].as_str()),
            (Some(503), Some("connect"))
        );
        // The access log stays out of the agent's own log lines.
        assert!(agent
            .log()
            .lines()
            .any(|l| l.contains("\"policy applied\"")));
    }

    // sample=4: one request in four, and every 5xx.
    {
        let agent = start_agent(&lab, ADMIN, &[PROXY], &["--access-log", "sample=4"]);
        for _ in 0..20 {
            assert_eq!(curl(&[&url("/s")]).status, 200);
        }
        assert_eq!(curl(&[&url("/gone")]).status, 503);
        let lines = access_log(&agent);
        let ok = lines.iter().filter(|l| l["status"] == 200).count();
        let errors = lines.iter().filter(|l| l["status"] == 503).count();
        assert_eq!((ok, errors), (5, 1), "{}", agent.log());
    }

    // Off: none.
    {
        let agent = start_agent(&lab, ADMIN, &[PROXY], &["--access-log", "off"]);
        for _ in 0..3 {
            assert_eq!(curl(&[&url("/o")]).status, 200);
        }
        assert_eq!(curl(&[&url("/gone")]).status, 503);
        assert!(access_log(&agent).is_empty(), "{}", agent.log());
    }
}
