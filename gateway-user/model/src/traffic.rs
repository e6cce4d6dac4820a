//! `BackendTrafficPolicy` (`tollgate.dev/v1alpha1`): how the proxy treats the traffic of the
//! HTTPRoutes named in `targetRefs` (Gateway API policy attachment, in the shape of Envoy
//! Gateway's `BackendTrafficPolicy`). For now it sets one thing: the largest request body. This
//! type is also the CRD (`manifests/crds/backendtrafficpolicy.yaml`). Values are checked by
//! `compile::l7`.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ratelimit::PolicyTargetReference;

/// Traffic settings of the HTTPRoutes named in `targetRefs`. A route has at most one
/// BackendTrafficPolicy.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "BackendTrafficPolicy",
    plural = "backendtrafficpolicies",
    namespaced,
    doc = "Traffic settings (request body size) of Tollgate's L7 proxy, attached to HTTPRoutes.",
    category = "tollgate",
    derive = "PartialEq",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendTrafficPolicySpec {
    /// The HTTPRoutes (in the policy's namespace) these settings apply to (1-16).
    pub target_refs: Vec<PolicyTargetReference>,

    /// Limits on request bodies. Omitted: the agent's `--max-request-body` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body: Option<RequestBody>,
}

/// Limits on request bodies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestBody {
    /// The largest request body the routes accept, as a size (`1MiB`, `512KiB`, `100MB`,
    /// `1048576`; 1 byte to 64GiB). A request whose `Content-Length` is larger gets `413
    /// Payload Too Large` before a backend is contacted; a streamed body (HTTP/1.1 chunked,
    /// HTTP/2 DATA) that grows larger is cut off: the upstream request is aborted and the
    /// client gets 413 if the response has not started, or a reset stream otherwise.
    pub max_size: String,
}
