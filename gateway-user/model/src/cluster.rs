//! The Services and EndpointSlices of the cluster (core `v1` and `discovery.k8s.io/v1`), in the
//! compact form the Kubernetes source keeps of them: what an HTTPRoute backendRef to a Service
//! resolves through. Only Kubernetes mode has them ([`crate::Documents::cluster`]); a directory
//! or Git revision has none, and a Service manifest in one is an unknown kind, as any other.
//!
//! Each object keeps only what resolving a backendRef reads (a Service: its type and ports; an
//! EndpointSlice: its Service, address type, ports and each endpoint's first address with its
//! conditions), so that a cluster's endpoints cost the agent little memory (docs/kubernetes.md)
//! and an endpoint change that resolution does not see (a zone, a hint, a node name) is no new
//! revision.
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What the cluster holds that backendRefs to Services resolve through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Every Service, sorted by (namespace, name).
    pub services: Vec<Arc<Service>>,
    /// Every IPv4 and IPv6 EndpointSlice (FQDN slices are not kept), sorted by (namespace,
    /// name).
    pub slices: Vec<Arc<EndpointSlice>>,
    /// This node's `Node` object, when the agent knows its name (`--node-name`): what an
    /// L4Policy's `nodeSelector` is matched against. `None`: the node is unknown (the
    /// controller, or an agent without `--node-name`), and no policy is left out for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeLabels>,
    /// The Secrets and ConfigMaps the policy references that cannot serve what they are
    /// referenced for (missing, unreadable, of the wrong type, without a required key): the
    /// source does not fail the revision for them, the compiler leaves out what references
    /// them (a Gateway listener, the listeners a client CA covers, an AuthPolicy, a Backend),
    /// never serving it without the certificate or credential it names. Sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<Unresolved>,
}

/// A reference to a Secret or ConfigMap that cannot be resolved, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Unresolved {
    /// Namespace of the referenced object.
    pub namespace: String,
    /// Name of the referenced object.
    pub name: String,
    /// What it is read for (which decides its kind and the keys it must hold).
    #[serde(rename = "use")]
    pub use_: crate::references::Use,
    /// Why it cannot be used (`Secret ns/name does not exist (it must hold ...)`).
    pub why: String,
}

impl Cluster {
    /// Why the reference `r` cannot be resolved, when it cannot.
    pub fn unresolved(&self, r: &crate::references::Reference) -> Option<&str> {
        Unresolved::find(&self.unresolved, r)
    }
}

impl Unresolved {
    /// Why the reference `r` cannot be resolved according to `list`, when it cannot.
    pub fn find<'a>(list: &'a [Unresolved], r: &crate::references::Reference) -> Option<&'a str> {
        list.iter()
            .find(|u| u.use_ == r.use_ && u.namespace == r.namespace && u.name == r.name)
            .map(|u| u.why.as_str())
    }
}

/// The labels of the node the agent runs on (its `Node` object, core `v1`). Only the labels
/// are kept: the rest of a Node (its status, which the kubelet rewrites every few seconds)
/// selects nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLabels {
    /// `metadata.name`.
    pub name: Box<str>,
    /// `metadata.labels` (empty when the Node does not exist).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A Service, compact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `metadata.namespace`.
    pub namespace: Box<str>,
    /// `metadata.name`.
    pub name: Box<str>,
    /// `spec.type`.
    #[serde(rename = "type")]
    pub type_: ServiceType,
    /// `spec.ports`.
    pub ports: Box<[ServicePort]>,
}

/// `spec.type` of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceType {
    /// `ClusterIP` (the default), `NodePort` and `LoadBalancer`: endpoints come from the
    /// Service's EndpointSlices.
    ClusterIP,
    /// `NodePort`.
    NodePort,
    /// `LoadBalancer`.
    LoadBalancer,
    /// `ExternalName`: a DNS alias, without endpoints.
    ExternalName,
}

impl ServiceType {
    /// The type of a Service's `spec.type` (absent: `ClusterIP`, the API server's default).
    pub fn parse(value: Option<&str>) -> ServiceType {
        match value {
            Some("NodePort") => ServiceType::NodePort,
            Some("LoadBalancer") => ServiceType::LoadBalancer,
            Some("ExternalName") => ServiceType::ExternalName,
            _ => ServiceType::ClusterIP,
        }
    }
}

