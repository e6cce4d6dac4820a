//! Authentication of requests on routes with an `AuthPolicy`, then the policy's
//! `allowedConsumers` (403 for others).
//!
//! Each method is one file with one type implementing [`Scheme`], and one line of
//! `methods!` below: API keys ([`api_key`]), basic authentication ([`basic`]), JWTs ([`jwt`])
//! and the verified TLS client certificate of the connection ([`client_cert`]). A method
//! says whether its credentials are in a request at all (*present*), checks them (*verify*:
//! the consumer, or why not), gives its `WWW-Authenticate` challenge for a 401 (*challenge*),
//! and says in one line what it wants (*describe*, for `tollgate explain`). The files they
//! read are loaded and reloaded by [`AuthStore`] ([`store`]).
//!
//! With several methods, any one is enough: they are tried cheapest first (client
//! certificate, API key, JWT, then bcrypt), the first that accepts names the consumer, and
//! when none does the most telling failure is reported.
pub mod api_key;
pub mod basic;
pub mod client_cert;
pub mod jwt;
pub mod password;
pub mod store;

use std::sync::Arc;

use http::HeaderMap;

pub use client_cert::PeerCertificate;
pub use jwt::TokenFailure;
use store::Loader;
pub use store::{AuthFileError, AuthStore, PolicyFileError, RELOAD_INTERVAL};
use tollgate_compile::l7::table::AuthDef;
pub use tollgate_model::names::{consumer_id as check_consumer, MAX_CONSUMER_LEN};

/// The request header the authenticated consumer is sent to the backend in (any such header
/// from the client is removed first).
pub const CONSUMER_HEADER: &str = "x-tollgate-consumer";

/// What the methods see of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r> {
    /// The request headers.
    pub headers: &'r HeaderMap,
    /// The query string.
    pub query: Option<&'r str>,
    /// The client certificate the connection's TLS handshake verified, if any.
    pub client_certificate: Option<&'r PeerCertificate>,
}

/// What every authentication method implements.
pub(crate) trait Scheme: Sized {
    /// What the method finds in a request.
    type Credentials<'r>;
    /// Methods are tried in ascending order of this rank, cheapest first.
    const COST: u8;
    /// The method's part of a compiled policy, if the policy uses it (its credentials not
    /// loaded yet: enough to describe it).
    fn of(def: &AuthDef) -> Option<Self>;
    /// Loads what credentials are checked against (files, key sets, shared threads).
    fn load(&mut self, loader: &mut Loader<'_>) -> Result<(), AuthFileError>;
    /// This method's credentials in `req`, if there are any.
    fn present<'r>(&self, req: &Request<'r>) -> Option<Self::Credentials<'r>>;
    /// Checks present credentials: the consumer, or why not.
    async fn verify<'r>(
        &self,
        credentials: Self::Credentials<'r>,
    ) -> Result<Authenticated, Failure>;
    /// The `WWW-Authenticate` challenge of a 401 on route `realm` refused with `failure`.
    fn challenge(&self, realm: &str, failure: Failure) -> String;
    /// One line saying what the method wants, e.g. `an API key in header x-api-key (keys of
    /// shop/api-keys)`.
    fn describe(&self) -> String;
}

/// Declares [`Method`], one variant per method type, and its dispatch to [`Scheme`].
macro_rules! methods {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty), )+) => {
        /// One authentication method of a policy, with its credentials.
        pub enum Method {
            $( $(#[$doc])* $variant($ty), )+
        }

        impl Method {
            /// The methods `def` uses, in the order of their declaration (the order of the
            /// challenges and descriptions).
            fn of(def: &AuthDef) -> Vec<Method> {
                let mut out = Vec::new();
                $( if let Some(m) = <$ty as Scheme>::of(def) {
                    out.push(Method::$variant(m));
                } )+
                out
            }

            fn cost(&self) -> u8 {
                match self { $( Method::$variant(_) => <$ty as Scheme>::COST, )+ }
            }

            fn load(&mut self, loader: &mut Loader<'_>) -> Result<(), AuthFileError> {
                match self { $( Method::$variant(m) => m.load(loader), )+ }
            }

            /// `None` when the request has no credentials of this method, else the outcome
            /// of checking them.
            async fn attempt(&self, req: &Request<'_>) -> Option<Result<Authenticated, Failure>> {
                match self {
                    $( Method::$variant(m) => {
                        let credentials = m.present(req)?;
                        Some(m.verify(credentials).await)
                    } )+
                }
            }

            /// The `WWW-Authenticate` challenge of a 401 on route `realm`.
            pub fn challenge(&self, realm: &str, failure: Failure) -> String {
                match self { $( Method::$variant(m) => m.challenge(realm, failure), )+ }
            }

            /// What the method wants, in one line.
            pub fn describe(&self) -> String {
                match self { $( Method::$variant(m) => m.describe(), )+ }
            }
        }
    };
}

methods! {
    /// An API key in a header or query parameter (`apiKey`).
    ApiKey(api_key::ApiKey),
    /// A user and password (`basicAuth`).
    Basic(basic::Basic),
    /// A JWT of one of the policy's providers (`jwt`).
    Jwt(jwt::Jwt),
    /// The connection's verified client certificate (`clientCertificate`).
    ClientCert(client_cert::ClientCert),
}

/// The methods of one AuthPolicy with their credentials, as requests see them (each file's
/// set is swapped whole when the file changes). Made by [`AuthStore::load`].
pub struct AuthRuntime {
    /// In declaration order.
    methods: Vec<Method>,
    /// Indexes of `methods`, cheapest first.
    by_cost: Vec<usize>,
}

impl AuthRuntime {
    fn new(methods: Vec<Method>) -> AuthRuntime {
        let mut by_cost: Vec<usize> = (0..methods.len()).collect();
        by_cost.sort_by_key(|&i| methods[i].cost());
        AuthRuntime { methods, by_cost }
    }

    /// The methods, in declaration order.
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }
}

