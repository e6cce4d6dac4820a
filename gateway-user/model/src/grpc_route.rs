//! `GRPCRoute` (Kubernetes Gateway API v1.6, standard channel, `gateway.networking.k8s.io/v1`):
//! how gRPC requests that reach a Gateway listener are matched (service, method, headers) and
//! where they go. Upstream shapes, field for field, for the standard channel (no
//! `sessionPersistence`, which is experimental); the CRD is the Gateway API's own, never
//! generated here. The types shared with `HTTPRoute` (parent references, header filters,
//! mirrors) are [`super::route`]'s. Values are checked by `compile::l7::grpc`.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::route::{HTTPHeaderFilter, HTTPRequestMirrorFilter, ParentReference, ValueMatchType};

/// Routing rules for gRPC requests that reach the listeners named in `parentRefs`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GRPCRoute",
    namespaced,
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCRouteSpec {
    /// The Gateways (or one listener of a Gateway, with `sectionName`) this route attaches to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_refs: Option<Vec<ParentReference>>,

    /// Hosts this route serves: exact names or wildcards (`*.example.com`), at most 16.
    /// Omitted: every host the listener accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,

    /// The rules (at most 16). Omitted: none (the route then serves nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<GRPCRouteRule>>,
}

/// One rule: conditions (`matches`), what to do with a matching request (`filters`), and where
/// to send it (`backendRefs`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCRouteRule {
    /// Optional name of the rule (unique within the route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,

    /// A request matches the rule when it matches any of these (at most 8). Omitted: every
    /// gRPC request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<GRPCRouteMatch>>,

    /// What to do with a matching request: `RequestHeaderModifier` and
    /// `ResponseHeaderModifier` (each at most once), `RequestMirror` (any number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<GRPCRouteFilter>>,

    /// Where to send matching requests, split by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_refs: Option<Vec<GRPCBackendRef>>,
}

/// Conditions on a request; all that are set must hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCRouteMatch {
    /// The gRPC service and/or method. Omitted: every service and method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GRPCMethodMatch>,
    /// Headers (metadata), all of which must match (at most 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<GRPCHeaderMatch>>,
}

/// How a service and method are compared.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GRPCMethodMatchType {
    /// Exactly, case-sensitively.
    Exact,
    /// A regular expression (Rust `regex` syntax) that must match the whole service (or
    /// method).
    RegularExpression,
}

/// A service/method condition: at least one of `service` and `method` is set.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCMethodMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<GRPCMethodMatchType>,
    /// The fully qualified service (`package.Service`). Omitted: any service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The method. Omitted: any method of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A header condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCHeaderMatch {
    /// `Exact` (the default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ValueMatchType>,
    /// Header name (case-insensitive).
    pub name: String,
    /// The value (1-4096 characters).
    pub value: String,
}

/// Filter types of a GRPCRoute.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GRPCRouteFilterType {
    /// Set, add or remove request headers (metadata).
    RequestHeaderModifier,
    /// Set, add or remove response headers.
    ResponseHeaderModifier,
    /// Send a copy of each request (or of a share of them) to another backend.
    RequestMirror,
    /// Implementation-specific filters: not supported.
    ExtensionRef,
}

/// A filter: `type` names which of the other fields holds its settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCRouteFilter {
    /// Which filter.
    #[serde(rename = "type")]
    pub type_: GRPCRouteFilterType,
    /// Settings of `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HTTPHeaderFilter>,
    /// Settings of `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HTTPHeaderFilter>,
    /// Settings of `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<HTTPRequestMirrorFilter>,
    /// Settings of `ExtensionRef` (not supported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<serde_json::Value>,
}

/// A weighted backend.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GRPCBackendRef {
    /// API group: `tollgate.dev` for a Backend; `""` (the default) with kind `Service` for a
    /// Service (Kubernetes mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind: `Backend` (with group `tollgate.dev`). Default `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the Backend or Service.
    pub name: String,
    /// Namespace (default: the route's; another needs a ReferenceGrant there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port of the Service (required for a Service; refused for a Backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Share of the requests (0-1000000, default 1), relative to the rule's other backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// Filters for the requests sent to this backend only: `RequestHeaderModifier` and
    /// `ResponseHeaderModifier`, applied after the rule's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<GRPCRouteFilter>>,
}
