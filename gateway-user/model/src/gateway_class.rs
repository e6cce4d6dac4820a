//! `GatewayClass` and `ReferenceGrant` (Kubernetes Gateway API): which Gateways are Tollgate's,
//! and which cross-namespace references their owners allowed. Shapes are the upstream ones for
//! the fields Tollgate reads; the CRDs are the Gateway API's own.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `controllerName` of Tollgate's GatewayClasses: a Gateway whose class names another
/// controller belongs to another implementation and is ignored.
pub const CONTROLLER_NAME: &str = "tollgate.dev/gateway-controller";

/// A class of Gateways and the controller that implements it (cluster-scoped).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GatewayClass",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayClassSpec {
    /// The controller that manages Gateways of this class (`domain/path`); Tollgate's is
    /// `tollgate.dev/gateway-controller`.
    pub controller_name: String,
    /// Implementation-specific parameters. Tollgate has none: refused when set on one of its
    /// classes, ignored on other controllers' classes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<std::collections::BTreeMap<String, serde_json::Value>>")]
    pub parameters_ref: Option<serde_json::Value>,
    /// Free text for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Lets objects of other namespaces refer to objects of this one (all cross-namespace
/// references but route attachment need one). Without a grant, such a reference does not
/// resolve; removing a grant revokes what it allowed at the next revision.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1beta1",
    kind = "ReferenceGrant",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantSpec {
    /// Who may refer (1-16): any entry suffices.
    pub from: Vec<ReferenceGrantFrom>,
    /// What they may refer to, in this grant's namespace (1-16): any entry suffices.
    pub to: Vec<ReferenceGrantTo>,
}

/// Objects of one kind in one namespace that may refer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantFrom {
    /// API group of the referring kind (`gateway.networking.k8s.io`; `""` is the core group).
    pub group: String,
    /// The referring kind (`HTTPRoute`, `Gateway`).
    pub kind: String,
    /// The referring objects' namespace.
    pub namespace: String,
}

/// Objects of this namespace that may be referred to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReferenceGrantTo {
    /// API group of the kind (`""` for Service and Secret, `tollgate.dev` for Backend).
    pub group: String,
    /// The kind.
    pub kind: String,
    /// Only the object of this name; absent: every object of the kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
