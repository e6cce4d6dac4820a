//! `TollgateNode`: what one node enforces, written by that node's agent (server-side apply to
//! the status subresource, field manager `tollgate-agent`), one cluster-scoped object per node,
//! named like the node. Agents never watch these objects (no N² fan-out); the controller reads
//! them to count the nodes that program a Gateway or enforce an L4Policy. A
//! ValidatingAdmissionPolicy (`manifests/install/base/admission-policy.yaml`) lets each agent
//! write only the object named like its own node.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many refused objects are listed in a node's status; `refusedCount` has them
/// all. Bounds the object's size whatever the cluster holds.
pub const MAX_REFUSED_LISTED: usize = 32;
/// At most this many L4Policies are listed in `notForThisNode`.
pub const MAX_NOT_FOR_THIS_NODE_LISTED: usize = 32;

/// A node's agent. The object carries no settings: everything in it is status.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
// clippy mistakes the repeated `type_ = "string"` of two print columns for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "TollgateNode",
    plural = "tollgatenodes",
    shortname = "tgn",
    doc = "What one node's Tollgate agent enforces (cluster-scoped, named like the node, written by that node's agent).",
    category = "tollgate",
    derive = "PartialEq",
    status = "TollgateNodeStatus",
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.revision"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Refused",
        type_ = "integer",
        json_path = ".status.refusedCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TollgateNodeSpec {}

/// What the node enforces, and since when.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TollgateNodeStatus {
    /// The revision the node enforces: in Kubernetes mode, the resourceVersions it was built
    /// from; with a Git source, the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// When that revision started being enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_at: Option<Time>,
    /// Milliseconds from the change being seen (a watch event, a fetched commit) to the node
    /// enforcing it, for the last revision applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub time_to_enforce_millis: Option<i64>,
    /// How many objects of each kind the enforced revision holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["kind"]))]
    pub objects: Vec<KindCount>,
    /// Objects left out of the enforced revision, with the reason (at most 32; `refusedCount`
    /// counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub refused: Vec<RefusedObject>,
    /// How many objects were refused in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub refused_count: Option<i32>,
    /// The L4Policies of the enforced revision that are not enforced on this node: their
    /// `spec.nodeSelector` does not select its labels (at most 32, sorted by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub not_for_this_node: Vec<String>,
    /// The interfaces the node enforces on, and how the program is attached to each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub interfaces: Vec<NodeInterface>,
    /// The L7 proxy's listening sockets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub listeners: Vec<NodeListener>,
    /// `Ready` (a revision is enforced), `Degraded` (the last attempt was refused or an
    /// interface could not be attached; the last good revision stays enforced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The number of objects of one kind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindCount {
    /// The kind (`L4Policy`, `HTTPRoute`, ...).
    pub kind: String,
    /// How many of them the enforced revision holds.
    #[schemars(range(min = 0))]
    pub count: i32,
}

/// An object left out of the enforced revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefusedObject {
    /// Its kind.
    pub kind: String,
    /// Its namespace (cluster-scoped kinds: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// The field at fault (`spec.rules[2].ports`), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Why it was refused.
    #[schemars(length(max = 1024))]
    pub reason: String,
}

/// How the program is attached to one interface.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeInterface {
    /// The interface's name.
    pub name: String,
    /// `native` (XDP in the driver), `generic` (XDP on the skb path) or `tc` (TC ingress);
    /// omitted while it is not attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_mode: Option<InterfaceAttachMode>,
    /// Why the interface is not attached, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where on an interface the program runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum InterfaceAttachMode {
    /// XDP in the driver.
    Native,
    /// Generic (skb) XDP.
    Generic,
    /// TC ingress.
    Tc,
}

/// One listening socket of the L7 proxy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeListener {
    /// The address and port it listens on (`0.0.0.0:443`).
    pub address: String,
    /// `HTTP` or `HTTPS`.
    pub protocol: String,
    /// The Gateway listeners served on it, as `namespace/gateway/listener`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_listeners: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn a_node_object_round_trips_with_its_status() {
        let mut node = TollgateNode::new("node-a", TollgateNodeSpec {});
        node.status = Some(TollgateNodeStatus {
            revision: Some("l4policies=12,httproutes=40".into()),
            objects: vec![KindCount {
                kind: "L4Policy".into(),
                count: 2,
            }],
            interfaces: vec![NodeInterface {
                name: "eth0".into(),
                attach_mode: Some(InterfaceAttachMode::Native),
                error: None,
            }],
            ..Default::default()
        });
        let json = serde_json::to_value(&node).unwrap();
        assert_eq!(json["status"]["interfaces"][0]["attachMode"], "native");
        assert_eq!(json["spec"], serde_json::json!({}));
        let back: TollgateNode = serde_json::from_value(json).unwrap();
        assert_eq!(back, node);
    }

    #[test]
    fn the_crd_is_cluster_scoped_with_a_status_subresource() {
        let crd = TollgateNode::crd();
        assert_eq!(crd.spec.scope, "Cluster");
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
        let schema = serde_json::to_value(&version.schema).unwrap();
        let refused = &schema["openAPIV3Schema"]["properties"]["status"]["properties"]["refused"];
        assert_eq!(refused["maxItems"], MAX_REFUSED_LISTED);
    }
}
