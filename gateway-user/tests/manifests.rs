//! Checks of the monitoring manifests in `manifests/monitoring/`: the Grafana dashboard and the
//! Prometheus Operator monitors. The metric names are a contract (README, "Metrics and the admin
//! port"): a dashboard query that names a metric the agent does not export fails here.

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

// ---------------------------------------------------------------------------------------------
// The install manifests: the kustomize base in `manifests/install/base/` (Kubernetes mode) and
// the overlay `manifests/install/overlays/configmap-source/` (policies from a ConfigMap). What
// the kustomizations list exists and parses; the DaemonSet agrees with itself (arguments, ports,
// probes, mounts, the least-privilege security context), with the monitors, the RBAC and the
// admission policy, and the overlay with its ConfigMap. (`cargo xtask test` also renders every
// kustomization and validates it with kubernetes-validate.)

fn install_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/install/base")
}

fn overlay_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/install/overlays/configmap-source")
}

fn yaml_docs(path: &std::path::Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

fn install_yaml(name: &str) -> Value {
    let docs = yaml_docs(&install_dir().join(name));
    assert_eq!(docs.len(), 1, "{name}: one document expected");
    docs.into_iter().next().unwrap()
}

fn overlay_yaml(name: &str) -> Value {
    let docs = yaml_docs(&overlay_dir().join(name));
    assert_eq!(docs.len(), 1, "{name}: one document expected");
    docs.into_iter().next().unwrap()
}

fn kustomization_resources() -> Vec<String> {
    let k = install_yaml("kustomization.yaml");
    assert_eq!(k["apiVersion"], "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k["kind"], "Kustomization");
    k["resources"]
        .as_array()
        .expect("kustomization.yaml has resources")
        .iter()
        .map(|r| r.as_str().expect("a resource is a file name").to_owned())
        .collect()
}

fn daemonset() -> Value {
    install_yaml("daemonset.yaml")
}

fn container<'a>(ds: &'a Value, list: &str, name: &str) -> &'a Value {
    ds["spec"]["template"]["spec"][list]
        .as_array()
        .unwrap_or_else(|| panic!("the DaemonSet has {list}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} entry named {name}"))
}

fn agent_container(ds: &Value) -> &Value {
    container(ds, "containers", "tollgate")
}

/// A container's command line.
fn command(container: &Value) -> Vec<&str> {
    container["command"]
        .as_array()
        .expect("the container has a command")
        .iter()
        .map(|a| a.as_str().expect("command arguments are strings"))
        .collect()
}

/// The value following `flag` in `args`.
fn flag<'a>(args: &[&'a str], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| *a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args.get(i + 1)
        .unwrap_or_else(|| panic!("{flag} has no value"))
}

/// Whether `path` is `dir` or below it (by whole components).
fn is_within(path: &str, dir: &str) -> bool {
    std::path::Path::new(path).starts_with(dir)
}

/// The mount of the volume `name` in `container`, and the volume itself.
fn mount<'a>(ds: &'a Value, container: &'a Value, name: &str) -> (&'a Value, &'a Value) {
    let m = container["volumeMounts"]
        .as_array()
        .expect("the container has volumeMounts")
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no volumeMount {name:?}"));
    let v = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("the pod has volumes")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name:?}"));
    (m, v)
}

/// The env entry `name` of a container.
fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .expect("the container has env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name}"))
}

