//! The overlay `manifests/install/overlays/configmap-source/` (policies from a ConfigMap): its
//! patch of the agent's command line and mounts, its ConfigMap (the edge example in audit
//! mode), and what the agent makes of those policies. Apart from the base because it is the
//! other way to run the agent (the directory source).

use std::path::PathBuf;

use serde_json::Value;

use crate::objects::{agent_container, command, daemonset, flag, mount, overlay_yaml};

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
