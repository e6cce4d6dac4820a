//! `tollgate crds`: the CustomResourceDefinitions of every kind, generated from the Rust types
//! (so the CRDs can never disagree with what the agent parses). The committed copy in
//! `manifests/crds/` is checked against this output by a test.
use crate::model::l4::L4Policy;
use kube::CustomResourceExt;

/// Where the generated CRDs are committed, relative to the workspace root.
pub const CRDS_PATH: &str = "manifests/crds/l4policy.yaml";

/// The CRD YAML of every kind, as one multi-document stream.
pub fn crds_yaml() -> String {
    let crds = [L4Policy::crd()];
    let mut out = String::from("# Generated from the Rust types in gateway-user/src/model/ by `tollgate crds`; do not edit.\n");
    for crd in crds {
        out.push_str("---\n");
        // Serializing a CustomResourceDefinition cannot fail: it is plain data with string keys.
        out.push_str(&serde_saphyr::to_string(&crd).expect("a CRD serializes to YAML"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn committed_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(CRDS_PATH)
    }

    /// Set `TOLLGATE_UPDATE_CRDS=1` to rewrite the committed file instead of comparing.
    #[test]
    fn committed_crds_are_not_stale() {
        let path = committed_path();
        let generated = crds_yaml();
        if std::env::var_os("TOLLGATE_UPDATE_CRDS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is stale or missing: the CRDs are generated from the Rust types in gateway-user/src/model/.\n\
             Regenerate it with `cargo run -p gateway-user -- crds > {CRDS_PATH}` \
             (or `cargo xtask crds`, or TOLLGATE_UPDATE_CRDS=1 cargo test -p gateway-user --lib crds) and commit it.",
            path.display()
        );
    }

    #[test]
    fn the_crd_is_cluster_scoped_and_documents_every_field() {
        let crd = L4Policy::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["l4p".to_string()][..])
        );
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        let mut undocumented = Vec::new();
        fn walk(path: &str, node: &serde_json::Value, undocumented: &mut Vec<String>) {
            if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
                for (name, child) in props {
                    let here = format!("{path}.{name}");
                    if child.get("description").is_none() {
                        undocumented.push(here.clone());
                    }
                    // Kubernetes' own types (nodeSelector) document themselves.
                    if name != "nodeSelector" {
                        walk(&here, child, undocumented);
                    }
                }
            }
            if let Some(items) = node.get("items") {
                walk(path, items, undocumented);
            }
        }
        walk("spec", spec, &mut undocumented);
        assert!(
            undocumented.is_empty(),
            "fields without a doc comment: {undocumented:?}"
        );
        let protocol = &spec["properties"]["rules"]["items"]["properties"]["protocol"];
        assert_eq!(
            protocol["enum"],
            serde_json::json!(["TCP", "UDP", "ICMP", "ICMPv6"]),
            "{protocol}"
        );
    }

    #[test]
    fn the_generated_yaml_reads_back_as_the_crd() {
        let yaml = crds_yaml();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs, vec![serde_json::to_value(L4Policy::crd()).unwrap()]);
    }
}