#[test]
fn install_kustomization_lists_existing_parsing_files() {
    let resources = kustomization_resources();
    assert!(
        resources.iter().any(|r| r == "../../crds"),
        "the base installs the CRDs"
    );
    for name in [
        "namespace.yaml",
        "serviceaccount.yaml",
        "clusterrole.yaml",
        "clusterrolebinding.yaml",
        "admission-policy.yaml",
        "daemonset.yaml",
        "service.yaml",
        "gatewayclass.yaml",
    ] {
        assert!(
            resources.iter().any(|r| r == name),
            "kustomization.yaml does not list {name}"
        );
    }
    for name in resources.iter().filter(|r| r.ends_with(".yaml")) {
        for doc in yaml_docs(&install_dir().join(name)) {
            assert!(doc["apiVersion"].is_string(), "{name}: no apiVersion");
            assert!(doc["kind"].is_string(), "{name}: no kind");
            let cluster_scoped = [
                "Namespace",
                "GatewayClass",
                "ClusterRole",
                "ClusterRoleBinding",
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding",
                "GatewayClass",
            ];
            if cluster_scoped.contains(&doc["kind"].as_str().unwrap()) {
                assert!(doc["metadata"].get("namespace").is_none(), "{name}");
            } else {
                assert_eq!(doc["metadata"]["namespace"], "tollgate-system", "{name}");
            }
        }
    }
    // Every YAML file of the directory is installed (a forgotten file would be silently left out).
    for entry in std::fs::read_dir(install_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                resources.contains(&name),
                "{name} is not in kustomization.yaml"
            );
        }
    }
    // The image the manifests name is the one `cargo xtask image` tags: the workspace version.
    let k = install_yaml("kustomization.yaml");
    let image = &k["images"][0];
    assert_eq!(image["name"], "tollgate");
    assert_eq!(image["newTag"], env!("CARGO_PKG_VERSION"));
    let ds = daemonset();
    assert_eq!(agent_container(&ds)["image"], "tollgate");
    assert_eq!(
        container(&ds, "initContainers", "mount-bpffs")["image"],
        "tollgate"
    );
}

#[test]
fn install_daemonset_labels_match_selector_and_monitors() {
    let ds = daemonset();
    assert_eq!(ds["kind"], "DaemonSet");
    assert_eq!(ds["metadata"]["name"], "tollgate");
    let selector = ds["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("the DaemonSet has selector.matchLabels");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector {
        assert_eq!(&labels[k], v, "pod template label {k}");
    }
    // The PodMonitor selects the pods by their labels (the ServiceMonitor selects the Service:
    // install_service_selects_the_agents_for_the_servicemonitor).
    let pm = monitor("podmonitor.yaml");
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the PodMonitor selects pods by {k}");
    }
    assert_eq!(labels["app.kubernetes.io/name"], "tollgate");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["serviceAccountName"], "tollgate");
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "tolerates every taint"
    );
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        1
    );
}

#[test]
fn install_service_selects_the_agents_for_the_servicemonitor() {
    let ds = daemonset();
    let svc = install_yaml("service.yaml");
    assert_eq!(svc["kind"], "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().expect("a selector") {
        assert_eq!(&labels[k], v, "service selector {k}");
    }
    // The ServiceMonitor selects the Service by its labels, and scrapes its port `admin`.
    let sm = monitor("servicemonitor.yaml");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v, "service label {k}");
    }
    let port = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("a service port named admin");
    assert_eq!(port["port"], 9464);
    assert!(port["targetPort"] == "admin" || port["targetPort"] == 9464);
}

