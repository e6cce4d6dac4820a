//! `tollgate crds`: the CustomResourceDefinitions of Tollgate's own kinds, generated from the
//! Rust types (so the CRDs can never disagree with what the agent parses). The committed copies
//! in `manifests/crds/` (one file per kind) are checked against this output by a test. The
//! Gateway API kinds (`Gateway`, `HTTPRoute`) are the Gateway API's own CRDs: install them from
//! its release; they are never generated here.
//!
//! Every CRD has a status subresource. `TollgateNode` carries its status as a typed field; the
//! policy kinds do not (the agent parses them strictly and must never refuse a policy for a
//! status it cannot read), so their status schemas (`tollgate_model::status`) are added here.
use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceSubresourceStatus, CustomResourceSubresources,
    JSONSchemaProps,
};
use kube::CustomResourceExt;
use schemars::JsonSchema;
use tollgate_model::auth::AuthPolicy;
use tollgate_model::backend::Backend;
use tollgate_model::l4::L4Policy;
use tollgate_model::node::TollgateNode;
use tollgate_model::ratelimit::RateLimitPolicy;
use tollgate_model::status::{BackendStatus, L4PolicyStatus, PolicyStatus};
use tollgate_model::traffic::BackendTrafficPolicy;

/// Where the generated CRDs are committed, relative to the workspace root.
pub const CRDS_DIR: &str = "manifests/crds";

const HEADER: &str =
    "# Generated from the Rust types in gateway-user/model/src/ by `tollgate crds`; do not edit.\n";

/// Every CRD, with the name of its file in [`CRDS_DIR`].
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    let crds = vec![
        (
            "l4policy.yaml",
            with_status::<L4PolicyStatus>(L4Policy::crd()),
        ),
        ("backend.yaml", with_status::<BackendStatus>(Backend::crd())),
        (
            "ratelimitpolicy.yaml",
            with_status::<PolicyStatus>(RateLimitPolicy::crd()),
        ),
        (
            "authpolicy.yaml",
            with_status::<PolicyStatus>(AuthPolicy::crd()),
        ),
        (
            "backendtrafficpolicy.yaml",
            with_status::<PolicyStatus>(BackendTrafficPolicy::crd()),
        ),
        ("tollgatenode.yaml", TollgateNode::crd()),
    ];
    crds.into_iter()
        .map(|(file, crd)| (file, with_condition_checks(crd)))
        .collect()
}

