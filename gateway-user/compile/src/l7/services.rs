//! backendRefs to Services (Kubernetes mode): a Service port resolves to the ready endpoints
//! of the Service's EndpointSlices for that port, compiled into the same [`BackendDef`] a
//! `Backend` object compiles into (so that the proxy serves both alike: round robin, passive
//! health checks, HTTP/2 by `appProtocol`). A Service without ready endpoints is a backend
//! without endpoints, which the proxy answers 503 (as Envoy-based gateways do); a Service that
//! does not exist, a port it does not have, or a protocol the proxy cannot speak do not
//! resolve (`ResolvedRefs=False`; the rule's share of requests for them answers 500).
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use tollgate_model::cluster::{Cluster, EndpointSlice, Protocol, Service, ServiceType};

use super::limits::{DEFAULT_CONSECUTIVE_FAILURES, DEFAULT_EJECTION_TIME};
use super::status::reason;
use super::table::{BackendDef, BackendProtocol, LoadBalancing};

/// Why a Service port does not resolve: (reason, whether the port is at fault rather than the
/// name, message).
pub(super) type Unresolved = (&'static str, bool, String);

/// The Services and EndpointSlices of a revision, indexed by Service, and the backends made
/// of them so far (each Service port once, however many rules name it).
pub(super) struct Services<'a> {
    cluster: Option<&'a Cluster>,
    services: HashMap<(&'a str, &'a str), &'a Service>,
    /// Slices by (namespace, Service), in (namespace, name) order.
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    /// Made so far, by (namespace, Service, port): index into `defs`.
    made: HashMap<(&'a str, &'a str, u16), usize>,
    /// The backends made, in order; the route table has them after the `Backend` objects.
    pub(super) defs: Vec<BackendDef>,
}

impl<'a> Services<'a> {
    /// `None`: the revision does not come from a cluster (a directory, Git), where no Service
    /// resolves.
    pub(super) fn new(cluster: Option<&'a Cluster>) -> Self {
        let mut services = HashMap::new();
        let mut slices: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        if let Some(c) = cluster {
            services.reserve(c.services.len());
            for s in &c.services {
                services.insert((&*s.namespace, &*s.name), &**s);
            }
            for s in &c.slices {
                if !s.service.is_empty() {
                    slices
                        .entry((&*s.namespace, &*s.service))
                        .or_default()
                        .push(&**s);
                }
            }
        }
        Services {
            cluster,
            services,
            slices,
            made: HashMap::new(),
            defs: Vec::new(),
        }
    }

    /// The backend of port `port` of Service `ns/name` (index into [`Services::defs`]), or why
    /// it does not resolve.
    pub(super) fn resolve(&mut self, ns: &str, name: &str, port: u16) -> Result<usize, Unresolved> {
        if self.cluster.is_none() {
            return Err((
                reason::BACKEND_NOT_FOUND,
                false,
                format!("Service \"{name}\": Services are resolved in Kubernetes mode; use a tollgate.dev Backend here"),
            ));
        }
        let Some(&service) = self.services.get(&(ns, name)) else {
            return Err((
                reason::BACKEND_NOT_FOUND,
                false,
                format!("no Service {ns}/{name} in the cluster"),
            ));
        };
        let key = (&*service.namespace, &*service.name, port);
        if let Some(&index) = self.made.get(&key) {
            return Ok(index);
        }
        if service.type_ == ServiceType::ExternalName {
            return Err((
                reason::BACKEND_NOT_FOUND,
                false,
                format!("Service {ns}/{name} is of type ExternalName, which has no endpoints; use a tollgate.dev Backend with an fqdn endpoint"),
            ));
        }
        let Some(sp) = service.ports.iter().find(|p| p.port == port) else {
            let has: Vec<String> = service.ports.iter().map(|p| p.port.to_string()).collect();
            return Err((
                reason::BACKEND_NOT_FOUND,
                true,
                if has.is_empty() {
                    format!("Service {ns}/{name} has no ports")
                } else {
                    format!(
                        "Service {ns}/{name} has no port {port} (its ports: {})",
                        has.join(", ")
                    )
                },
            ));
        };
        if sp.protocol != Protocol::Tcp {
            return Err((
                reason::UNSUPPORTED_PROTOCOL,
                true,
                format!(
                    "port {port} of Service {ns}/{name} is {}: HTTP needs TCP",
                    sp.protocol.as_str()
                ),
            ));
        }
        let protocol = app_protocol(sp.app_protocol.as_deref()).map_err(|why| {
            (
                reason::UNSUPPORTED_PROTOCOL,
                true,
                format!("port {port} of Service {ns}/{name}: {why}"),
            )
        })?;
        // Every ready endpoint of every slice of the Service, on the slice's port for this
        // Service port (slices name their ports after the Service's), once each.
        let mut endpoints: BTreeSet<(IpAddr, u16)> = BTreeSet::new();
        for slice in self.slices.get(&(ns, name)).into_iter().flatten() {
            let Some(slice_port) = slice
                .ports
                .iter()
                .find(|p| p.name == sp.name && p.protocol == sp.protocol)
            else {
                continue;
            };
            for e in slice.endpoints.iter().filter(|e| e.is_ready()) {
                endpoints.insert((e.address, slice_port.port));
            }
        }
        let def = BackendDef {
            // `:` never appears in a Backend's name: no Service port shares a Backend's label.
            label: format!("{ns}/{name}:{port}"),
            endpoints: endpoints
                .into_iter()
                .map(|(address, port)| match address {
                    IpAddr::V4(a) => format!("{a}:{port}"),
                    IpAddr::V6(a) => format!("[{a}]:{port}"),
                })
                .collect(),
            load_balancing: LoadBalancing::RoundRobin,
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            ejection_time: DEFAULT_EJECTION_TIME,
            tls: None,
            protocol,
        };
        self.defs.push(def);
        let index = self.defs.len() - 1;
        self.made.insert(key, index);
        Ok(index)
    }
}

/// The HTTP version a Service port's `appProtocol` asks for (Gateway API GEP-1911). Values that
/// need TLS to the endpoints (`kubernetes.io/wss`, `tollgate.dev/h2`, `https`) are not
/// supported for Services yet: they have no place to say how to check the endpoints'
/// certificates (a `Backend` with `spec.tls` has).
fn app_protocol(value: Option<&str>) -> Result<BackendProtocol, String> {
    match value {
        None | Some("http") | Some("HTTP") | Some("kubernetes.io/ws") => Ok(BackendProtocol::Http1),
        Some("kubernetes.io/h2c") => Ok(BackendProtocol::Http2),
        Some(tls @ ("kubernetes.io/wss" | "tollgate.dev/h2" | "https" | "HTTPS")) => Err(format!(
            "appProtocol \"{tls}\" needs TLS to the endpoints, which Tollgate does not speak to Services yet; use a tollgate.dev Backend with spec.tls"
        )),
        Some(other) => Err(format!(
            "appProtocol \"{other}\" is not a protocol Tollgate speaks to backends: kubernetes.io/h2c, kubernetes.io/ws or http, or none for HTTP/1.1"
        )),
    }
}
