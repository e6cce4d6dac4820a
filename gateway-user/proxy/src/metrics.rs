//! The L7 proxy's metrics: its families, registered into a registry the agent hands it
//! ([`HttpMetrics::register`]). Names are a contract (prefix `tollgate_`); label values are
//! route, policy, reason and Secret names only, never addresses, keys or consumers.
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

/// The name and type of every family registered through it. prometheus-client encodes a family
/// only once it has a series, so this is how the agent lists everything it may export (for the
/// docs and dashboard checks) without a hand-kept list.
#[derive(Debug, Default, Clone)]
pub struct Catalog(Vec<(String, MetricType)>);

impl Catalog {
    /// Registers `metric` as `name` into `registry`, and remembers it.
    pub fn register(
        &mut self,
        registry: &mut Registry,
        name: &str,
        help: &str,
        metric: impl Metric,
    ) {
        self.0.push((name.to_owned(), metric.metric_type()));
        registry.register(name, help, metric);
    }

    /// The series names of everything registered: `_total` for counters, `_bucket`, `_sum` and
    /// `_count` for histograms, `_info` for info metrics, the name for gauges.
    pub fn series_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, kind) in &self.0 {
            match kind {
                MetricType::Counter if !name.ends_with("_total") => {
                    out.push(format!("{name}_total"))
                }
                MetricType::Histogram => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        out.push(format!("{name}{suffix}"));
                    }
                }
                MetricType::Info => out.push(format!("{name}_info")),
                _ => out.push(name.clone()),
            }
        }
        out
    }
}

/// Label of failures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: String,
}

/// Labels of `tollgate_http_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpRequestLabels {
    /// `namespace/name` of the HTTPRoute, or `none`.
    pub route: String,
    /// The method, one of a fixed set or `OTHER`.
    pub method: &'static str,
    /// The status code sent.
    pub code: u16,
}

/// Label of per-route histograms.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// `namespace/name` of the HTTPRoute, or `none`.
    pub route: String,
}

/// Labels of `tollgate_http_mirrored_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    /// `namespace/name` of the HTTPRoute.
    pub route: String,
    /// `ok` (the mirror backend answered, whatever the status), `failed` (no answer: connect,
    /// timeout, reset), `busy` (not sent: too many copies in flight), `body` (not sent: the
    /// request body was streamed, not buffered), `no_endpoint`.
    pub result: &'static str,
}

/// Labels of `tollgate_http_upstream_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// `namespace/name` of the HTTPRoute.
    pub route: String,
    /// `connect`, `tls`, `timeout`, `reset`, `invalid_response`, `no_healthy_endpoint`,
    /// `no_backend` or `upgrade_limit` (an upgrade refused at the connection limit). One per
    /// failed attempt: a request retried twice may count three.
    pub reason: &'static str,
}

/// Labels of `tollgate_http_ratelimited_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitedLabels {
    /// `namespace/name` of the HTTPRoute.
    pub route: String,
    /// `namespace/name` of the RateLimitPolicy.
    pub policy: String,
}

/// Label of per-policy counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    /// `namespace/name` of the policy.
    pub policy: String,
}

/// Labels of `tollgate_auth_failures_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// `namespace/name` of the HTTPRoute.
    pub route: String,
    /// `missing` (no credentials), `invalid` (credentials that match none, or a token that
    /// is malformed or of a refused algorithm), `expired`, `not_yet_valid`, `issuer`,
    /// `audience`, `unknown_kid`, `signature` (JWTs), or `forbidden` (403: a consumer not in
    /// `allowedConsumers`).
    pub reason: &'static str,
}

/// Labels of the JWKS metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    /// `namespace/name` of the AuthPolicy.
    pub policy: String,
    /// Name of the JWT provider.
    pub provider: String,
}

/// The JWKS metrics (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct JwksMetrics {
    /// `tollgate_jwks_refresh_failures_total{policy,provider}`: JWKS fetches that failed (the
    /// keys fetched before stay in use).
    pub refresh_failures: Family<JwksLabels, Counter>,
    /// `tollgate_jwks_keys{policy,provider}`: usable keys of the JWKS in use.
    pub keys: Family<JwksLabels, Gauge>,
}

/// Every value of [`TlsFailureLabels::reason`] (what `tls::failure_reason` and the listener
/// give).
pub const TLS_FAILURE_REASONS: [&str; 8] = [
    "timeout",
    "unknown_sni",
    "malformed",
    "incompatible",
    "client_alert",
    "client_certificate",
    "protocol",
    "closed",
];

