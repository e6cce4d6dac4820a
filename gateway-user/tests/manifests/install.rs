//! The install base's agent: the kustomization lists what exists and parses; the DaemonSet
//! agrees with itself (arguments, ports, probes, mounts, the least-privilege security context),
//! with the monitors, the Service, the RBAC and the admission policy. Apart from the overlay and
//! the controller, which change or add to it.

use crate::monitoring::monitor;
use crate::objects::{
    agent_container, assert_listed, command, container, daemonset, env, flag, install_dir,
    install_yaml, is_within, kustomization_resources, mount, named, strings, yaml_docs,
};

#[test]
fn install_kustomization_lists_existing_parsing_files() {
    let resources = kustomization_resources();
    assert!(
        resources.iter().any(|r| r == "../../crds"),
        "the base installs the CRDs"
    );
    assert_listed(
        &resources,
        &[
            "namespace.yaml",
            "serviceaccount.yaml",
            "clusterrole.yaml",
            "clusterrolebinding.yaml",
            "admission-policy.yaml",
            "daemonset.yaml",
            "service.yaml",
            "gatewayclass.yaml",
        ],
    );
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
            } else if name == "events-role.yaml" {
                // The agent's events are written where those of cluster-scoped objects go.
                assert_eq!(
                    doc["metadata"]["namespace"],
                    tollgate_kubernetes::events::EVENTS_NAMESPACE,
                    "{name}"
                );
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
    let port = named(&svc["spec"]["ports"], "admin");
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
    let port = named(&c["ports"], "admin");
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
    // Every container that is given capabilities runs as uid 0: a non-root user would hold
    // them only in its bounding set (Kubernetes sets no ambient capabilities), none effective.
    for c in [init, agent_container(&ds)] {
        assert_eq!(c["securityContext"]["runAsUser"], 0, "{}", c["name"]);
        assert_eq!(c["securityContext"]["runAsGroup"], 0, "{}", c["name"]);
    }
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
        let verbs = strings(&rule["verbs"]);
        let resources = strings(&rule["resources"]);
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
            other => panic!("writes to {other:?}: {rule}"),
        };
        assert_eq!(verbs, expected, "{rule}");
        assert_eq!(
            rule["apiGroups"],
            serde_json::json!(["tollgate.dev"]),
            "{rule}"
        );
        writes.push(resources.join(","));
    }
    writes.sort();
    assert_eq!(
        writes,
        ["tollgatenodes", "tollgatenodes/status"],
        "every write the agent makes is granted, once"
    );
    // Events: created and their series patched, in the one namespace the agent writes them
    // to, by a Role bound to the agent's account there.
    let events = yaml_docs(&install_dir().join("events-role.yaml"));
    let ns = tollgate_kubernetes::events::EVENTS_NAMESPACE;
    let events_role = events.iter().find(|d| d["kind"] == "Role").expect("a Role");
    assert_eq!(events_role["metadata"]["namespace"], ns);
    assert_eq!(
        events_role["rules"],
        serde_json::json!([{ "apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"] }])
    );
    let events_binding = events
        .iter()
        .find(|d| d["kind"] == "RoleBinding")
        .expect("a RoleBinding");
    assert_eq!(events_binding["metadata"]["namespace"], ns);
    assert_eq!(events_binding["roleRef"]["kind"], "Role");
    assert_eq!(
        events_binding["roleRef"]["name"],
        events_role["metadata"]["name"]
    );
    let kustomization = std::fs::read_to_string(install_dir().join("kustomization.yaml")).unwrap();
    assert!(
        kustomization.contains("- events-role.yaml"),
        "{kustomization}"
    );
    // Nodes, read only: the own Node's labels (a watch by name: list, watch), the Node count
    // (list), and the own Node's uid for the TollgateNode's ownerReference (get,
    // kubernetes/src/report.rs).
    let nodes = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| strings(&r["resources"]) == ["nodes"])
        .expect("a rule for nodes");
    assert_eq!(nodes["apiGroups"], serde_json::json!([""]), "{nodes}");
    assert_eq!(
        strings(&nodes["verbs"]),
        ["get", "list", "watch"],
        "{nodes}"
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
    assert_eq!(
        ds["spec"]["template"]["spec"]["serviceAccountName"],
        sa["metadata"]["name"]
    );
    assert_eq!(
        events_binding["subjects"][0]["name"],
        sa["metadata"]["name"]
    );
    assert_eq!(
        events_binding["subjects"][0]["namespace"],
        sa["metadata"]["namespace"]
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
        // The agent's ServiceAccount by name, in any namespace (an overlay may move the
        // install): `system:serviceaccount:` and `:NAME`, both required.
        let name_part = format!(":{}", sa["metadata"]["name"].as_str().unwrap());
        assert!(
            condition.contains("request.userInfo.username.startsWith(\"system:serviceaccount:\")")
                && condition.contains(&format!(
                    "request.userInfo.username.endsWith(\"{name_part}\")"
                ))
                && condition.contains("&&"),
            "{condition}"
        );
        let rules = &policy["spec"]["matchConstraints"]["resourceRules"][0];
        assert_eq!(rules["resources"], resources);
        let policy_text = policy.to_string();
        assert!(policy_text.contains(
            "request.userInfo.extra[?'authentication.kubernetes.io/node-name'][0].orValue('')"
        ));
    }
}
