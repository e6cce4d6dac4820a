//! The model stage: YAML documents -> typed objects, one Rust type per kind (each is also the
//! Kubernetes custom resource; `manifests/crds/` is generated from these types).
//!
//! [`parse`] reads every document of every file and reports every problem it finds, each with
//! its file, object and field path (`spec.rules[2].ports`), never just the first one. Checks of
//! values (CIDRs, port ranges, bounds) belong to the compile stage; this stage only checks
//! shape: known kinds, known fields, the right types.
//!
//! This crate also holds what every later stage shares: the input of a revision
//! ([`Documents`]), the error type ([`PolicyError`]) and the [`Checker`] that collects them,
//! units ([`units`]), name rules ([`names`]), the canonical form of an HTTP path
//! ([`http_path`]) and the kinds of ban ([`BanKind`]). It depends on no other crate of the
//! workspace, and does no I/O.
//!
//! The parser's parts: `parse_cache.rs` (a revision file by file, its budget and the cache),
//! `document.rs` (a file's YAML documents and the parser's limits), `identify.rs` (a document
//! into an object), `foreign_tag.rs` (tags outside the YAML core schema); this file holds the
//! kinds read and what they parse into.
use serde::de::DeserializeOwned;
use serde_json::Value;

pub mod auth;
pub mod backend;
pub mod ban;
pub mod cluster;
pub mod error;
pub mod gateway;
pub mod gateway_class;
pub mod grpc_route;
pub mod http_path;
pub mod l4;
pub mod left_out;
pub mod names;
pub mod net;
pub mod node;
pub mod ratelimit;
pub mod references;
pub mod revision;
pub mod route;
pub mod source;
pub mod status;
pub mod traffic;
pub mod units;

mod document;
mod foreign_tag;
mod identify;
mod parse_cache;

pub use ban::BanKind;
pub use error::{Checker, Location, Mark, PolicyError, PolicyErrors};
pub use left_out::LeftOut;
pub use parse_cache::{ParseCache, ParsedRevision};
pub use revision::{Documents, Revision, SourceFile};

/// API group of every Tollgate kind.
pub const GROUP: &str = "tollgate.dev";
/// Version of every Tollgate kind (for now).
pub const VERSION: &str = "v1alpha1";

/// One policy object of any kind this agent reads. A new kind is a new variant, a new entry in
/// [`KINDS`] and one arm in each method below.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// The node firewall, enforced in XDP.
    L4Policy(l4::L4Policy),
    /// Listeners of the L7 proxy (Gateway API).
    Gateway(gateway::Gateway),
    /// L7 routing rules (Gateway API).
    HTTPRoute(route::HTTPRoute),
    /// gRPC routing rules (Gateway API).
    GRPCRoute(grpc_route::GRPCRoute),
    /// Static endpoints for the L7 proxy.
    Backend(backend::Backend),
    /// Request rate limits attached to HTTPRoutes.
    RateLimitPolicy(ratelimit::RateLimitPolicy),
    /// Authentication attached to HTTPRoutes.
    AuthPolicy(auth::AuthPolicy),
    /// Traffic settings (request body size) attached to HTTPRoutes.
    BackendTrafficPolicy(traffic::BackendTrafficPolicy),
    /// A class of Gateways and its controller (Gateway API): which Gateways are Tollgate's.
    GatewayClass(gateway_class::GatewayClass),
    /// Cross-namespace references allowed into a namespace (Gateway API).
    ReferenceGrant(gateway_class::ReferenceGrant),
    /// A namespace: its labels, which `allowedRoutes.namespaces.selector` of a listener
    /// selects routes' namespaces by.
    Namespace(k8s_openapi::api::core::v1::Namespace),
}