/// Label of `tollgate_http_tls_handshake_failures_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsFailureLabels {
    /// `timeout`, `unknown_sni`, `malformed` (not TLS, or a broken message), `incompatible`
    /// (no common version, cipher suite or ALPN protocol), `client_alert` (the client gave up,
    /// e.g. it does not trust the certificate), `client_certificate`, `protocol` (another TLS
    /// error) or `closed` (the connection ended during the handshake).
    pub reason: &'static str,
}

/// Label of `tollgate_http_tls_certificate_reload_failures_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabel {
    /// `namespace/name` of the Secret (a directory under `--tls-secrets-dir`).
    pub secret: String,
}

/// The L7 proxy's metrics (cheap to clone: every family is shared).
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// `tollgate_http_requests_total{route,method,code}`.
    pub requests: Family<HttpRequestLabels, Counter>,
    /// `tollgate_http_request_duration_seconds{route}`: from the request's arrival to the end
    /// of the response.
    pub duration: Family<RouteLabel, Histogram>,
    /// `tollgate_http_upstream_errors_total{route,reason}`: attempts to backends that failed.
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// `tollgate_http_endpoint_ejections_total{backend}`: endpoints taken out of rotation by
    /// passive health checking.
    pub ejections: Family<crate::upstream::BackendLabel, Counter>,
    /// `tollgate_http_ratelimited_total{route,policy}`: requests over a limit of the policy:
    /// refused with 429 (`enforce`), or let through (`shadow`).
    pub ratelimited: Family<RateLimitedLabels, Counter>,
    /// `tollgate_http_ratelimit_evictions_total{policy}`: keys a full limiter forgot to make
    /// room for a new one while their bucket was not full again (they start over with a full
    /// bucket).
    pub ratelimit_evictions: Family<PolicyLabel, Counter>,
    /// `tollgate_http_abuse_evictions_total{policy}`: clients whose `banOnAbuse` failure count
    /// was forgotten, before its window ended, to make room for another client.
    pub abuse_evictions: Family<PolicyLabel, Counter>,
    /// `tollgate_auth_failures_total{route,reason}`: requests refused with 401 (or 403,
    /// `forbidden`) by an AuthPolicy.
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    /// JWKS fetches and keys.
    pub jwks: JwksMetrics,
    /// `tollgate_http_tls_handshake_failures_total{reason}`.
    pub tls_handshake_failures: Family<TlsFailureLabels, Counter>,
    /// `tollgate_http_tls_certificate_reload_failures_total{secret}`: changed certificate files
    /// that could not be loaded (the certificate loaded before stays in use).
    pub tls_reload_failures: Family<SecretLabel, Counter>,
    /// `tollgate_http_request_body_too_large_total{route}`: requests refused with 413 (or cut
    /// off) because their body was over the route's limit.
    pub body_too_large: Family<RouteLabel, Counter>,
    /// `tollgate_http_connection_errors_total{reason}`: client connections the HTTP layer
    /// ended with an error (requests refused before routing: malformed, too large, too slow).
    pub connection_errors: Family<ReasonLabel, Counter>,
    /// `tollgate_http_mirrored_requests_total{route,result}`: copies of requests for the
    /// `RequestMirror` filters of a route, by what became of them.
    pub mirrored: Family<MirrorLabels, Counter>,
    /// Cluster rate limits: requests limited by scope, Redis round trips and errors, keys,
    /// fallback.
    pub cluster: crate::cluster::ClusterMetrics,
}

