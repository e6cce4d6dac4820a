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
/// With several methods (`apiKey`, `basicAuth`, `jwt`, `clientCertificate`), any one is
/// enough. An authenticated consumer not in `allowedConsumers` (when set) gets `403 Forbidden`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "AuthPolicy",
    plural = "authpolicies",
    namespaced,
    doc = "Authentication of Tollgate's L7 proxy (API keys, basic auth, JWT, client certificates), attached to HTTPRoutes.",
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

    /// JSON Web Tokens (RFC 7519) signed with RS256, ES256 or EdDSA, checked against the keys
    /// of a JWKS (from a URI, or inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,

    /// The verified TLS client certificate of the connection (on an HTTPS listener with
    /// client certificate validation: Gateway `spec.tls.frontend`), its subject naming the
    /// consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificateAuth>,

    /// The consumers allowed through (1-1024 ids); a request authenticated as another consumer
    /// gets `403 Forbidden`. Absent: any authenticated consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_consumers: Option<Vec<String>>,

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

/// JWT authentication: the token of a request is checked against each provider in turn; the
/// first that accepts it names the consumer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtAuth {
    /// The token issuers (1-8, names unique).
    pub providers: Vec<JwtProvider>,
}

/// One issuer of JWTs and where its keys are.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtProvider {
    /// Name of the provider (a DNS label; the `provider` label of the JWKS metrics).
    pub name: String,
    /// The `iss` claim tokens must carry; absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The `aud` claim must hold one of these (0-16); empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// The signing keys.
    pub jwks: JwksSource,
    /// The claim whose (string) value is the consumer id; default `sub`. Its value must be a
    /// valid consumer id (1-128 letters, digits, `.`, `_`, `-`, `@`) or the token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_claim: Option<String>,
    /// Claims sent to the backend as request headers (0-16; a copy of such a header sent by
    /// the client is always removed first). Strings are sent as they are, numbers and booleans
    /// as JSON; a claim that is absent, an object or an array, or not a valid header value is
    /// not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Where the token is; absent: `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract_from: Option<TokenLocation>,
    /// Clock skew allowed on `exp` and `nbf`, like `30s` or `2m` (at most `5m`); default `60s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<String>,
}

/// The keys of a provider: exactly one of `uri` and `inline`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwksSource {
    /// `http://` or `https://` URI of the JWKS (RFC 7517). Fetched when the revision is
    /// applied and every `refreshInterval` after, and again (at most once per 5 s) when a token
    /// names a `kid` not in the set. A fetch that fails keeps the keys fetched before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The JWKS itself, as a JSON string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// How often the JWKS at `uri` is fetched again, like `5m` (30s-24h); default `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<String>,
    /// A ConfigMap whose `ca.crt` (standalone: `<--tls-secrets-dir>/NAMESPACE/NAME/ca.crt`)
    /// is trusted for an `https` `uri`, besides the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_ref: Option<CredentialRef>,
}

/// A claim sent to the backend in a request header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The (top-level) claim.
    pub claim: String,
    /// The request header.
    pub header: String,
}

/// Where a request carries its token: exactly one of `header` and `query`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenLocation {
    /// This request header (its value the token, optionally after `Bearer `).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// This query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// Client certificate authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientCertificateAuth {
    /// Which part of the certificate's subject is the consumer id; default `CommonName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_from: Option<CertificateField>,
}

/// A part of a client certificate that names its consumer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CertificateField {
    /// The (first) common name (CN) of the subject.
    CommonName,
    /// The first DNS name of the subject alternative names.
    SubjectAltNameDNS,
    /// The first e-mail address (rfc822Name) of the subject alternative names.
    SubjectAltNameEmail,
}
