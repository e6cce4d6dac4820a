//! The metrics of cluster limits (`tollgate_ratelimit_limited_total`, the Redis round trips,
//! sync errors, commands, keys tracked and the fallback state), apart from the limiter's logic
//! in `mod.rs`.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::metrics::{Catalog, PolicyLabel, ReasonLabel};

/// Labels of `tollgate_ratelimit_limited_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitedLabels {
    /// `node` or `cluster`.
    pub scope: &'static str,
    /// What refused: `bucket` (a node limit), `shared_window` (the Redis window is used up),
    /// `local_share` (this node's share: a key without a lease yet, or Redis down with
    /// `onBackendFailure: local`), `backend_failure` (`onBackendFailure: deny`).
    pub basis: &'static str,
}

/// The metrics of cluster limits (cheap to clone).
#[derive(Debug, Clone)]
pub struct ClusterMetrics {
    /// `tollgate_ratelimit_limited_total{scope,basis}`.
    pub limited: Family<LimitedLabels, Counter>,
    /// `tollgate_ratelimit_redis_round_trip_seconds`.
    pub round_trip: Histogram,
    /// `tollgate_ratelimit_redis_sync_errors_total{reason}`.
    pub sync_errors: Family<ReasonLabel, Counter>,
    /// `tollgate_ratelimit_redis_commands_total`.
    pub commands: Counter,
    /// `tollgate_ratelimit_cluster_keys{policy}`.
    pub keys: Family<PolicyLabel, Gauge>,
    /// `tollgate_ratelimit_cluster_fallback`.
    pub fallback: Gauge,
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        ClusterMetrics {
            limited: Family::default(),
            // 50 µs to about 1.6 s.
            round_trip: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            sync_errors: Family::default(),
            commands: Counter::default(),
            keys: Family::default(),
            fallback: Gauge::default(),
        }
    }
}

impl ClusterMetrics {
    /// Creates the families and registers them.
    pub fn register(
        registry: &mut prometheus_client::registry::Registry,
        catalog: &mut Catalog,
    ) -> Self {
        let m = ClusterMetrics::default();
        catalog.register(
            registry,
            "tollgate_ratelimit_limited",
            "Requests over a rate limit (refused, or counted by a shadow policy), by scope (node, cluster) and basis (bucket, shared_window, local_share, backend_failure).",
            m.limited.clone(),
        );
        catalog.register(
            registry,
            "tollgate_ratelimit_redis_round_trip_seconds",
            "Round trips to the Redis of cluster rate limits (one round of syncs, or a health check).",
            m.round_trip.clone(),
        );
        catalog.register(
            registry,
            "tollgate_ratelimit_redis_sync_errors",
            "Failed syncs and health checks of cluster rate limits, by reason (connect, timeout, io, response).",
            m.sync_errors.clone(),
        );
        catalog.register(
            registry,
            "tollgate_ratelimit_redis_commands",
            "Commands sent to the Redis of cluster rate limits (scripts and health checks).",
            m.commands.clone(),
        );
        catalog.register(
            registry,
            "tollgate_ratelimit_cluster_keys",
            "Keys of cluster rate limits tracked by this agent, by RateLimitPolicy.",
            m.keys.clone(),
        );
        catalog.register(
            registry,
            "tollgate_ratelimit_cluster_fallback",
            "1 while the revision in force has cluster rate limits and they cannot reach Redis (or none is configured), or a Redis Cluster primary (its slots' keys), so they follow their onBackendFailure; 0 otherwise.",
            m.fallback.clone(),
        );
        m
    }
}