/// A transport protocol of a Service or EndpointSlice port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// `TCP` (the default).
    #[serde(rename = "TCP")]
    Tcp,
    /// `UDP`.
    #[serde(rename = "UDP")]
    Udp,
    /// `SCTP`.
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    /// The protocol of a port's `protocol` (absent: `TCP`, the API server's default).
    pub fn parse(value: Option<&str>) -> Protocol {
        match value {
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            _ => Protocol::Tcp,
        }
    }

    /// As the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// `name` (`""` when the Service has a single unnamed port): the name its EndpointSlices'
    /// ports carry.
    pub name: Box<str>,
    /// `port`: what a backendRef's `port` names.
    pub port: u16,
    /// `protocol`.
    pub protocol: Protocol,
    /// `appProtocol`: the protocol the endpoints speak (`kubernetes.io/h2c`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<Box<str>>,
    /// `targetPort` (absent: the same number as `port`). Informative: the EndpointSlices carry
    /// the resolved port number of each endpoint.
    pub target_port: TargetPort,
}

/// A Service port's `targetPort`: a number, or the name of a container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A named container port.
    Name(Box<str>),
}

/// `addressType` of an EndpointSlice (FQDN slices are not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressType {
    /// `IPv4`.
    IPv4,
    /// `IPv6`.
    IPv6,
}

/// An EndpointSlice, compact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// `metadata.namespace`.
    pub namespace: Box<str>,
    /// `metadata.name`.
    pub name: Box<str>,
    /// The Service it belongs to: its label `kubernetes.io/service-name` (`""` without one:
    /// then it belongs to no Service).
    pub service: Box<str>,
    /// `addressType`.
    pub address_type: AddressType,
    /// `ports` that have a number (a port without one is "every port", which a proxy cannot
    /// connect to).
    pub ports: Box<[SlicePort]>,
    /// `endpoints` whose first address is an address of `address_type` (the API: consumers may
    /// use the first address only).
    pub endpoints: Box<[Endpoint]>,
}

/// One port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlicePort {
    /// `name`: the name of the Service port it serves (`""` for a single unnamed port).
    pub name: Box<str>,
    /// `port`: the endpoints' port number.
    pub port: u16,
    /// `protocol`.
    pub protocol: Protocol,
    /// `appProtocol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<Box<str>>,
}

/// One endpoint of an EndpointSlice: its first address and its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `addresses[0]`.
    pub address: IpAddr,
    /// `conditions.ready` (unset: ready, as the API defines it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// `conditions.serving`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    /// `conditions.terminating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

impl Endpoint {
    /// Whether it takes new traffic: `conditions.ready` true or unset (the EndpointSlice API:
    /// "nil should be interpreted as ready").
    pub fn is_ready(&self) -> bool {
        self.ready != Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Documents;

    /// The last good revision (saved as JSON in the state directory) keeps the endpoints it
    /// was built with, so that an agent restarted while the API server is unreachable serves
    /// what it served; a revision saved before Services were resolved has none.
    #[test]
    fn a_revision_with_its_cluster_survives_json() {
        let mut docs = Documents::inline(&[("kubernetes:/ns/HTTPRoute/r", "{}")]);
        docs.cluster = Some(Arc::new(Cluster {
            services: vec![Arc::new(Service {
                namespace: "ns".into(),
                name: "web".into(),
                type_: ServiceType::ClusterIP,
                ports: vec![ServicePort {
                    name: "".into(),
                    port: 80,
                    protocol: Protocol::Tcp,
                    app_protocol: Some("kubernetes.io/h2c".into()),
                    target_port: TargetPort::Name("http".into()),
                }]
                .into(),
            })],
            slices: vec![Arc::new(EndpointSlice {
                namespace: "ns".into(),
                name: "web-1".into(),
                service: "web".into(),
                address_type: AddressType::IPv6,
                ports: vec![SlicePort {
                    name: "".into(),
                    port: 8080,
                    protocol: Protocol::Tcp,
                    app_protocol: None,
                }]
                .into(),
                endpoints: vec![Endpoint {
                    address: "2001:db8::1".parse().unwrap(),
                    ready: Some(false),
                    serving: Some(true),
                    terminating: Some(true),
                }]
                .into(),
            })],
            node: Some(NodeLabels {
                name: "node-a".into(),
                labels: [("role".to_string(), "edge".to_string())].into(),
            }),
            unresolved: vec![Unresolved {
                namespace: "ns".into(),
                name: "site".into(),
                use_: crate::references::Use::Certificate,
                why: "Secret ns/site does not exist".into(),
            }],
        }));
        let text = serde_json::to_string(&docs).unwrap();
        let back: Documents = serde_json::from_str(&text).unwrap();
        assert_eq!(back, docs);
        let without = Documents::inline(&[("a.yaml", "")]);
        let text = serde_json::to_string(&without).unwrap();
        assert!(!text.contains("cluster"), "{text}");
        assert_eq!(serde_json::from_str::<Documents>(&text).unwrap(), without);
    }
}