impl Object {
    /// The kind, as written in `kind:`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::L4Policy(_) => "L4Policy",
            Object::Gateway(_) => "Gateway",
            Object::HTTPRoute(_) => "HTTPRoute",
            Object::GRPCRoute(_) => "GRPCRoute",
            Object::Backend(_) => "Backend",
            Object::RateLimitPolicy(_) => "RateLimitPolicy",
            Object::AuthPolicy(_) => "AuthPolicy",
            Object::BackendTrafficPolicy(_) => "BackendTrafficPolicy",
            Object::GatewayClass(_) => "GatewayClass",
            Object::ReferenceGrant(_) => "ReferenceGrant",
            Object::Namespace(_) => "Namespace",
        }
    }

    fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::L4Policy(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HTTPRoute(o) => &o.metadata,
            Object::GRPCRoute(o) => &o.metadata,
            Object::Backend(o) => &o.metadata,
            Object::RateLimitPolicy(o) => &o.metadata,
            Object::AuthPolicy(o) => &o.metadata,
            Object::BackendTrafficPolicy(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata,
            Object::ReferenceGrant(o) => &o.metadata,
            Object::Namespace(o) => &o.metadata,
        }
    }

    /// `metadata.name` (`parse` guarantees it is set).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The namespace of a namespaced kind: `metadata.namespace`, or [`DEFAULT_NAMESPACE`]
    /// when it is left out (as `kubectl apply` would). `None` for cluster-scoped kinds.
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Object::L4Policy(_) | Object::GatewayClass(_) | Object::Namespace(_) => None,
            _ => Some(
                self.metadata()
                    .namespace
                    .as_deref()
                    .unwrap_or(DEFAULT_NAMESPACE),
            ),
        }
    }

    /// `metadata.creationTimestamp`, when the object carries one (objects exported from a
    /// cluster do; objects written for Git usually do not).
    pub fn creation_timestamp(&self) -> Option<&k8s_openapi::jiff::Timestamp> {
        self.metadata().creation_timestamp.as_ref().map(|t| &t.0)
    }
}

/// The namespace of a namespaced object that does not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A value with where it was written: what error messages name.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// File path relative to the source root.
    pub file: String,
    /// `Kind/name`, e.g. `L4Policy/edge`.
    pub object: String,
    /// The value.
    pub value: T,
}

/// How to read one kind: its `kind:` and `apiVersion:` and how to deserialize it.
struct KindInfo {
    kind: &'static str,
    api_version: &'static str,
    /// Other versions of the kind read the same way (a Gateway API kind served at two
    /// versions while it graduates); `api_version` is the one a source watches.
    other_versions: &'static [&'static str],
    /// Namespaced kinds are named `Kind/namespace/name` in messages when they give a namespace.
    namespaced: bool,
    read: fn(Value) -> Result<Object, serde_path_to_error::Error<serde_json::Error>>,
}

