//! The install base's controller: its Deployment (two unprivileged replicas, probes, a command
//! line the binary parses) and its RBAC (status writes and its own lease only). Apart from the
//! agent's manifests because it is another workload with other rights.

use crate::objects::{
    assert_listed, command, env, install_dir, install_yaml, kustomization_resources, named,
    strings, yaml_docs,
};

#[test]
fn install_controller_runs_two_unprivileged_replicas_with_probes_and_valid_flags() {
    assert_listed(
        &kustomization_resources(),
        &[
            "controller-serviceaccount.yaml",
            "controller-rbac.yaml",
            "controller-deployment.yaml",
        ],
    );
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
    let port = named(&c["ports"], "admin");
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
        let verbs = strings(&rule["verbs"]);
        let resources = strings(&rule["resources"]);
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
    // Every kind whose status the controller writes is read and its status may be patched.
    let written = tollgate_controller::cache::written_resources();
    assert_eq!(
        written.len(),
        tollgate_controller::cache::WRITTEN_KINDS.len()
    );
    for (resource, _) in &written {
        let kind = resource.plural.as_str();
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
