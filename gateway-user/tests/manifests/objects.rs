//! Reading the install manifests (the kustomize base and the overlay) and finding things in
//! them: documents, the DaemonSet's containers, their command lines, mounts and env. Apart from
//! the tests because install.rs, overlay.rs and controller.rs all walk the same objects.

use std::path::PathBuf;

use serde_json::Value;

pub(crate) fn install_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/install/base")
}

fn overlay_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/install/overlays/configmap-source")
}

pub(crate) fn yaml_docs(path: &std::path::Path) -> Vec<Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

pub(crate) fn install_yaml(name: &str) -> Value {
    let docs = yaml_docs(&install_dir().join(name));
    assert_eq!(docs.len(), 1, "{name}: one document expected");
    docs.into_iter().next().unwrap()
}

pub(crate) fn overlay_yaml(name: &str) -> Value {
    let docs = yaml_docs(&overlay_dir().join(name));
    assert_eq!(docs.len(), 1, "{name}: one document expected");
    docs.into_iter().next().unwrap()
}

pub(crate) fn kustomization_resources() -> Vec<String> {
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

pub(crate) fn daemonset() -> Value {
    install_yaml("daemonset.yaml")
}

pub(crate) fn container<'a>(ds: &'a Value, list: &str, name: &str) -> &'a Value {
    ds["spec"]["template"]["spec"][list]
        .as_array()
        .unwrap_or_else(|| panic!("the DaemonSet has {list}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} entry named {name}"))
}

pub(crate) fn agent_container(ds: &Value) -> &Value {
    container(ds, "containers", "tollgate")
}

/// A container's command line.
pub(crate) fn command(container: &Value) -> Vec<&str> {
    container["command"]
        .as_array()
        .expect("the container has a command")
        .iter()
        .map(|a| a.as_str().expect("command arguments are strings"))
        .collect()
}

/// The value following `flag` in `args`.
pub(crate) fn flag<'a>(args: &[&'a str], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| *a == flag)
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
    args.get(i + 1)
        .unwrap_or_else(|| panic!("{flag} has no value"))
}

/// Whether `path` is `dir` or below it (by whole components).
pub(crate) fn is_within(path: &str, dir: &str) -> bool {
    std::path::Path::new(path).starts_with(dir)
}

/// The mount of the volume `name` in `container`, and the volume itself.
pub(crate) fn mount<'a>(ds: &'a Value, container: &'a Value, name: &str) -> (&'a Value, &'a Value) {
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
pub(crate) fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .expect("the container has env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no env {name}"))
}

/// The strings of a list (a rule's verbs or resources); panics when it is not a list of strings.
pub(crate) fn strings(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

/// The entry called `name` of a list of named objects (ports).
pub(crate) fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no entry named {name} in {list}"))
}

/// Fails unless the base's kustomization (its `resources`) lists each of `names`.
pub(crate) fn assert_listed(resources: &[String], names: &[&str]) {
    for name in names {
        assert!(
            resources.iter().any(|r| r == name),
            "kustomization.yaml does not list {name}"
        );
    }
}
