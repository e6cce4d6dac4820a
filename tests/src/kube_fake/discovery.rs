//! `/version` and the legacy discovery documents (`/api`, `/api/v1`, `/apis`, `/apis/{g}`,
//! `/apis/{g}/{v}`), built from the registered kinds, for clients that discover before they
//! call (kube's `Discovery`, `kubectl`).

use serde_json::{json, Value};

use super::Kind;

/// `/version`: the oldest API server Tollgate supports.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-tollgate-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

fn group_versions<'a>(kinds: &'a [Kind], group: &str) -> Vec<&'a str> {
    let mut versions: Vec<&str> = Vec::new();
    for k in kinds.iter().filter(|k| k.group == group) {
        if !versions.contains(&k.version.as_str()) {
            versions.push(&k.version);
        }
    }
    versions
}

fn group_doc(kinds: &[Kind], group: &str) -> Option<Value> {
    let versions = group_versions(kinds, group);
    let first = versions.first()?;
    let entry = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions.iter().map(|v| entry(v)).collect::<Vec<_>>(),
        "preferredVersion": entry(first),
    }))
}

/// `/apis`.
pub fn groups(kinds: &[Kind]) -> Value {
    let mut names: Vec<&str> = Vec::new();
    for k in kinds.iter().filter(|k| !k.group.is_empty()) {
        if !names.contains(&k.group.as_str()) {
            names.push(&k.group);
        }
    }
    let docs: Vec<Value> = names
        .iter()
        .filter_map(|g| group_doc(kinds, g))
        .map(|mut g| {
            if let Some(m) = g.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            g
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": docs})
}

/// `/apis/{group}`.
pub fn group(kinds: &[Kind], group: &str) -> Option<Value> {
    group_doc(kinds, group)
}

/// `/api/v1` or `/apis/{group}/{version}`.
pub fn resources(kinds: &[Kind], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for k in kinds
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        resources.push(json!({
            "name": k.plural,
            "singularName": k.kind.to_lowercase(),
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        }));
        if k.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    // The core group always exists on a real server, even when a test registers no core kind.
    if resources.is_empty() && !(group.is_empty() && version == "v1") {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
