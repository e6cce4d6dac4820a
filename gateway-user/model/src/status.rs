//! The `status` of Tollgate's kinds: what the cluster is told about each object, never what the
//! agent reads. The CRDs (`manifests/crds/`) declare these schemas under a status subresource,
//! so that status is written through `/status` and the API server keeps the fields (it prunes
//! whatever a schema does not declare).
//!
//! The policy kinds' Rust types (`L4Policy`, `AuthPolicy`, ...) deliberately carry no status
//! field: the agent parses each object strictly, and a status it cannot read (written by a newer
//! controller, say) must never make it refuse a policy. `gateway-user/src/cli/crds.rs` adds these
//! schemas to the generated CRDs instead. `TollgateNode` (module [`crate::node`]) is all status,
//! and carries it as a typed field.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The status of a policy attached to Gateway API objects (`AuthPolicy`, `RateLimitPolicy`,
/// `BackendTrafficPolicy`): Gateway API's `PolicyStatus` (GEP-713), one entry per ancestor (the
/// Gateway a targeted route is attached to) and controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// One entry per ancestor the policy applies through, and per controller, with that
    /// controller's conditions (`Accepted`, `ResolvedRefs`, ...). At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ancestors: Vec<PolicyAncestorStatus>,
}

/// The conditions one controller reports for a policy through one ancestor.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    /// The ancestor (usually a Gateway, or one of its listeners) these conditions are about.
    pub ancestor_ref: AncestorReference,
    /// The controller that wrote this entry (`tollgate.dev/gateway-controller`).
    pub controller_name: String,
    /// `Accepted` (the policy is valid and applies), `ResolvedRefs`, and the like, each with
    /// the generation of the policy it was computed from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A reference to an ancestor of a policy: Gateway API's `ParentReference`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AncestorReference {
    /// API group of the ancestor (`gateway.networking.k8s.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the ancestor (`Gateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace of the ancestor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the ancestor.
    pub name: String,
    /// A listener of the ancestor, when the conditions are about that listener only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// A port of the ancestor, when the conditions are about that port only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// The status of an `L4Policy`: how many nodes enforce which generation of it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L4PolicyStatus {
    /// The generation of the policy the counts below are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes the policy applies to (its `nodeSelector` matches them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_selected: Option<i32>,
    /// Nodes that enforce `observedGeneration` of the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_enforcing: Option<i32>,
    /// `Accepted` (the policy compiles) and `Programmed` (every selected node enforces it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The status of a `Backend`: whether its endpoints were accepted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendStatus {
    /// `Accepted` (the endpoints are valid and used by the routes that name the Backend), with
    /// the generation it was computed from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