/// Buckets of the request duration histogram: 1 ms to about 33 s.
fn http_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl HttpMetrics {
    /// Creates the families and registers them into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        Self::register_with(registry, &mut Catalog::default())
    }

    /// As [`HttpMetrics::register`], remembering the families in `catalog`.
    pub fn register_with(registry: &mut Registry, catalog: &mut Catalog) -> Self {
        let requests = Family::<HttpRequestLabels, Counter>::default();
        catalog.register(
            registry,
            "tollgate_http_requests",
            "HTTP requests answered by the L7 proxy, by route, method and status code.",
            requests.clone(),
        );
        let duration = Family::<RouteLabel, Histogram>::new_with_constructor(
            http_duration_histogram as fn() -> Histogram,
        );
        catalog.register(
            registry,
            "tollgate_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route.",
            duration.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        catalog.register(
            registry,
            "tollgate_http_upstream_errors",
            "Failed attempts to reach a backend, by route and reason.",
            upstream_errors.clone(),
        );
        let ejections = Family::<crate::upstream::BackendLabel, Counter>::default();
        catalog.register(
            registry,
            "tollgate_http_endpoint_ejections",
            "Backend endpoints taken out of rotation after consecutive failures.",
            ejections.clone(),
        );
        let ratelimited = Family::<RateLimitedLabels, Counter>::default();
        catalog.register(
            registry,
            "tollgate_http_ratelimited",
            "Requests over a rate limit, by route and RateLimitPolicy: refused with 429, or let through by a policy in shadow mode.",
            ratelimited.clone(),
        );
        let ratelimit_evictions = Family::<PolicyLabel, Counter>::default();
        catalog.register(
            registry,
            "tollgate_http_ratelimit_evictions",
            "Keys a rate limiter forgot, to make room for a new key in its full table, while their bucket was not full again (such a key starts over with a full bucket), by RateLimitPolicy.",
            ratelimit_evictions.clone(),
        );
        let abuse_evictions = Family::<PolicyLabel, Counter>::default();
        catalog.register(
            registry,
            "tollgate_http_abuse_evictions",
            "Clients whose banOnAbuse failure count was forgotten before its window ended, to make room for another client in the policy's full table, by policy.",
            abuse_evictions.clone(),
        );
        let auth_failures = Family::<AuthFailureLabels, Counter>::default();
        catalog.register(
            registry,
            "tollgate_auth_failures",
            "Requests refused by an AuthPolicy (401, or 403 for forbidden), by route and reason (missing, invalid, expired, not_yet_valid, issuer, audience, unknown_kid, signature, forbidden).",
            auth_failures.clone(),
        );
        let jwks = JwksMetrics::default();
        catalog.register(
            registry,
            "tollgate_jwks_refresh_failures",
            "JWKS fetches of JWT providers that failed (the keys fetched before stay in use), by AuthPolicy and provider.",
            jwks.refresh_failures.clone(),
        );
        catalog.register(
            registry,
            "tollgate_jwks_keys",
            "Usable keys of the JWKS in use, by AuthPolicy and provider.",
            jwks.keys.clone(),
        );
        let tls_handshake_failures = Family::<TlsFailureLabels, Counter>::default();
        // Every reason from the start (at 0), so that rate() and alerts see the series.
        for reason in TLS_FAILURE_REASONS {
            tls_handshake_failures
                .get_or_create(&TlsFailureLabels { reason })
                .inc_by(0);
        }
        catalog.register(
            registry,
            "tollgate_http_tls_handshake_failures",
            "TLS handshakes on HTTPS listeners that failed, by reason.",
            tls_handshake_failures.clone(),
        );
        let tls_reload_failures = Family::<SecretLabel, Counter>::default();
        catalog.register(
            registry,
            "tollgate_http_tls_certificate_reload_failures",
            "Changed certificate files that could not be loaded (the previous certificate stays in use), by Secret.",
            tls_reload_failures.clone(),
        );
        let body_too_large = Family::<RouteLabel, Counter>::default();
        catalog.register(
            registry,
            "tollgate_http_request_body_too_large",
            "Requests answered 413, or whose response was cut off, because their body was over the route's limit (BackendTrafficPolicy requestBody.maxSize, else --max-request-body), by route.",
            body_too_large.clone(),
        );
        let connection_errors = Family::<ReasonLabel, Counter>::default();
        catalog.register(
            registry,
            "tollgate_http_connection_errors",
            "Client connections ended by an HTTP error before a request could be routed, by reason (malformed, head_too_large, header_timeout, incomplete, other).",
            connection_errors.clone(),
        );
        let mirrored = Family::<MirrorLabels, Counter>::default();
        catalog.register(
            registry,
            "tollgate_http_mirrored_requests",
            "Copies of requests for a route's RequestMirror filters, by result (ok, failed, busy, body, no_endpoint); the client's response never waits for them.",
            mirrored.clone(),
        );
        let cluster = crate::cluster::ClusterMetrics::register(registry, catalog);
        HttpMetrics {
            cluster,
            mirrored,
            connection_errors,
            body_too_large,
            requests,
            duration,
            upstream_errors,
            ejections,
            ratelimited,
            ratelimit_evictions,
            abuse_evictions,
            auth_failures,
            jwks,
            tls_handshake_failures,
            tls_reload_failures,
        }
    }
}

/// Most `(method, code)` pairs remembered per route; a route answering with more distinct
/// pairs than this looks the rest up in the family each time (still counted right).
const PAIRS_PER_ROUTE: usize = 16;
/// Most routes remembered; past it the cache starts over (a revision with more routes than
/// this, all busy, pays the family look-up again, as before the cache).
const ROUTES_CACHED: usize = 16_384;

/// Handles of the series every request touches (`tollgate_http_requests_total` and
/// `tollgate_http_request_duration_seconds` of its route), resolved once per route instead of
/// per request: a family look-up hashes the label set (the route's name copied into a new
/// `String`, twice) under the family's lock. A handle shares its value with the family's
/// series, and the proxy never removes a series, so counting through it is counting in the
/// family.
///
/// Keyed by the address of the route's name (`Arc<str>`, shared by every request of the
/// route, and by the [`crate::router::NO_ROUTE`] requests of a proxy): the entry holds that
/// `Arc`, so the address cannot be reused by another name while the entry lives. One per
/// worker thread (behind an uncontended lock).
#[derive(Default)]
pub struct RouteSeries {
    routes: rustc_hash::FxHashMap<usize, RouteEntry>,
}

