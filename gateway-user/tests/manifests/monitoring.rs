//! The monitoring manifests in `manifests/monitoring/`: the Grafana dashboard and the Prometheus
//! Operator monitors, and the metric table of docs/telemetry.md, all checked against the names
//! the agent's registry exports. Apart from the install manifests because what they must agree
//! with is the registry, not the DaemonSet.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// Every series name the agent's registry exports (read from the registry itself, never a
/// hand-kept list): what a dashboard query or the docs may name.
fn exported() -> BTreeSet<String> {
    let shared = gateway_user::telemetry::Shared::new("/nonexistent/tollgate-pins".into());
    let names = shared.metrics.exported_names();
    assert!(
        names.contains("tollgate_l4_packets_total")
            && names.contains("tollgate_http_requests_total"),
        "the registry's names are not readable: {names:?}"
    );
    names
}

/// Families the dashboard must show: the node's enforcement and the policy pipeline.
fn on_dashboard(name: &str) -> bool {
    [
        "tollgate_l4_",
        "tollgate_policy_",
        "tollgate_map_",
        "tollgate_build_",
    ]
    .iter()
    .any(|p| name.starts_with(p))
        && !name.ends_with("_sum")
        && !name.ends_with("_count")
        && name != "tollgate_policy_drift_corrections_total"
        // Failure isolation's gauges: their dashboard panel belongs with the manifests
        // change that follows this one (manifests/ was being reworked at the same time).
        && name != "tollgate_policy_objects_refused"
        && name != "tollgate_policy_partial_problems"
}

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
    let exported = exported();
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "metric {name:?} in query {expr:?} is not exported by the agent"
            );
            used.insert(name);
        }
    }
    // The node's enforcement and the pipeline are on the dashboard somewhere.
    let unused: Vec<_> = exported
        .iter()
        .filter(|m| on_dashboard(m) && !used.contains(*m))
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

pub(crate) fn monitor(name: &str) -> Value {
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

/// The metric table of docs/telemetry.md lists exactly what the registry exports (histograms
/// by their base name, counters with `_total`).
#[test]
fn the_telemetry_docs_list_exactly_the_exported_metrics() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/telemetry.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut documented = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let first = line.split('|').nth(1).unwrap_or_default();
        for name in first.split('`').skip(1).step_by(2) {
            documented.insert(name.to_owned());
        }
    }
    let exported: BTreeSet<String> = exported()
        .into_iter()
        .filter(|n| !n.ends_with("_sum") && !n.ends_with("_count"))
        .map(|n| n.strip_suffix("_bucket").map(str::to_owned).unwrap_or(n))
        .collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&exported).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/telemetry.md: exported but not documented: {undocumented:?}; documented but not exported: {unknown:?}"
    );
}