/// Every kind this agent reads.
const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: "L4Policy",
        api_version: "tollgate.dev/v1alpha1",
        other_versions: &[],
        namespaced: false,
        read: |v| typed::<l4::L4Policy>(v).map(Object::L4Policy),
    },
    KindInfo {
        kind: "Gateway",
        api_version: "gateway.networking.k8s.io/v1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<gateway::Gateway>(v).map(Object::Gateway),
    },
    KindInfo {
        kind: "HTTPRoute",
        api_version: "gateway.networking.k8s.io/v1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<route::HTTPRoute>(v).map(Object::HTTPRoute),
    },
    KindInfo {
        kind: "GRPCRoute",
        api_version: "gateway.networking.k8s.io/v1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<grpc_route::GRPCRoute>(v).map(Object::GRPCRoute),
    },
    KindInfo {
        kind: "Backend",
        api_version: "tollgate.dev/v1alpha1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<backend::Backend>(v).map(Object::Backend),
    },
    KindInfo {
        kind: "RateLimitPolicy",
        api_version: "tollgate.dev/v1alpha1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<ratelimit::RateLimitPolicy>(v).map(Object::RateLimitPolicy),
    },
    KindInfo {
        kind: "AuthPolicy",
        api_version: "tollgate.dev/v1alpha1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<auth::AuthPolicy>(v).map(Object::AuthPolicy),
    },
    KindInfo {
        kind: "BackendTrafficPolicy",
        api_version: "tollgate.dev/v1alpha1",
        other_versions: &[],
        namespaced: true,
        read: |v| typed::<traffic::BackendTrafficPolicy>(v).map(Object::BackendTrafficPolicy),
    },
    KindInfo {
        kind: "GatewayClass",
        api_version: "gateway.networking.k8s.io/v1",
        other_versions: &[],
        namespaced: false,
        read: |v| typed::<gateway_class::GatewayClass>(v).map(Object::GatewayClass),
    },
    // v1beta1 is what every Gateway API release since v0.6 serves; v1.6 adds v1.
    KindInfo {
        kind: "ReferenceGrant",
        api_version: "gateway.networking.k8s.io/v1beta1",
        other_versions: &["gateway.networking.k8s.io/v1"],
        namespaced: true,
        read: |v| typed::<gateway_class::ReferenceGrant>(v).map(Object::ReferenceGrant),
    },
    // Read for its labels only; the API server's own fields (spec.finalizers) are accepted.
    KindInfo {
        kind: "Namespace",
        api_version: "v1",
        other_versions: &[],
        namespaced: false,
        read: |v| typed::<k8s_openapi::api::core::v1::Namespace>(v).map(Object::Namespace),
    },
];

/// The kinds a source that lists objects kind by kind (the Kubernetes API) watches, as
/// `(kind, apiVersion, namespaced)`: every kind [`parse`] reads. (The agent's Kubernetes source
/// watches `Namespace` only while a Gateway listener selects namespaces by label; the others
/// always.)
pub fn kinds() -> impl Iterator<Item = (&'static str, &'static str, bool)> {
    KINDS.iter().map(|k| (k.kind, k.api_version, k.namespaced))
}

/// The only top-level fields of an object (`status` is accepted so that the output of
/// `kubectl get -o yaml` can be committed as it is; it is ignored).
const TOP_LEVEL_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

fn typed<T: DeserializeOwned>(
    value: Value,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
    serde_path_to_error::deserialize(value)
}

/// What one revision may hold, counted while it is parsed (not after): a revision over
/// either bound is refused before it can take the agent's memory (docs/operations.md, "Memory
/// budget").
pub mod limits {
    /// YAML nodes (mappings, sequences, scalars; alias expansions included) of a whole
    /// revision: about 15 a rule, so 200,000 rules fit with room to spare.
    pub const MAX_REVISION_NODES: usize = 4_000_000;
    /// YAML nodes of one document: bounds the parser's transient memory (a node costs about
    /// 100 bytes while its document is read).
    pub const MAX_DOCUMENT_NODES: usize = 2_000_000;
    /// YAML nodes of the documents that use aliases (`*name`), over a whole revision: alias
    /// expansion is where a few bytes become millions of nodes (an "alias bomb"), so it has its
    /// own, smaller bound (about a quarter of a second of parsing).
    pub const MAX_ALIAS_NODES: usize = 500_000;
    /// L4 rules of a whole revision (the kernel tables' capacity is sized for it).
    pub const MAX_L4_RULES: usize = 200_000;
    /// Errors a refused revision reports in full; the rest are counted.
    pub const MAX_REPORTED_ERRORS: usize = 100;
}

/// Parses every document of every file into typed objects, in file order. Empty documents (a
/// leading or trailing `---`, comments only) are skipped. On failure, returns all the problems
/// of all the files (or the one bound of [`limits`] the revision crossed).
pub fn parse(docs: &Documents) -> Result<Vec<Located<Object>>, PolicyErrors> {
    ParseCache::default().parse(docs)
}

fn known_kinds() -> String {
    KINDS
        .iter()
        .map(|k| format!("{} ({})", k.kind, k.api_version))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