struct RouteEntry {
    /// Keeps the key's address alive and unique.
    _route: Arc<str>,
    duration: Histogram,
    requests: Vec<(&'static str, u16, Counter)>,
}

impl RouteSeries {
    /// Counts one answered request of `route` (`method`, `code`) that took `seconds`.
    pub fn record(
        &mut self,
        metrics: &HttpMetrics,
        route: &Arc<str>,
        method: &'static str,
        code: u16,
        seconds: f64,
    ) {
        let key = Arc::as_ptr(route) as *const u8 as usize;
        if !self.routes.contains_key(&key) && self.routes.len() >= ROUTES_CACHED {
            self.routes.clear();
        }
        let entry = self.routes.entry(key).or_insert_with(|| RouteEntry {
            _route: route.clone(),
            duration: metrics
                .duration
                .get_or_create(&RouteLabel {
                    route: route.to_string(),
                })
                .clone(),
            requests: Vec::new(),
        });
        entry.duration.observe(seconds);
        if let Some((_, _, c)) = entry
            .requests
            .iter()
            .find(|(m, c, _)| *c == code && *m == method)
        {
            c.inc();
            return;
        }
        let counter = metrics
            .requests
            .get_or_create(&HttpRequestLabels {
                route: route.to_string(),
                method,
                code,
            })
            .clone();
        counter.inc();
        if entry.requests.len() < PAIRS_PER_ROUTE {
            entry.requests.push((method, code, counter));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn exported(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn cached_handles_count_in_the_families() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        let mut series = RouteSeries::default();
        let a: Arc<str> = Arc::from("default/a");
        // Another Arc with the same name: its own entry, the same series.
        let a2: Arc<str> = Arc::from("default/a");
        let b: Arc<str> = Arc::from("default/b");
        series.record(&metrics, &a, "GET", 200, 0.0005);
        series.record(&metrics, &a, "GET", 200, 0.0005);
        series.record(&metrics, &a2, "GET", 200, 0.0005);
        series.record(&metrics, &a, "POST", 503, 2.0);
        series.record(&metrics, &b, "GET", 404, 0.0005);
        let text = exported(&registry);
        for line in [
            "tollgate_http_requests_total{route=\"default/a\",method=\"GET\",code=\"200\"} 3",
            "tollgate_http_requests_total{route=\"default/a\",method=\"POST\",code=\"503\"} 1",
            "tollgate_http_requests_total{route=\"default/b\",method=\"GET\",code=\"404\"} 1",
            "tollgate_http_request_duration_seconds_count{route=\"default/a\"} 4",
            "tollgate_http_request_duration_seconds_bucket{le=\"0.001\",route=\"default/a\"} 3",
            "tollgate_http_request_duration_seconds_count{route=\"default/b\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }

    #[test]
    fn pairs_and_routes_past_the_cache_bounds_still_count() {
        let mut registry = Registry::default();
        let metrics = HttpMetrics::register(&mut registry);
        let mut series = RouteSeries::default();
        let a: Arc<str> = Arc::from("default/a");
        // More (method, code) pairs than one route remembers, each twice.
        for _ in 0..2 {
            for code in 200..(200 + PAIRS_PER_ROUTE as u16 + 4) {
                series.record(&metrics, &a, "GET", code, 0.0);
            }
        }
        let text = exported(&registry);
        for code in 200..(200 + PAIRS_PER_ROUTE as u16 + 4) {
            let line = format!(
                "tollgate_http_requests_total{{route=\"default/a\",method=\"GET\",code=\"{code}\"}} 2"
            );
            assert!(text.contains(&line), "{line} not in the export");
        }
        // More routes than the cache holds: it starts over, nothing is lost.
        let routes: Vec<Arc<str>> = (0..ROUTES_CACHED + 3)
            .map(|i| Arc::from(format!("default/r{i}")))
            .collect();
        for r in routes.iter().chain(routes.iter().take(5)) {
            series.record(&metrics, r, "GET", 200, 0.0);
        }
        assert!(series.routes.len() <= ROUTES_CACHED);
        let text = exported(&registry);
        assert!(text.contains(
            "tollgate_http_requests_total{route=\"default/r0\",method=\"GET\",code=\"200\"} 2"
        ));
        assert!(text.contains(&format!(
            "tollgate_http_requests_total{{route=\"default/r{}\",method=\"GET\",code=\"200\"}} 1",
            ROUTES_CACHED + 2
        )));
    }
}