/// `crd` with the checks of `metav1.Condition`'s own markers on every `conditions` list
/// (k8s-openapi's schema of the type has none): a status of `True`, `False` or `Unknown`, a
/// CamelCase reason of 1 to 1,024 characters, a message of at most 32,768, a type of at most
/// 316, a non-negative `observedGeneration`. The API server then refuses a malformed condition
/// from whoever writes the status, as it does for the built-in kinds; what the agent and the
/// controller write keeps within them (their reasons are constants, messages are bounded).
fn with_condition_checks(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(node: &mut serde_json::Value) {
        let Some(object) = node.as_object_mut() else {
            return;
        };
        if let Some(props) = object.get_mut("properties").and_then(|p| p.as_object_mut()) {
            if let Some(fields) = props
                .get_mut("conditions")
                .and_then(|c| c.get_mut("items"))
                .and_then(|i| i.get_mut("properties"))
                .and_then(|p| p.as_object_mut())
            {
                let checks = [
                    (
                        "status",
                        serde_json::json!({"enum": ["True", "False", "Unknown"]}),
                    ),
                    (
                        "reason",
                        serde_json::json!({"minLength": 1, "maxLength": 1024,
                            "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"}),
                    ),
                    ("message", serde_json::json!({"maxLength": 32768})),
                    (
                        "type",
                        serde_json::json!({"maxLength": 316,
                            "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"}),
                    ),
                    ("observedGeneration", serde_json::json!({"minimum": 0})),
                ];
                for (field, check) in checks {
                    if let (Some(schema), Some(check)) = (
                        fields.get_mut(field).and_then(|f| f.as_object_mut()),
                        check.as_object(),
                    ) {
                        schema.extend(check.clone());
                    }
                }
            }
        }
        for child in object.values_mut() {
            match child {
                serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
                other => walk(other),
            }
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD is plain data");
    walk(&mut value);
    serde_json::from_value(value).expect("the checks are valid JSONSchemaProps fields")
}

/// `crd` with a status subresource whose schema is `S`'s, generated with the settings
/// kube-derive uses for a CRD (OpenAPI 3, inlined, structural), so that it reads like the
/// schema of a `#[kube(status = ...)]` type.
fn with_status<S: JsonSchema>(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .with_transform(kube::core::schema::OptionalEnum)
        .with_transform(kube::core::schema::OptionalIntOrString)
        .into_generator();
    let mut schema: JSONSchemaProps = serde_json::to_value(generator.into_root_schema_for::<S>())
        .and_then(serde_json::from_value)
        .expect("a status type's schema is a valid JSONSchemaProps");
    // A root schema is titled with the Rust type's name; a property of the CRD's is not.
    schema.title = None;
    for version in &mut crd.spec.versions {
        let root = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .expect("kube-derive generates a schema for every version");
        root.properties
            .get_or_insert_with(Default::default)
            .insert("status".to_owned(), schema.clone());
        version.subresources = Some(CustomResourceSubresources {
            status: Some(CustomResourceSubresourceStatus(serde_json::json!({}))),
            scale: None,
        });
    }
    crd
}

fn yaml(crd: &CustomResourceDefinition) -> String {
    // Serializing a CustomResourceDefinition cannot fail: it is plain data with string keys.
    format!(
        "---\n{}",
        serde_saphyr::to_string(crd).expect("a CRD serializes to YAML")
    )
}

/// The file content for one CRD.
pub fn crd_file(crd: &CustomResourceDefinition) -> String {
    format!("{HEADER}{}", yaml(crd))
}

/// The CRD YAML of every kind, as one multi-document stream.
pub fn crds_yaml() -> String {
    let mut out = String::from(HEADER);
    for (_, crd) in crds() {
        out.push_str(&yaml(&crd));
    }
    out
}

/// Writes one file per kind into `dir`; returns the paths written.
pub fn write_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (file, crd) in crds() {
        let path = dir.join(file);
        std::fs::write(&path, crd_file(&crd))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(CRDS_DIR)
    }

    /// Set `TOLLGATE_UPDATE_CRDS=1` to rewrite the committed files instead of comparing.
    #[test]
    fn committed_crds_are_not_stale() {
        let dir = committed_dir();
        if std::env::var_os("TOLLGATE_UPDATE_CRDS").is_some() {
            write_dir(&dir).unwrap_or_else(|e| panic!("write {}: {e}", dir.display()));
        }
        for (file, crd) in crds() {
            let path = dir.join(file);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == crd_file(&crd),
                "{} is stale or missing: the CRDs are generated from the Rust types in gateway-user/model/src/.\n\
                 Regenerate them with `cargo run -p gateway-user -- crds --out-dir {CRDS_DIR}` \
                 (or `cargo xtask crds`, or TOLLGATE_UPDATE_CRDS=1 cargo test -p gateway-user --lib crds) and commit them.",
                path.display()
            );
        }
    }

    fn undocumented_fields(crd: &CustomResourceDefinition) -> Vec<String> {
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
        undocumented
    }

    /// Every CRD's conditions carry `metav1.Condition`'s checks, so that the API server
    /// refuses a malformed one (a status of `yes`, a reason with spaces).
    #[test]
    fn conditions_are_checked_as_kubernetes_checks_its_own() {
        for (file, crd) in crds() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            // Wherever they are (a policy's are under `ancestors[]`), and at least one list.
            fn lists<'a>(node: &'a serde_json::Value, found: &mut Vec<&'a serde_json::Value>) {
                if let Some(c) = node.pointer("/properties/conditions") {
                    found.push(c);
                }
                match node {
                    serde_json::Value::Object(o) => o.values().for_each(|v| lists(v, found)),
                    serde_json::Value::Array(a) => a.iter().for_each(|v| lists(v, found)),
                    _ => {}
                }
            }
            let mut found = Vec::new();
            lists(
                &schema["openAPIV3Schema"]["properties"]["status"],
                &mut found,
            );
            assert!(!found.is_empty(), "{file}: no conditions in its status");
            for conditions in found {
                let fields = &conditions["items"]["properties"];
                assert_eq!(
                    fields["status"]["enum"],
                    serde_json::json!(["True", "False", "Unknown"]),
                    "{file}: {conditions}"
                );
                assert_eq!(fields["reason"]["minLength"], 1, "{file}");
                assert_eq!(fields["reason"]["maxLength"], 1024, "{file}");
                assert_eq!(fields["message"]["maxLength"], 32768, "{file}");
                assert_eq!(fields["observedGeneration"]["minimum"], 0.0, "{file}");
                assert_eq!(
                    fields["reason"]["pattern"], "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                    "{file}"
                );
            }
        }
    }

    #[test]
    fn the_crd_is_cluster_scoped_and_documents_every_field() {
        let crd = L4Policy::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&["l4p".to_string()][..])
        );
        assert_eq!(
            undocumented_fields(&crd),
            Vec::<String>::new(),
            "fields without a doc comment"
        );
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let spec = &schema["openAPIV3Schema"]["properties"]["spec"];
        let protocol = &spec["properties"]["rules"]["items"]["properties"]["protocol"];
        assert_eq!(
            protocol["enum"],
            serde_json::json!(["TCP", "UDP", "ICMP", "ICMPv6"]),
            "{protocol}"
        );
    }

    #[test]
    fn the_backend_crd_is_namespaced_and_documents_every_field() {
        let crd = Backend::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.group, "tollgate.dev");
        assert_eq!(
            undocumented_fields(&crd),
            Vec::<String>::new(),
            "fields without a doc comment"
        );
    }

    #[test]
    fn the_generated_yaml_reads_back_as_the_crds_and_names_no_gateway_api_kind() {
        let yaml = crds_yaml();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(
            docs,
            crds()
                .iter()
                .map(|(_, crd)| serde_json::to_value(crd).unwrap())
                .collect::<Vec<_>>()
        );
        assert_eq!(docs.len(), 6);
        // Only Tollgate's own kinds: the Gateway API's CRDs come from its release.
        // (RateLimitPolicy's docs name the Gateway API group its targets are in.)
        for doc in &docs {
            assert_eq!(doc["spec"]["group"], "tollgate.dev", "{}", doc["metadata"]);
        }
        assert!(!yaml.contains("kind: HTTPRoute\n") && !yaml.contains("kind: Gateway\n"));
    }

    #[test]
    fn every_crd_has_a_status_subresource_with_a_documented_status_schema() {
        for (file, crd) in crds() {
            let version = &crd.spec.versions[0];
            let subresources = version.subresources.as_ref();
            assert!(
                subresources.and_then(|s| s.status.as_ref()).is_some(),
                "{file}: no status subresource"
            );
            let schema = serde_json::to_value(&version.schema).unwrap();
            let status = &schema["openAPIV3Schema"]["properties"]["status"];
            assert_eq!(status["type"], "object", "{file}: {status}");
            assert!(status["description"].is_string(), "{file}: {status}");
            assert!(status.get("title").is_none(), "{file}: {status}");
            let conditions = status["properties"]["conditions"]
                .as_object()
                .or_else(|| {
                    status["properties"]["ancestors"]["items"]["properties"]["conditions"]
                        .as_object()
                })
                .unwrap_or_else(|| panic!("{file}: no conditions in {status}"));
            assert_eq!(conditions["x-kubernetes-list-type"], "map", "{file}");
        }
    }

    /// `manifests/crds/kustomization.yaml` (what the install's kustomize base includes) lists
    /// every generated file, and nothing else.
    #[test]
    fn the_crds_kustomization_lists_every_crd() {
        let path = committed_dir().join("kustomization.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let k: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let listed: Vec<&str> = k["resources"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no resources", path.display()))
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let files: Vec<&str> = crds().iter().map(|(f, _)| *f).collect();
        assert_eq!(listed, files, "{}", path.display());
    }

    #[test]
    fn the_backend_traffic_policy_crd_is_namespaced_and_documents_every_field() {
        let crd = BackendTrafficPolicy::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, "backendtrafficpolicies");
        assert_eq!(
            undocumented_fields(&crd),
            Vec::<String>::new(),
            "fields without a doc comment"
        );
    }

    #[test]
    fn the_auth_policy_crd_is_namespaced_and_documents_every_field() {
        let crd = AuthPolicy::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, "authpolicies");
        assert_eq!(
            undocumented_fields(&crd),
            Vec::<String>::new(),
            "fields without a doc comment"
        );
    }

    #[test]
    fn the_rate_limit_policy_crd_is_namespaced_and_documents_every_field() {
        let crd = RateLimitPolicy::crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.plural, "ratelimitpolicies");
        assert_eq!(
            undocumented_fields(&crd),
            Vec::<String>::new(),
            "fields without a doc comment"
        );
    }
}
