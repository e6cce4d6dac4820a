//! `Backend` (`tollgate.dev/v1alpha1`): static endpoints that HTTPRoutes send requests to, in the
//! shape of Envoy Gateway's `Backend`. This type is also the CRD (`manifests/crds/backend.yaml`).
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A set of endpoints (addresses and ports) that HTTPRoute `backendRefs` name, with how
/// requests are spread over them and when a failing endpoint is taken out.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "Backend",
    plural = "backends",
    namespaced,
    doc = "Static endpoints for Tollgate's L7 proxy (named by HTTPRoute backendRefs).",
    category = "tollgate",
    derive = "PartialEq",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendSpec {
    /// The endpoints (1-1024): each an IP address or a DNS name, with a port.
    pub endpoints: Vec<BackendEndpoint>,

    /// How requests are spread over the endpoints. Omitted: round robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,

    /// When an endpoint is taken out of rotation. Omitted: after 5 consecutive failures, for 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,

    /// TLS to the endpoints (the validation fields of Gateway API's `BackendTLSPolicy`).
    /// Omitted: endpoints are spoken to in plain HTTP/1.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,

    /// The protocol the endpoints speak, as a Kubernetes Service port's `appProtocol` (Gateway
    /// API GEP-1911): `kubernetes.io/h2c` (HTTP/2 over cleartext with prior knowledge; not with
    /// `tls`), `tollgate.dev/h2` (HTTP/2 over TLS, ALPN `h2`; needs `tls`),
    /// `kubernetes.io/ws` (WebSocket over cleartext: HTTP/1.1; not with `tls`) or
    /// `kubernetes.io/wss` (WebSocket over TLS: HTTP/1.1; needs `tls`). Omitted: HTTP/1.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// How the proxy speaks TLS (HTTP/1.1 inside without ALPN, or HTTP/2 with ALPN `h2` when
/// `appProtocol` is `tollgate.dev/h2`) to a Backend's endpoints and
/// checks their certificates. Certificate verification failures answer 502 and count as
/// `tollgate_http_upstream_errors_total{reason="tls"}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTls {
    /// The server name sent in SNI, which the endpoints' certificates must be valid for (a
    /// DNS name, as BackendTLSPolicy's `hostname`).
    pub hostname: String,
    /// ConfigMaps (in the Backend's namespace) whose `ca.crt` holds the PEM CA certificates
    /// trusted for the endpoints (1-8); standalone, the file `NS/NAME/ca.crt` under
    /// `--tls-secrets-dir`. Exactly one of this and `wellKnownCACertificates`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_refs: Option<Vec<BackendObjectRef>>,
    /// `System`: trust the system's CA certificates (`/etc/ssl/certs/ca-certificates.crt`).
    #[serde(
        default,
        rename = "wellKnownCACertificates",
        skip_serializing_if = "Option::is_none"
    )]
    pub well_known_ca_certificates: Option<WellKnownCaCertificates>,
    /// A `kubernetes.io/tls` Secret (in the Backend's namespace; standalone `NS/NAME/tls.crt`
    /// and `tls.key` under `--tls-secrets-dir`) whose certificate the proxy presents to the
    /// endpoints (mutual TLS). Omitted: no client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_ref: Option<BackendObjectRef>,
}

/// A reference to a ConfigMap or Secret in the Backend's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendObjectRef {
    /// API group: `""` (core; the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind: `ConfigMap` for CA certificates, `Secret` for a client certificate (the
    /// defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    pub name: String,
}

/// Well-known sets of CA certificates.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum WellKnownCaCertificates {
    /// The system's trust store.
    System,
}

/// One endpoint: exactly one of `ip` or `fqdn`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendEndpoint {
    /// An IPv4 or IPv6 address and a port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpEndpoint>,
    /// A DNS name (resolved when connecting) and a port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<FqdnEndpoint>,
}

/// An address and a port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpEndpoint {
    /// IPv4 or IPv6 address, e.g. `10.0.0.7` or `2001:db8::7`.
    pub address: String,
    /// TCP port (1-65535).
    pub port: i64,
}

/// A DNS name and a port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FqdnEndpoint {
    /// DNS name, e.g. `orders.internal`.
    pub hostname: String,
    /// TCP port (1-65535).
    pub port: i64,
}

/// Load-balancing algorithm.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum LoadBalancerType {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The one of two randomly picked endpoints with fewer requests in flight.
    LeastRequest,
}

/// How requests are spread over the endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancer {
    /// `RoundRobin` (the default) or `LeastRequest`.
    #[serde(rename = "type")]
    pub type_: LoadBalancerType,
}

/// Health checking.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// Passive health: endpoints that fail real requests are taken out for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealthCheck>,
}

/// Passive health checking (outlier detection).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassiveHealthCheck {
    /// Consecutive failures (connection refused or reset, timeout, 502/503/504) that take an
    /// endpoint out (1-1000, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<i64>,
    /// How long it stays out before it is tried again (a duration like `30s`, default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ejection_time: Option<String>,
}