/// Why a request is not authenticated: the `reason` label of `tollgate_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No credentials.
    Missing,
    /// Credentials that match none (or longer than a method accepts).
    Invalid,
    /// A JWT that is refused.
    Token(TokenFailure),
    /// The credentials could not be checked now: every password check thread is busy and
    /// the queue is full (503, not counted towards `banOnAbuse`).
    Busy,
    /// An authenticated consumer not in `allowedConsumers` (403).
    Forbidden,
}

impl Failure {
    /// The label value.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Invalid => "invalid",
            Failure::Token(t) => t.reason(),
            Failure::Busy => "busy",
            Failure::Forbidden => "forbidden",
        }
    }

    /// Which of two failures of one request is reported: credentials that could not be
    /// checked, then a refused token (it says why), then plain invalid ones; the first of
    /// equals.
    fn most_telling(self, other: Failure) -> Failure {
        let rank = |f: Failure| match f {
            Failure::Missing => 0,
            Failure::Invalid | Failure::Forbidden => 1,
            Failure::Token(_) => 2,
            Failure::Busy => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// An authenticated request: its consumer, and the claim headers to send to the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticated {
    /// The consumer id.
    pub consumer: Arc<str>,
    /// The consumer id as the value of [`CONSUMER_HEADER`], when the method made it ahead of
    /// the request (API keys: when the key file is loaded).
    pub consumer_header: Option<http::HeaderValue>,
    /// Headers to set (JWT claims).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl From<Arc<str>> for Authenticated {
    fn from(consumer: Arc<str>) -> Self {
        Authenticated {
            consumer,
            consumer_header: None,
            headers: Vec::new(),
        }
    }
}

/// Checks a request's credentials against a policy's methods, cheapest first: the consumer
/// of the first that accepts them, [`Failure::Missing`] when the request has credentials of
/// none, or the most telling failure.
pub async fn authenticate(rt: &AuthRuntime, req: &Request<'_>) -> Result<Authenticated, Failure> {
    // `Authorization` holds one credential (RFC 9110 section 11.6.2): with two, the one
    // checked here and the one a backend reads could be different consumers' (RFC 6750
    // section 3.1: invalid_request).
    if req
        .headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(Failure::Invalid);
    }
    let mut failure: Option<Failure> = None;
    for &i in &rt.by_cost {
        match rt.methods[i].attempt(req).await {
            None => {}
            Some(Ok(a)) => return Ok(a),
            Some(Err(f)) => failure = Some(failure.map_or(f, |o| o.most_telling(f))),
        }
    }
    Err(failure.unwrap_or(Failure::Missing))
}

/// The `WWW-Authenticate` challenges of a request on `route` refused with `failure`, one per
/// method: `ApiKey realm="<route>", header="<name>"` (or `query="<name>"`), `Basic
/// realm="<route>", charset="UTF-8"`, `Bearer realm="<route>"` (with `error="invalid_token",
/// error_description="..."` when a token was refused), `ClientCertificate realm="<route>"`.
pub fn challenges(rt: &AuthRuntime, route: &str, failure: Failure) -> Vec<String> {
    rt.methods
        .iter()
        .map(|m| m.challenge(route, failure))
        .collect()
}

/// What a policy's methods want, one line each, in declaration order (nothing is loaded).
pub fn describe(def: &AuthDef) -> Vec<String> {
    Method::of(def).iter().map(Method::describe).collect()
}

/// Whether the policy lets `consumer` through (`allowedConsumers`).
pub fn allowed(def: &AuthDef, consumer: &str) -> bool {
    def.allowed_consumers
        .as_ref()
        .is_none_or(|list| list.iter().any(|c| &**c == consumer))
}

/// The request headers of `def` a client may not set on its routes (they are removed before
/// authentication, like `X-Tollgate-Consumer` on every route): the claim headers of its JWT
/// providers.
pub fn owned_headers(def: &AuthDef) -> impl Iterator<Item = &http::HeaderName> {
    def.jwt
        .iter()
        .flat_map(|p| p.claim_headers.iter().map(|(_, h)| h))
}

/// Whether `name` (any case) is a request field the proxy sets itself on a route with policy
/// `def`: [`CONSUMER_HEADER`] and the claim headers. Such a field is never the client's, so a
/// `Connection` that names it does not take it off the request for the backend.
pub fn set_by_proxy(def: Option<&AuthDef>, name: &str) -> bool {
    name.eq_ignore_ascii_case(CONSUMER_HEADER)
        || def.is_some_and(|d| owned_headers(d).any(|h| name.eq_ignore_ascii_case(h.as_str())))
}

#[cfg(test)]
mod tests;
