//! `GatewayClass` and `ReferenceGrant` (Kubernetes Gateway API): which Gateways are Tollgate's,
//! and which cross-namespace references their owners allowed. Shapes are the upstream ones for
//! the fields Tollgate reads; the CRDs are the Gateway API's own.
use kube::CustomResource;

use crate::{Located, Object};
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

/// The ReferenceGrants of a revision: whether an object of one namespace may refer to an
/// object of another. A reference within a namespace needs none. The compiler resolves
/// references with it, and the Kubernetes source decides with it which Secrets to read.
#[derive(Debug, Default)]
pub struct Grants<'a> {
    grants: Vec<(&'a str, &'a ReferenceGrant)>,
}

/// The object that refers: its group, kind and namespace.
pub struct Referrer<'a> {
    /// API group (`gateway.networking.k8s.io`).
    pub group: &'a str,
    /// Kind (`HTTPRoute`, `Gateway`).
    pub kind: &'a str,
    /// Namespace.
    pub namespace: &'a str,
}

impl<'a> Grants<'a> {
    /// The ReferenceGrants among `objects`.
    pub fn of(objects: impl IntoIterator<Item = &'a Located<Object>>) -> Grants<'a> {
        Grants {
            grants: objects
                .into_iter()
                .filter_map(|o| match &o.value {
                    Object::ReferenceGrant(g) => Some((o.value.namespace().unwrap_or_default(), g)),
                    _ => None,
                })
                .collect(),
        }
    }

    /// Whether `from` may refer to the object `group`/`kind` `namespace/name`: always within
    /// a namespace, otherwise when a ReferenceGrant in the target's namespace names both
    /// (group and kind exactly, the name when the grant gives one).
    pub fn permits(
        &self,
        from: &Referrer<'_>,
        group: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> bool {
        if from.namespace == namespace {
            return true;
        }
        self.grants.iter().any(|(ns, g)| {
            *ns == namespace
                && g.spec.from.iter().any(|f| {
                    f.group == from.group && f.kind == from.kind && f.namespace == from.namespace
                })
                && g.spec.to.iter().any(|t| {
                    t.group == group
                        && t.kind == kind
                        && t.name.as_deref().is_none_or(|n| n == name)
                })
        })
    }
}
