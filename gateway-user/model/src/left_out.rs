//! Objects left out of a revision while the rest of it is enforced (Gateway API failure
//! isolation): an L7 object that parses as YAML, names its kind and name, and then fails its
//! own checks is left out on its own. What cannot be isolated refuses the revision instead: a
//! document that cannot be read (its objects cannot be known), any L4Policy problem (a partial
//! firewall is worse than the last good one), and a policy whose targets cannot be read (the
//! routes it guards would be served without it).
use serde::Serialize;

use crate::PolicyError;

/// One object left out of a revision, with every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftOut {
    /// Kind, as written in `kind:`.
    pub kind: &'static str,
    /// Namespace (the default one when the object names none).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// File path relative to the source root.
    pub file: String,
    /// `Kind/name` (or `Kind/namespace/name`), as error messages name it.
    pub object: String,
    /// Every problem found in the object (never empty).
    pub problems: Vec<PolicyError>,
    /// For AuthPolicy, RateLimitPolicy and BackendTrafficPolicy: the names of the HTTPRoutes
    /// (of the policy's namespace) it targets. Those routes answer 500 rather than serve
    /// without the policy meant to guard them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// For a Gateway: its `spec.gatewayClassName`, when it can be read. A broken Gateway of
    /// another controller's class is none of this agent's business, and is not reported.
    #[serde(skip)]
    pub gateway_class: Option<String>,
}

/// Whether objects of `kind` are isolated (left out on their own when broken): every L7 kind.
/// L4Policy is not: any L4 problem refuses the whole revision.
pub fn isolated_kind(kind: &str) -> bool {
    kind != "L4Policy"
}

/// Whether `kind` is a policy that guards the HTTPRoutes of its `spec.targetRefs`.
pub fn guards_routes(kind: &str) -> bool {
    matches!(
        kind,
        "AuthPolicy" | "RateLimitPolicy" | "BackendTrafficPolicy"
    )
}

/// The route names of a policy's raw `spec.targetRefs` (each entry's `name`), `None` when they
/// cannot be read (not a list, or an entry without a string name). No `targetRefs`: none.
pub fn raw_targets(value: &serde_json::Value) -> Option<Vec<String>> {
    let Some(refs) = value.get("spec").and_then(|s| s.get("targetRefs")) else {
        return Some(Vec::new());
    };
    let serde_json::Value::Array(list) = refs else {
        return None;
    };
    list.iter()
        .map(|r| match r.get("name") {
            Some(serde_json::Value::String(n)) => Some(n.clone()),
            _ => None,
        })
        .collect()
}

/// The raw `spec.gatewayClassName` of a Gateway, when it is a string.
pub fn raw_gateway_class(value: &serde_json::Value) -> Option<String> {
    value
        .get("spec")?
        .get("gatewayClassName")?
        .as_str()
        .map(str::to_owned)
}
