//! `AuthPolicy` (`tollgate.dev/v1alpha1`): authentication of the requests of HTTPRoutes named in
//! `targetRefs` (Gateway API policy attachment). This type is also the CRD
//! (`manifests/crds/authpolicy.yaml`). Values are checked by `compile::l7`; the credential files
//! are read by `proxy::auth` when the revision is applied.
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::ratelimit::PolicyTargetReference;

/// Credentials every request of the targeted HTTPRoutes must present. A request without them
/// gets `401 Unauthorized` with a `WWW-Authenticate` challenge; the consumer it authenticates as
/// is sent to the backend in `X-Tollgate-Consumer` and can key rate limits (`key: consumer`).
/// With both `apiKey` and `basicAuth`, either one is enough.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "AuthPolicy",
    plural = "authpolicies",
    namespaced,
    doc = "Authentication of Tollgate's L7 proxy (API keys, basic auth), attached to HTTPRoutes.",
    category = "tollgate",
    derive = "PartialEq",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthPolicySpec {
    /// The HTTPRoutes (in the policy's namespace) whose requests need credentials (1-16).
    pub target_refs: Vec<PolicyTargetReference>,

    /// API keys, in a request header or a query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyAuth>,

    /// HTTP basic authentication (RFC 7617) against htpasswd files with bcrypt hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,

    /// JSON Web Tokens: not built yet (refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub jwt: Option<serde_json::Value>,

    /// Puts a client address that fails authentication too often into the XDP blocklist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ban_on_abuse: Option<super::ban::AuthBanOnAbuse>,
}

/// Where a request carries its API key, and the files of the valid keys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// The request header that carries the key (set this or `query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The query parameter that carries the key (set this or `header`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The key files (1-16): standalone, `<secrets dir>/<namespace>/<name>/keys`, one line per
    /// key: `consumer-id:sha256:<salt hex>:<hex of sha256(salt || key)>`.
    pub credential_refs: Vec<CredentialRef>,
}

/// The htpasswd files of basic authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// The htpasswd files (1-16): standalone, `<secrets dir>/<namespace>/<name>/htpasswd`, one
    /// `user:$2y$...` line per user (bcrypt only; the user name is the consumer id).
    pub credential_refs: Vec<CredentialRef>,
}

/// A Secret of credentials, in the policy's namespace (standalone: a directory of files).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredentialRef {
    /// Name of the Secret.
    pub name: String,
}