#[test]
fn install_runs_the_kubernetes_source_with_admin_on_the_pod_ip_and_probes() {
    let ds = daemonset();
    let c = agent_container(&ds);
    let args = command(c);
    assert_eq!(&args[..2], ["tollgate", "run"]);
    assert_eq!(flag(&args, "--source"), "kubernetes");
    assert_eq!(flag(&args, "--node-name"), "$(NODE_NAME)");
    assert_eq!(
        env(c, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    // Not 0.0.0.0: the pod IP from the downward API (with hostNetwork, the node's address).
    assert_eq!(flag(&args, "--admin"), "$(POD_IP):9464");
    assert_eq!(
        env(c, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    let port = c["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("a container port named admin");
    assert_eq!(port["containerPort"], 9464);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
    }
    assert_eq!(flag(&args, "--log-format"), "json");
    // $(TOLLGATE_INTERFACE) is expanded by the kubelet from the container's env.
    assert_eq!(flag(&args, "--interface"), "$(TOLLGATE_INTERFACE)");
    assert_eq!(env(c, "TOLLGATE_INTERFACE")["value"], "eth0");
    // The memory limit the hostile tests hold the agent to (tests/src/cgroup.rs).
    assert_eq!(c["resources"]["limits"]["memory"], "512Mi");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
}

/// The capabilities tests/tests/capabilities.rs measures the agent needing; SYS_ADMIN is not
/// among them.
const MEASURED_CAPABILITIES: [&str; 4] = ["BPF", "NET_ADMIN", "PERFMON", "NET_BIND_SERVICE"];

#[test]
fn install_agent_is_not_privileged_and_holds_only_the_measured_capabilities() {
    let ds = daemonset();
    let sc = &agent_container(&ds)["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let added: Vec<&str> = sc["capabilities"]["add"]
        .as_array()
        .expect("capabilities.add")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(added, MEASURED_CAPABILITIES);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    // Only the init container is privileged, and it only mounts the bpffs.
    let init = container(&ds, "initContainers", "mount-bpffs");
    assert_eq!(init["securityContext"]["privileged"], true);
    assert_eq!(&command(init)[..2], ["tollgate", "mount-bpffs"]);
    assert_eq!(
        flag(&command(init), "--pin-dir"),
        flag(&command(agent_container(&ds)), "--pin-dir")
    );
    assert_eq!(pod["initContainers"].as_array().unwrap().len(), 1);
    assert_eq!(pod["containers"].as_array().unwrap().len(), 1);
}

#[test]
fn install_mounts_hold_pins_state_and_secrets() {
    let ds = daemonset();
    let agent = agent_container(&ds);
    let args = command(agent);

    // The init container mounts the bpffs and propagates it to the host; the agent only
    // receives mounts from the host.
    let init = container(&ds, "initContainers", "mount-bpffs");
    let (m, volume) = mount(&ds, init, "bpffs");
    assert_eq!(m["mountPath"], "/sys/fs/bpf");
    assert_eq!(m["mountPropagation"], "Bidirectional");
    assert_eq!(volume["hostPath"]["path"], "/sys/fs/bpf");
    assert_eq!(volume["hostPath"]["type"], "Directory");
    let (bpffs, _) = mount(&ds, agent, "bpffs");
    assert_eq!(bpffs["mountPath"], "/sys/fs/bpf");
    assert_eq!(bpffs["mountPropagation"], "HostToContainer");
    assert!(is_within(flag(&args, "--pin-dir"), "/sys/fs/bpf"));

    let (state, volume) = mount(&ds, agent, "state");
    assert_eq!(state["mountPath"], "/var/lib/tollgate");
    assert_eq!(volume["hostPath"]["path"], "/var/lib/tollgate");
    assert_eq!(volume["hostPath"]["type"], "DirectoryOrCreate");
    assert!(is_within(
        flag(&args, "--state-dir"),
        state["mountPath"].as_str().unwrap()
    ));

    // The root file system is read-only: what the agent writes (referenced Secrets) goes to a
    // tmpfs.
    let (run, volume) = mount(&ds, agent, "run");
    assert_eq!(volume["emptyDir"]["medium"], "Memory");
    assert!(is_within(
        flag(&args, "--tls-secrets-dir"),
        run["mountPath"].as_str().unwrap()
    ));
}

/// The ClusterRole lets the agent read, and write only its TollgateNode and events; the
/// binding names the DaemonSet's ServiceAccount; the admission policy constrains that account.
#[test]
fn install_rbac_is_least_privilege_and_the_admission_policy_names_the_agent() {
    let role = install_yaml("clusterrole.yaml");
    assert_eq!(role["kind"], "ClusterRole");
    let read = ["get", "list", "watch"];
    let mut writes = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(!verbs.contains(&"*") && !resources.contains(&"*"), "{rule}");
        if verbs.iter().all(|v| read.contains(v)) {
            continue;
        }
        // Exactly what the agent's node status writer uses (kubernetes/src/report.rs,
        // events.rs): a get at start, an apply that may create the object, status applies,
        // events created and their series patched.
        let expected: &[&str] = match resources.as_slice() {
            ["tollgatenodes"] => &["get", "create", "patch"],
            ["tollgatenodes/status"] => &["patch"],
            ["events"] => &["create", "patch"],
            other => panic!("writes to {other:?}: {rule}"),
        };
        assert_eq!(verbs, expected, "{rule}");
        assert_eq!(
            rule["apiGroups"],
            serde_json::json!([if resources == ["events"] {
                "events.k8s.io"
            } else {
                "tollgate.dev"
            }]),
            "{rule}"
        );
        writes.push(resources.join(","));
    }
    writes.sort();
    assert_eq!(
        writes,
        ["events", "tollgatenodes", "tollgatenodes/status"],
        "every write the agent makes is granted, once"
    );
    let text = std::fs::read_to_string(install_dir().join("clusterrole.yaml")).unwrap();
    for resource in [
        "l4policies",
        "gatewayclasses",
        "httproutes",
        "grpcroutes",
        "referencegrants",
        "services",
        "endpointslices",
        "secrets",
        "namespaces",
        "nodes",
    ] {
        assert!(
            text.contains(resource),
            "the ClusterRole does not read {resource}"
        );
    }

    let ds = daemonset();
    let sa = install_yaml("serviceaccount.yaml");
    let account = format!(
        "system:serviceaccount:{}:{}",
        sa["metadata"]["namespace"].as_str().unwrap(),
        sa["metadata"]["name"].as_str().unwrap()
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["serviceAccountName"],
        sa["metadata"]["name"]
    );
    let binding = install_yaml("clusterrolebinding.yaml");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    assert_eq!(
        binding["subjects"][0]["namespace"],
        sa["metadata"]["namespace"]
    );

    let docs = yaml_docs(&install_dir().join("admission-policy.yaml"));
    // One policy for the TollgateNode, one for the events: each bound, each on the agent's
    // account, each comparing with the node the token names.
    for (name, resources) in [
        (
            "tollgate-agent-own-node",
            serde_json::json!(["tollgatenodes", "tollgatenodes/status"]),
        ),
        ("tollgate-agent-own-events", serde_json::json!(["events"])),
    ] {
        let policy = docs
            .iter()
            .find(|d| d["kind"] == "ValidatingAdmissionPolicy" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("the ValidatingAdmissionPolicy {name}"));
        let binding = docs
            .iter()
            .find(|d| {
                d["kind"] == "ValidatingAdmissionPolicyBinding" && d["spec"]["policyName"] == name
            })
            .unwrap_or_else(|| panic!("the binding of {name}"));
        assert_eq!(
            binding["spec"]["validationActions"],
            serde_json::json!(["Deny"])
        );
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
        let condition = policy["spec"]["matchConditions"][0]["expression"]
            .as_str()
            .unwrap();
        assert!(condition.contains(&format!("\"{account}\"")), "{condition}");
        let rules = &policy["spec"]["matchConstraints"]["resourceRules"][0];
        assert_eq!(rules["resources"], resources);
        let policy_text = policy.to_string();
        assert!(policy_text.contains(
            "request.userInfo.extra[?'authentication.kubernetes.io/node-name'][0].orValue('')"
        ));
    }
}

/// The overlay's JSON patch: the agent's command line with the directory source.
fn overlay_command() -> Vec<String> {
    let k = overlay_yaml("kustomization.yaml");
    assert_eq!(
        k["resources"],
        serde_json::json!(["../../base", "configmap.yaml"])
    );
    let patch = k["patches"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["patch"].as_str())
        .find(|p| p.contains("/command"))
        .expect("a patch of the command");
    let ops: Value = serde_saphyr::from_str(patch).unwrap();
    assert_eq!(ops[0]["op"], "replace");
    assert_eq!(ops[0]["path"], "/spec/template/spec/containers/0/command");
    ops[0]["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn overlay_configmap_source_mounts_every_key_and_reads_them() {
    let cmdline = overlay_command();
    let args: Vec<&str> = cmdline.iter().map(String::as_str).collect();
    let base = daemonset();
    let base_args = command(agent_container(&base));
    // The same agent, but the directory source, and no Kubernetes flags.
    assert_eq!(&args[..2], ["tollgate", "run"]);
    assert!(!args.contains(&"--node-name"));
    for f in [
        "--pin-dir",
        "--state-dir",
        "--admin",
        "--interface",
        "--tls-secrets-dir",
    ] {
        assert_eq!(flag(&args, f), flag(&base_args, f), "{f}");
    }
    // The base's container 0 is the agent (the JSON patch addresses it by index).
    assert_eq!(
        base["spec"]["template"]["spec"]["containers"][0]["name"],
        "tollgate"
    );

    // The policies: every key of the ConfigMap is mounted (subPath) as a file directly in the
    // --source directory; a key without a mount would be silently ignored.
    let source = flag(&args, "--source");
    assert_eq!(source, "/etc/tollgate/policies");
    let patch = overlay_yaml("daemonset-patch.yaml");
    assert_eq!(
        patch["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );
    let (_, volume) = mount(&patch, agent_container(&patch), "policies");
    let cm = overlay_yaml("configmap.yaml");
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
    let mounts: Vec<&Value> = agent_container(&patch)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "policies")
        .collect();
    let keys: Vec<&String> = cm["data"]
        .as_object()
        .expect("ConfigMap data")
        .keys()
        .collect();
    assert!(!keys.is_empty());
    for key in &keys {
        assert!(
            key.ends_with(".yaml") || key.ends_with(".yml"),
            "ConfigMap key {key} is not read by the agent (*.yaml, *.yml only)"
        );
        let m = mounts
            .iter()
            .find(|m| m["subPath"] == key.as_str())
            .unwrap_or_else(|| panic!("ConfigMap key {key} is not mounted"));
        assert_eq!(m["mountPath"], format!("{source}/{key}"));
        assert_eq!(m["readOnly"], true);
    }
    assert_eq!(mounts.len(), keys.len(), "a policies mount names no key");
}

/// examples/edge.yaml, as the ConfigMap ships it: in audit mode (see configmap.yaml for why).
fn edge_in_audit_mode() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/edge.yaml");
    let edge = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        edge.matches("\n  mode: enforce\n").count(),
        1,
        "{}",
        path.display()
    );
    edge.replace("\n  mode: enforce\n", "\n  mode: audit\n")
}

#[test]
fn install_configmap_is_the_edge_example_in_audit_mode() {
    let cm = overlay_yaml("configmap.yaml");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "tollgate-policies");
    assert_eq!(cm["data"]["edge.yaml"], edge_in_audit_mode());
}

/// What the agent does with the mounted policies: read the --source directory holding the
/// ConfigMap's keys as regular files (the subPath mounts), and compile them for eth0.
#[test]
fn install_policies_compile_as_the_agent_reads_them() {
    let cm = overlay_yaml("configmap.yaml");
    let dir = tempfile::tempdir().unwrap();
    for (key, content) in cm["data"].as_object().unwrap() {
        std::fs::write(dir.path().join(key), content.as_str().unwrap()).unwrap();
    }
    let docs = tollgate_source::dir::read_dir(dir.path()).unwrap();
    assert_eq!(docs.files.len(), cm["data"].as_object().unwrap().len());
    let snapshot = tollgate_compile::snapshot::compile_documents(&docs, Some(&["eth0".to_owned()]))
        .unwrap_or_else(|e| panic!("the ConfigMap's policies do not compile: {e}"));
    assert_eq!(snapshot.policies.len(), 1);
}

/// The demo's policy (and so the install's) lets IPv6 neighbour discovery through: with
/// `defaultAction: deny`, dropping it would make the TCP over IPv6 it allows time out.
#[test]
fn the_example_policy_admits_ipv6_neighbour_discovery_and_has_no_warnings() {
    use tollgate_compile::l4::packet::{Outcome, Packet, L4};
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let docs = tollgate_source::dir::read_dir(&examples).unwrap();
    let snapshot = tollgate_compile::snapshot::compile_documents(&docs, Some(&["eth0".to_owned()]))
        .unwrap_or_else(|e| panic!("examples/ does not compile: {e}"));
    for icmp_type in tollgate_compile::l4::warnings::NEIGHBOUR_DISCOVERY {
        for src in ["fe80::1", "::", "2001:db8:1::7"] {
            let packet = Packet {
                src: src.parse().unwrap(),
                protocol: 58,
                l4: L4::IcmpType(icmp_type),
            };
            let decision = snapshot.l4.decide("eth0", &packet);
            assert_eq!(
                decision.outcome,
                Outcome::Pass,
                "ICMPv6 type {icmp_type} from {src}: {decision:?}"
            );
        }
    }
    assert!(
        snapshot.warnings.is_empty(),
        "examples/ draws warnings: {:#?}",
        snapshot.warnings
    );
}

/// Why the policies are subPath mounts: the kubelet's layout of a ConfigMap volume (keys are
/// symbolic links through `..data` into a hidden timestamped directory) gives the agent no
/// policy file, since it skips symbolic links and hidden entries. If this starts failing, the
/// source reader follows such links now: mount the ConfigMap as a directory instead (its
/// updates then reach the agent without a restart) and drop the subPaths.
#[cfg(unix)]
#[test]
fn install_configmap_directory_layout_is_invisible_to_the_agent() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("..2025_01_01_00_00_00.000000000");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("edge.yaml"), edge_in_audit_mode()).unwrap();
    symlink("..2025_01_01_00_00_00.000000000", dir.path().join("..data")).unwrap();
    symlink("..data/edge.yaml", dir.path().join("edge.yaml")).unwrap();
    let docs = tollgate_source::dir::read_dir(dir.path()).unwrap();
    assert!(
        docs.files.is_empty(),
        "read {:?}",
        docs.files.iter().map(|f| &f.path).collect::<Vec<_>>()
    );
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

#[test]
fn install_controller_runs_two_unprivileged_replicas_with_probes_and_valid_flags() {
    let resources = kustomization_resources();
    for name in [
        "controller-serviceaccount.yaml",
        "controller-rbac.yaml",
        "controller-deployment.yaml",
    ] {
        assert!(
            resources.iter().any(|r| r == name),
            "{name} is not installed"
        );
    }
    let d = install_yaml("controller-deployment.yaml");
    assert_eq!(d["kind"], "Deployment");
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "tollgate-controller");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "tollgate");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    // The command parses as the binary's own command line, and the probes reach its admin port.
    let args = command(c);
    let expanded: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("$(POD_NAMESPACE)", "tollgate-system")
                .replace("$(POD_NAME)", "p")
        })
        .collect();
    use clap::Parser as _;
    let cli = gateway_user::cli::Cli::try_parse_from(&expanded)
        .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
    let gateway_user::cli::Command::Controller(parsed) = cli.command else {
        panic!("not `tollgate controller`: {args:?}");
    };
    let port = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "admin")
        .expect("a port named admin");
    assert_eq!(port["containerPort"], parsed.admin_address.port());
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "admin");
    }
    assert_eq!(parsed.lease_name, "tollgate-controller");
    for var in ["POD_NAME", "POD_NAMESPACE"] {
        assert!(env(c, var)["valueFrom"]["fieldRef"]["fieldPath"].is_string());
    }
}

