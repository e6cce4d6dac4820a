//! The endpoints of the `default/kubernetes` Service: where the API server's replies come
//! from, for lock-out protection (the agent protects them from its own L4 policy; see
//! `tollgate_compile::l4::failsafe`).
//!
//! In a pod the client connects to the Service's ClusterIP, which kube-proxy DNATs to one of
//! the API servers: the replies reach the node's interfaces from the endpoint's address and
//! port, before the reverse translation, so those are what the data path must let through.
//! They follow the cluster: the EndpointSlice watch of the Services ([`crate::services`])
//! watches every namespace's slices, those of `default/kubernetes` included, and every revision
//! carries them ([`of_cluster`]), so an API server that moves to a new address stays reachable
//! without a watch of its own. They are also read once when the agent starts
//! ([`api_server_endpoints`]: one list of EndpointSlices in `default` with label
//! `kubernetes.io/service-name=kubernetes`): the last good revision the agent enforces before
//! its first sync was saved with the slices of its day, which may be stale.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};

use tollgate_model::cluster::Cluster;

use crate::Error;

/// Label selecting the `kubernetes` Service's slices.
pub const SELECTOR: &str = "kubernetes.io/service-name=kubernetes";
/// The namespace of the `kubernetes` Service.
pub const NAMESPACE: &str = "default";
/// How long the agent waits for the list at start.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The ready endpoints of the slices, on their port named `https` (or their only port), in
/// the order given, without duplicates. An endpoint whose `ready` condition is absent counts
/// as ready (as the API says); slices of an address family other than IPv4/IPv6 (FQDN) are
/// skipped.
pub fn endpoints_of(slices: &[EndpointSlice]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("https"))
            .or(match ports {
                [only] => Some(only),
                _ => None,
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|&p| p != 0);
        let Some(port) = port else { continue };
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for addr in &endpoint.addresses {
                if let Ok(ip) = addr.parse::<IpAddr>() {
                    let sa = SocketAddr::new(ip, port);
                    if !out.contains(&sa) {
                        out.push(sa);
                    }
                }
            }
        }
    }
    out
}

/// The ready endpoints of the `kubernetes` Service's slices among the cluster's (compact:
/// each endpoint's first address, as [`endpoints_of`] reads them otherwise); `None` when the
/// cluster holds none of its slices (the watch is not allowed them, or none exists).
pub fn of_cluster(cluster: &Cluster) -> Option<Vec<SocketAddr>> {
    let mut any = false;
    let mut out = Vec::new();
    for slice in cluster
        .slices
        .iter()
        .filter(|s| &*s.namespace == NAMESPACE && &*s.service == "kubernetes")
    {
        any = true;
        let port = slice
            .ports
            .iter()
            .find(|p| &*p.name == "https")
            .or(match &*slice.ports {
                [only] => Some(only),
                _ => None,
            })
            .map(|p| p.port)
            .filter(|&p| p != 0);
        let Some(port) = port else { continue };
        for endpoint in slice.endpoints.iter().filter(|e| e.ready.unwrap_or(true)) {
            let sa = SocketAddr::new(endpoint.address, port);
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
    }
    any.then_some(out)
}

/// Lists the `kubernetes` Service's EndpointSlices and returns their ready endpoints (see
/// [`endpoints_of`]), within [`TIMEOUT`].
pub async fn api_server_endpoints(client: kube::Client) -> Result<Vec<SocketAddr>, Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client, NAMESPACE);
    let list = tokio::time::timeout(TIMEOUT, api.list(&ListParams::default().labels(SELECTOR)))
        .await
        .map_err(|_| {
            Error::Config(format!(
                "EndpointSlices {NAMESPACE}/{SELECTOR}: no answer within {TIMEOUT:?}"
            ))
        })?
        .map_err(|e| Error::Config(format!("EndpointSlices {NAMESPACE}/{SELECTOR}: {e}")))?;
    Ok(endpoints_of(&list.items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(json: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn ready_addresses_on_the_https_port_are_the_endpoints() {
        let v4 = slice(serde_json::json!({
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9000}, {"name": "https", "port": 6443}],
            "endpoints": [
                {"addresses": ["192.0.2.10"], "conditions": {"ready": true}},
                {"addresses": ["192.0.2.11"]},
                {"addresses": ["192.0.2.12"], "conditions": {"ready": false}},
                {"addresses": ["192.0.2.10"]}
            ]
        }));
        let v6 = slice(serde_json::json!({
            "metadata": {"name": "kubernetes-v6"},
            "addressType": "IPv6",
            "ports": [{"port": 443}],
            "endpoints": [{"addresses": ["2001:db8::10"]}]
        }));
        let fqdn = slice(serde_json::json!({
            "metadata": {"name": "odd"},
            "addressType": "FQDN",
            "ports": [{"name": "https", "port": 443}],
            "endpoints": [{"addresses": ["api.example.com"]}]
        }));
        let no_port = slice(serde_json::json!({
            "metadata": {"name": "odd2"},
            "addressType": "IPv4",
            "ports": [{"name": "a", "port": 1}, {"name": "b", "port": 2}],
            "endpoints": [{"addresses": ["192.0.2.99"]}]
        }));
        let got = endpoints_of(&[v4, v6, fqdn, no_port]);
        let want: Vec<SocketAddr> = ["192.0.2.10:6443", "192.0.2.11:6443", "[2001:db8::10]:443"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_cluster_slices_of_the_kubernetes_service_are_the_endpoints() {
        use tollgate_model::cluster::{AddressType, Endpoint, EndpointSlice, Protocol, SlicePort};
        let slice =
            |ns: &str, service: &str, ports: &[(&str, u16)], ips: &[(&str, Option<bool>)]| {
                std::sync::Arc::new(EndpointSlice {
                    namespace: ns.into(),
                    name: format!("{service}-x").into(),
                    service: service.into(),
                    address_type: AddressType::IPv4,
                    ports: ports
                        .iter()
                        .map(|(name, port)| SlicePort {
                            name: (*name).into(),
                            port: *port,
                            protocol: Protocol::Tcp,
                            app_protocol: None,
                        })
                        .collect(),
                    endpoints: ips
                        .iter()
                        .map(|(ip, ready)| Endpoint {
                            address: ip.parse().unwrap(),
                            ready: *ready,
                            serving: None,
                            terminating: None,
                        })
                        .collect(),
                })
            };
        let mut cluster = Cluster::default();
        assert_eq!(of_cluster(&cluster), None);
        cluster.slices = vec![
            slice("default", "web", &[("https", 443)], &[("192.0.2.50", None)]),
            slice(
                "other",
                "kubernetes",
                &[("https", 443)],
                &[("192.0.2.51", None)],
            ),
            slice(
                "default",
                "kubernetes",
                &[("metrics", 9000), ("https", 6443)],
                &[
                    ("192.0.2.10", Some(true)),
                    ("192.0.2.11", None),
                    ("192.0.2.12", Some(false)),
                ],
            ),
        ];
        let want: Vec<SocketAddr> = ["192.0.2.10:6443", "192.0.2.11:6443"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(of_cluster(&cluster), Some(want));
        // A slice without a usable port: the Service is there, with no endpoint.
        cluster.slices = vec![slice(
            "default",
            "kubernetes",
            &[("a", 1), ("b", 2)],
            &[("192.0.2.10", None)],
        )];
        assert_eq!(of_cluster(&cluster), Some(Vec::new()));
    }
}
