//! Checks of the monitoring manifests in `manifests/monitoring/`: the Grafana dashboard and the
//! Prometheus Operator monitors. The metric names are a contract (README, "Metrics and the admin
//! port"): a dashboard query that names a metric the agent does not export fails here.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// Every name a dashboard query may use: the metrics of the README table, with the histogram's
/// `_bucket` series.
const KNOWN_METRICS: &[&str] = &[
    "tollgate_l4_packets_total",
    "tollgate_l4_bytes_total",
    "tollgate_l4_unjudged_packets_total",
    "tollgate_policy_revision_info",
    "tollgate_policy_last_apply_success_timestamp_seconds",
    "tollgate_policy_apply_duration_seconds_bucket",
    "tollgate_policy_apply_failures_total",
    "tollgate_map_entries",
    "tollgate_map_capacity",
    "tollgate_build_info",
];

fn monitoring_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/monitoring")
}

fn read(name: &str) -> String {
    let path = monitoring_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana-dashboard.json"))
        .expect("grafana-dashboard.json is not valid JSON")
}

/// The panels, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"]
        .as_array()
        .expect("dashboard has a panels array")
    {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// Every `tollgate_...` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while let Some(found) = expr[i..].find("tollgate_") {
        let start = i + found;
        let mut end = start;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        // Only a whole identifier: not the tail of a longer one (`x_tollgate_...`).
        if start == 0 || !is_ident(bytes[start - 1]) {
            names.push(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

#[test]
fn metric_name_extraction() {
    assert_eq!(
        metric_names(
            r#"a_tollgate_x + sum(rate(tollgate_l4_packets_total{reason="tollgate_y"}[5m])) / tollgate_map_capacity"#
        ),
        [
            "tollgate_l4_packets_total",
            "tollgate_y",
            "tollgate_map_capacity"
        ]
    );
}

#[test]
fn dashboard_panels_have_title_description_and_queries() {
    let dashboard = dashboard();
    assert_eq!(dashboard["schemaVersion"], 39);
    let panels = panels(&dashboard);
    assert!(!panels.is_empty(), "the dashboard has no panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.trim().is_empty(), "a panel has no title: {panel}");
        let description = panel["description"].as_str().unwrap_or_default();
        assert!(
            !description.trim().is_empty(),
            "panel {title:?} has no description"
        );
        assert!(
            ids.insert(
                panel["id"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("panel {title:?} has no id"))
            ),
            "panel {title:?}: duplicate id"
        );
        assert!(
            panel["gridPos"].is_object(),
            "panel {title:?} has no gridPos"
        );
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let exprs: Vec<&str> = targets
            .iter()
            .filter_map(|t| t["expr"].as_str())
            .filter(|e| !e.trim().is_empty())
            .collect();
        assert!(
            !exprs.is_empty(),
            "panel {title:?} has no target with an expr"
        );
        assert_eq!(
            exprs.len(),
            targets.len(),
            "panel {title:?} has a target without an expr"
        );
        let ref_ids: BTreeSet<&str> = targets.iter().filter_map(|t| t["refId"].as_str()).collect();
        assert_eq!(
            ref_ids.len(),
            targets.len(),
            "panel {title:?}: targets need distinct refIds"
        );
    }
}

#[test]
fn dashboard_queries_use_only_exported_metrics() {
    let dashboard = dashboard();
    let mut exprs: Vec<String> = panels(&dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    // Template variable queries name metrics too.
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("dashboard has templating.list")
    {
        match &variable["query"] {
            Value::String(q) if variable["type"] == "query" => exprs.push(q.clone()),
            Value::Object(o) => {
                exprs.extend(o.get("query").and_then(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
        exprs.extend(variable["definition"].as_str().map(str::to_owned));
    }
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                KNOWN_METRICS.contains(&name.as_str()),
                "unknown metric {name:?} in query {expr:?}"
            );
            used.insert(name);
        }
    }
    // Everything exported is on the dashboard somewhere.
    let unused: Vec<_> = KNOWN_METRICS
        .iter()
        .filter(|m| !used.contains(**m))
        .collect();
    assert!(
        unused.is_empty(),
        "metrics no dashboard query uses: {unused:?}"
    );
}

#[test]
fn dashboard_variables() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("dashboard has templating.list");
    let find = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name:?} variable"))
    };
    let datasource = find("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let instance = find("instance");
    assert_eq!(
        instance["definition"],
        "label_values(tollgate_build_info, instance)"
    );
    // Every panel queries the data source the variable picks.
    for panel in panels(&dashboard) {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {}",
            panel["title"]
        );
    }
}

fn monitor(name: &str) -> Value {
    serde_saphyr::from_str::<Value>(&read(name))
        .unwrap_or_else(|e| panic!("{name} does not parse: {e}"))
}

fn check_monitor(name: &str, kind: &str, endpoints_field: &str) {
    let m = monitor(name);
    assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1", "{name}");
    assert_eq!(m["kind"], kind, "{name}");
    assert_eq!(
        m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"], "tollgate",
        "{name}"
    );
    let namespaces = m["spec"]["namespaceSelector"]["matchNames"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        namespaces.contains(&Value::from("tollgate-system")),
        "{name}: namespaceSelector"
    );
    let endpoints = m["spec"][endpoints_field]
        .as_array()
        .unwrap_or_else(|| panic!("{name}: no spec.{endpoints_field}"));
    assert!(!endpoints.is_empty(), "{name}: no endpoint");
    for endpoint in endpoints {
        assert_eq!(endpoint["port"], "admin", "{name}");
        assert_eq!(endpoint["path"], "/metrics", "{name}");
        assert_eq!(endpoint["interval"], "15s", "{name}");
    }
}

#[test]
fn podmonitor() {
    check_monitor("podmonitor.yaml", "PodMonitor", "podMetricsEndpoints");
}

#[test]
fn servicemonitor() {
    check_monitor("servicemonitor.yaml", "ServiceMonitor", "endpoints");
}
