//! `Gateway` (Kubernetes Gateway API, `gateway.networking.k8s.io/v1`): the listeners of the L7
//! proxy. The shape is the upstream one, field for field, for the fields Tollgate reads; the CRD
//! is the Gateway API's own (installed from the Gateway API release), never generated here.
//!
//! As for every kind, the raw types are permissive (ports are `i64`, hostnames strings):
//! `compile::l7` checks each value and names the field when it is wrong.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Group of the Gateway API kinds.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// A set of listeners: the ports (and hostnames) on which the node's proxy accepts HTTP.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// The GatewayClass this Gateway belongs to. Required by the Gateway API; the standalone
    /// agent serves every Gateway of its revision whatever the class.
    pub gateway_class_name: String,

    /// The listeners (1-64): one port, protocol and optional hostname each.
    pub listeners: Vec<Listener>,

    /// Addresses requested for the Gateway. Not supported yet: the agent listens on
    /// `--gateway-address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<GatewayAddress>>,

    /// TLS settings of the whole Gateway (Gateway API v1.6 standard channel): client
    /// certificate validation of its HTTPS listeners (`frontend`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTlsSettings>,

    /// What a controller that creates resources for the Gateway should put on them (labels,
    /// annotations) and implementation-specific parameters. Tollgate creates no resources (an
    /// agent per node serves every Gateway), so labels and annotations have nothing to go on,
    /// and it reads no parameters kind: a `parametersRef` leaves the Gateway out
    /// (`Accepted=False, InvalidParameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<GatewayInfrastructure>,
}

/// `Gateway.spec.infrastructure`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayInfrastructure {
    /// Labels for the resources a controller creates for the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// Annotations for the resources a controller creates for the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    /// An implementation-specific object with the Gateway's parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters_ref: Option<LocalParametersReference>,
}

/// `Gateway.spec.infrastructure.parametersRef`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalParametersReference {
    /// The referent's API group.
    pub group: String,
    /// The referent's kind.
    pub kind: String,
    /// The referent's name.
    pub name: String,
}

/// `Gateway.spec.tls`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTlsSettings {
    /// How clients connecting to the Gateway are verified (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frontend: Option<FrontendTlsConfig>,

    /// The Gateway's client certificate towards backends. Not supported yet (a Backend's own
    /// `tls` settings apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub backend: Option<serde_json::Value>,
}

/// `Gateway.spec.tls.frontend`: client certificate validation for every HTTPS listener
/// (`default`), overridden per port (`perPort`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontendTlsConfig {
    /// The validation of every HTTPS listener whose port has no `perPort` entry.
    pub default: FrontendTls,

    /// Per port (each port once, at most 64): replaces `default` for the HTTPS listeners on
    /// that port (an entry without `validation` turns client certificates off there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_port: Option<Vec<FrontendTlsPort>>,
}

/// TLS settings that apply to several listeners.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontendTls {
    /// Client certificates (mTLS): when set, a client must present a certificate that chains
    /// to one of these CAs, or the handshake fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<FrontendTlsValidation>,
}

/// The frontend TLS settings of one port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontendTlsPort {
    /// The port (1-65535) whose HTTPS listeners these settings are for.
    pub port: i64,
    /// The settings.
    pub tls: FrontendTls,
}

/// An address requested for a Gateway.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAddress {
    /// `IPAddress` or `Hostname`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The address.
    pub value: String,
}

/// One listener: a port, a protocol and optionally a hostname.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    /// Name of the listener, unique within the Gateway (routes attach to it with
    /// `parentRefs[].sectionName`).
    pub name: String,

    /// Requests whose host matches this name are served by this listener: an exact name
    /// (`api.example.com`) or a wildcard (`*.example.com`, any name under it). Omitted: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,

    /// TCP port (1-65535).
    pub port: i64,

    /// `HTTP` (plain HTTP/1.1 and HTTP/2 with prior knowledge) or `HTTPS` (TLS terminated
    /// with the certificates of `tls.certificateRefs`, HTTP/2 or HTTP/1.1 by ALPN). One port
    /// is either HTTP or HTTPS for all its listeners.
    pub protocol: String,

    /// TLS settings of an `HTTPS` listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<GatewayTlsConfig>,

    /// Which routes may attach. Omitted: HTTPRoutes of the Gateway's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<AllowedRoutes>,
}

/// TLS settings of a listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayTlsConfig {
    /// `Terminate` (the default) or `Passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,

    /// Certificates (and keys) to serve: Secrets (standalone, the directory
    /// `<--tls-secrets-dir>/NAMESPACE/NAME` with `tls.crt` and `tls.key`). With several, the
    /// first whose key type the client supports is served (e.g. ECDSA, then RSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_refs: Option<Vec<SecretObjectReference>>,

    /// Implementation-specific TLS options. Tollgate reads none, and refuses any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,

    /// The listener-level field of Gateway API v1.2-1.3's experimental channel, gone since:
    /// refused with a message saying where it moved (`spec.tls.frontend`), since an API
    /// server whose CRD lacks it would drop it silently, and mTLS with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub frontend_validation: Option<serde_json::Value>,
}

/// Verification of client certificates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontendTlsValidation {
    /// ConfigMaps holding the trusted CA certificates under the key `ca.crt` (standalone, the
    /// file `<--tls-secrets-dir>/NAMESPACE/NAME/ca.crt`), 1-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_refs: Option<Vec<ObjectReference>>,

    /// `AllowValidOnly` (the default: a valid client certificate is required) or
    /// `AllowInsecureFallback` (not supported: it would let clients in without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A reference to an object (a ConfigMap of CA certificates).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectReference {
    /// API group of the referent (`""`, the core group, for a ConfigMap).
    #[serde(default)]
    pub group: String,
    /// Kind of the referent: `ConfigMap`.
    pub kind: String,
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent (default: the Gateway's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference to a Secret holding a certificate and its key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretObjectReference {
    /// API group of the referent (`""`, the core group, for a Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the referent (default `Secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the referent.
    pub name: String,
    /// Namespace of the referent (default: the Gateway's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Which routes may attach to a listener.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedRoutes {
    /// From which namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<RouteNamespaces>,
    /// Which route kinds (only `HTTPRoute` is served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<RouteGroupKind>>,
}

/// Namespaces routes may attach from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteNamespaces {
    /// `Same` (the Gateway's namespace, the default), `All`, or `Selector` (not supported
    /// standalone: there are no namespace labels to select on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Namespace label selector for `from: Selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A route kind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteGroupKind {
    /// API group (default `gateway.networking.k8s.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind, e.g. `HTTPRoute`.
    pub kind: String,
}