#[test]
fn install_controller_rbac_writes_only_status_and_its_own_lease() {
    let docs = yaml_docs(&install_dir().join("controller-rbac.yaml"));
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let mut read: Vec<String> = Vec::new();
    let mut patched: Vec<String> = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let resources: Vec<&str> = rule["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let writes = verbs
            .iter()
            .any(|v| !matches!(*v, "get" | "list" | "watch"));
        if writes {
            assert_eq!(verbs, ["patch"], "{rule}");
            assert!(resources.iter().all(|r| r.ends_with("/status")), "{rule}");
            patched.extend(resources.iter().map(|r| r.to_string()));
        } else {
            read.extend(resources.iter().map(|r| r.to_string()));
        }
    }
    // Both route kinds are read and their status written.
    for kind in ["httproutes", "grpcroutes"] {
        assert!(
            read.iter().any(|r| r == kind),
            "{kind} is not read: {read:?}"
        );
        assert!(
            patched.contains(&format!("{kind}/status")),
            "{kind}/status is not written: {patched:?}"
        );
    }
    let lease = docs.iter().find(|d| d["kind"] == "Role").expect("a Role");
    assert_eq!(lease["metadata"]["namespace"], "tollgate-system");
    for rule in lease["rules"].as_array().unwrap() {
        assert_eq!(
            rule["apiGroups"],
            serde_json::json!(["coordination.k8s.io"])
        );
        assert_eq!(rule["resources"], serde_json::json!(["leases"]));
    }
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .unwrap();
    assert_eq!(binding["subjects"][0]["name"], "tollgate-controller");
}
