//! The agent's metrics registry: the pipeline's and the bans' families (here), the proxy's
//! (registered by the proxy crate into this registry), and the kernel counters (a collector).
//! Names are a contract, prefix `tollgate_`: docs/telemetry.md lists them, and a test holds the
//! list to what this registry exports.
//!
//! The L4 packet counters are not kept here: they live in the kernel's per-CPU maps and are
//! read and summed when Prometheus scrapes (a collector), so the packet path never does any
//! work for metrics. Label values are policy, rule, action and reason names only: never
//! addresses or keys.
use std::sync::{Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::Shared;
use tollgate_dataplane::counters;
pub use tollgate_proxy::metrics::{Catalog, HttpMetrics, ReasonLabel};

/// Labels of the L4 counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    /// Policy name.
    pub policy: String,
    /// Rule name (`(default)` for the default action).
    pub rule: String,
    /// `pass` or `drop`.
    pub action: String,
    /// `policy`, `ratelimit`, `default`, `blocklist` or `audit`.
    pub reason: String,
}

/// Labels of the revision info metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    /// Where the policy comes from.
    pub source: String,
    /// The revision in force.
    pub revision: String,
}

/// Label of the webhook calls.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `accepted`, `unauthorized`, `too_large`, `disabled` or `bad_request`.
    pub outcome: String,
}

/// Label of the left-out objects gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// An L7 kind: Gateway, HTTPRoute, Backend, AuthPolicy, RateLimitPolicy,
    /// BackendTrafficPolicy.
    pub kind: String,
}

/// Label of the Kubernetes writes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok`, `forbidden`, `invalid`, `error` (and `throttled` for events).
    pub result: String,
}

/// The writes of this node's `TollgateNode` and of its events (Kubernetes API).
#[derive(Debug, Clone, Default)]
pub struct KubernetesMetrics {
    /// `tollgate_kubernetes_status_writes_total{result}`: applies of the object and of its
    /// status.
    pub status_writes: Family<ResultLabel, Counter>,
    /// `tollgate_kubernetes_events_total{result}`: events sent, failed or dropped by the rate
    /// limit.
    pub events: Family<ResultLabel, Counter>,
}

impl KubernetesMetrics {
    fn register(registry: &mut Registry, catalog: &mut Catalog) -> Self {
        let m = KubernetesMetrics::default();
        // Every result from the start (at 0), so that rate() and alerts see the series.
        for result in tollgate_kubernetes::report::WRITE_RESULTS {
            let label = ResultLabel {
                result: result.into(),
            };
            m.status_writes.get_or_create(&label).inc_by(0);
            m.events.get_or_create(&label).inc_by(0);
        }
        m.events
            .get_or_create(&ResultLabel {
                result: "throttled".into(),
            })
            .inc_by(0);
        catalog.register(
            registry,
            "tollgate_kubernetes_status_writes",
            "Writes of this node's TollgateNode (the object, its status) by result: ok, forbidden, invalid, error.",
            m.status_writes.clone(),
        );
        catalog.register(
            registry,
            "tollgate_kubernetes_events",
            "Events about this node's TollgateNode by result: ok, forbidden, invalid, error, throttled (dropped by the rate limit).",
            m.events.clone(),
        );
        m
    }
}

impl tollgate_kubernetes::ReportMetrics for KubernetesMetrics {
    fn status_write(&self, result: &'static str) {
        self.status_writes
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    fn event(&self, result: &'static str) {
        self.events
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }
}

/// Label of the per-interface gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterfaceLabel {
    /// A configured interface (`--interface`).
    pub interface: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: String,
}

/// Labels of `tollgate_bans_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BanLabels {
    /// `namespace/name` of the policy that banned (`manual` for `tollgate bans add`).
    pub policy: String,
    /// `auth`, `ratelimit` or `manual`.
    pub reason: &'static str,
}

/// The metrics of `banOnAbuse` (cheap to clone: every metric is shared). Never an address as
/// a label.
#[derive(Debug, Clone)]
pub struct BanMetrics {
    /// `tollgate_bans_total{policy,reason}`: sources put into the XDP blocklist by the agent.
    pub bans: Family<BanLabels, Counter>,
    /// `tollgate_bans_active`: bans in force (read from the blocklist on the ban task's timer).
    pub active: Gauge,
    /// `tollgate_ban_requests_dropped_total`: bans the proxy could not hand to the ban task
    /// (its queue was full).
    pub dropped: Counter,
    /// `tollgate_ban_failures_total{reason}`: bans not written: `full` (the blocklist holds
    /// its capacity and no entry could be evicted) or `error`.
    pub failures: Family<ReasonLabel, Counter>,
    /// `tollgate_bans_evicted_total`: bans removed before their end to make room for a new
    /// one in a full blocklist (those nearest to their end first).
    pub evicted: Counter,
}

impl BanMetrics {
    fn register(registry: &mut Registry, catalog: &mut Catalog) -> Self {
        let bans = Family::<BanLabels, Counter>::default();
        catalog.register(
            registry,
            "tollgate_bans",
            "Sources put into the XDP blocklist, by policy and reason (auth, ratelimit, manual).",
            bans.clone(),
        );
        let active = Gauge::default();
        catalog.register(
            registry,
            "tollgate_bans_active",
            "Sources in the XDP blocklist now.",
            active.clone(),
        );
        let dropped = Counter::default();
        catalog.register(
            registry,
            "tollgate_ban_requests_dropped",
            "Bans lost because the ban task's queue was full.",
            dropped.clone(),
        );
        let failures = Family::<ReasonLabel, Counter>::default();
        for reason in ["full", "error"] {
            failures
                .get_or_create(&ReasonLabel {
                    reason: reason.into(),
                })
                .inc_by(0);
        }
        catalog.register(
            registry,
            "tollgate_ban_failures",
            "Bans not written: full (the blocklist is at capacity and nothing could be evicted) or error.",
            failures.clone(),
        );
        let evicted = Counter::default();
        registry.register(
            "tollgate_bans_evicted",
            "Bans removed before their end to make room for a new ban in a full blocklist (those nearest to their end first).",
            evicted.clone(),
        );
        BanMetrics {
            bans,
            active,
            dropped,
            failures,
            evicted,
        }
    }
}

/// The metrics the agent updates, and the registry that serves them.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Every family registered (collectors' families are read from a scrape).
    catalog: Catalog,
    /// `tollgate_policy_apply_duration_seconds`.
    pub apply_duration: Histogram,
    /// `tollgate_policy_apply_failures_total{reason}`: `invalid` (refused by the compiler),
    /// `source` (could not be read), `apply` (the kernel refused a write).
    pub apply_failures: Family<ReasonLabel, Counter>,
    /// `tollgate_policy_last_apply_success_timestamp_seconds`.
    pub last_apply_success: Gauge<f64, AtomicU64>,
    /// `tollgate_policy_revision_info{source,revision}`: 1 for the revision in force.
    pub revision_info: Family<RevisionLabels, Gauge>,
    /// `tollgate_policy_drift_corrections_total`: map entries put back, and programs attached
    /// again to an interface, after they were changed behind the agent's back.
    pub drift_corrections: Counter,
    /// `tollgate_interface_enforced{interface}`: 1 when the program runs on the interface.
    interface_enforced: Family<InterfaceLabel, Gauge>,
    /// `tollgate_git_fetch_duration_seconds`: fetches of the Git source, failed ones included.
    pub git_fetch_duration: Histogram,
    /// `tollgate_webhook_calls_total{outcome}`: calls of `POST /hooks/git`.
    pub webhook_calls: Family<OutcomeLabel, Counter>,
    /// `tollgate_policy_objects_refused{kind}`: objects of the revision in force left out.
    objects_refused: Family<KindLabel, Gauge>,
    /// `tollgate_policy_partial_problems`: what applies only in part in the revision in force.
    partial_problems: Gauge,
    /// The L7 proxy's metrics.
    pub http: HttpMetrics,
    /// The metrics of `banOnAbuse`.
    pub bans: BanMetrics,
    /// The writes of this node's `TollgateNode`.
    pub kubernetes: KubernetesMetrics,
}

/// Reads the kernel counters at scrape time.
#[derive(Debug)]
struct L4Collector {
    shared: Weak<Shared>,
}

impl Collector for L4Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(shared) = self.shared.upgrade() else {
            return Ok(());
        };
        let names = shared
            .counter_names
            .read()
            .map(|n| n.clone())
            .unwrap_or_default();
        // A scrape while no maps are pinned (not started yet) shows the L4 families without
        // series: every family is always described, so the exported names can be listed.
        let report = counters::read_named(&shared.pin_dir, &names).ok();
        encode_l4(&mut encoder, report.as_ref())?;

        let status = shared.status.read().map(|s| s.clone()).unwrap_or_default();
        let mut entries = encoder.encode_descriptor(
            "tollgate_map_entries",
            "Entries the revision in force uses, per map (one generation).",
            None,
            MetricType::Gauge,
        )?;
        let fill = [
            (
                "rules",
                status.rules as i64,
                i64::from(gateway_common::MAX_RULE_IDS),
            ),
            (
                "source",
                status.source_entries as i64,
                i64::from(gateway_common::MAX_SOURCE_ENTRIES / 2),
            ),
            (
                "ports",
                status.port_entries as i64,
                i64::from(gateway_common::MAX_PORT_ENTRIES / 2),
            ),
            // The exact-address tables and the leaves of the fast path: a blocklist that
            // outgrows them is still enforced, through the trie, at the trie's cost.
            (
                "exact_v4",
                status.fast_path.exact_v4_ways as i64,
                i64::from(gateway_common::EXACT4_SETS) * gateway_common::EXACT4_WAYS as i64,
            ),
            (
                "exact_v6",
                status.fast_path.exact_v6_ways as i64,
                i64::from(gateway_common::EXACT6_SETS) * gateway_common::EXACT6_WAYS as i64,
            ),
            (
                "filter_v6",
                status.fast_path.exact_v6_filter_bits as i64,
                1i64 << gateway_common::FILTER6_BITS_LOG,
            ),
            (
                "leaves",
                status.fast_path.leaves as i64,
                i64::from(gateway_common::LEAF_NUMBERS),
            ),
        ];
        for (map, n, _) in fill {
            ConstGauge::new(n).encode(entries.encode_family(&MapLabel { map: map.into() })?)?;
        }
        let mut capacity = encoder.encode_descriptor(
            "tollgate_map_capacity",
            "Entries a revision can use, per map (one generation).",
            None,
            MetricType::Gauge,
        )?;
        for (map, _, cap) in fill {
            ConstGauge::new(cap).encode(capacity.encode_family(&MapLabel { map: map.into() })?)?;
        }
        encode_process_metrics(&mut encoder)
    }
}

/// The L4 counters of one read of the kernel maps (`None`: the maps cannot be read; the
/// families are described, without series).
fn encode_l4(
    encoder: &mut DescriptorEncoder,
    report: Option<&counters::CounterReport>,
) -> Result<(), std::fmt::Error> {
    let empty = counters::CounterReport::default();
    let read = report.is_some();
    let report = report.unwrap_or(&empty);
    let labels = |r: &counters::RuleCount| RuleLabels {
        policy: r.policy.clone(),
        rule: r.rule.clone(),
        action: r.action.to_owned(),
        reason: r.reason.to_owned(),
    };
    let mut packets = encoder.encode_descriptor(
        "tollgate_l4_packets",
        "Packets judged by the L4 program, by the rule that decided (summed over CPUs).",
        None,
        MetricType::Counter,
    )?;
    for r in &report.rules {
        ConstCounter::new(r.packets).encode(packets.encode_family(&labels(r))?)?;
    }
    let mut bytes = encoder.encode_descriptor(
        "tollgate_l4_bytes",
        "Bytes judged by the L4 program, by the rule that decided (summed over CPUs).",
        None,
        MetricType::Counter,
    )?;
    for r in &report.rules {
        ConstCounter::new(r.bytes).encode(bytes.encode_family(&labels(r))?)?;
    }
    let s = &report.stats;
    encode_unjudged(encoder, s, read)?;
    let evicted = encoder.encode_descriptor(
        "tollgate_l4_ratelimit_buckets_evicted",
        "Token buckets of sources still being limited that a new source's bucket replaced (their set of the bucket table was full): each gives its source a full bucket again.",
        None,
        MetricType::Counter,
    )?;
    if read {
        ConstCounter::new(s.buckets_evicted).encode(evicted)?;
    }
    Ok(())
}

/// `tollgate_l4_unjudged_packets_total` by reason (no series when the maps could not be read).
fn encode_unjudged(
    encoder: &mut DescriptorEncoder,
    s: &counters::Stats,
    read: bool,
) -> Result<(), std::fmt::Error> {
    let mut unjudged = encoder.encode_descriptor(
            "tollgate_l4_unjudged_packets",
            "Packets no rule judged: non_ip and fragment passed, malformed and unsupported dropped, unconfigured interface passed, failsafe (replies of the API server, lock-out protection) passed.",
            None,
            MetricType::Counter,
        )?;
    let reasons = [
        ("non_ip", s.non_ip),
        ("malformed", s.malformed),
        ("fragment", s.fragment_pass),
        ("unconfigured", s.unconfigured),
        ("unsupported", s.unsupported),
        ("failsafe", s.failsafe),
    ];
    for (reason, v) in reasons.into_iter().filter(|_| read) {
        ConstCounter::new(v).encode(unjudged.encode_family(&ReasonLabel {
            reason: reason.into(),
        })?)?;
    }
    Ok(())
}

/// The standard `process_*` metrics, from /proc/self (Linux).
fn encode_process_metrics(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Ok(());
    };
    // Fields after the command name (which may contain spaces) start at ")".
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return Ok(());
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| {
        fields
            .get(n)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    // Field numbers of proc(5), minus 3 (pid, comm and state come before `rest`'s index 0).
    let cpu_seconds = (field(11) + field(12)) as f64 / ticks;
    let rss_bytes = field(21) * page;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let start_seconds = boot as f64 + field(19) as f64 / ticks;
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as i64)
        .unwrap_or(0);
    ConstCounter::new(cpu_seconds).encode(encoder.encode_descriptor(
        "process_cpu_seconds",
        "User and system CPU time spent, in seconds.",
        None,
        MetricType::Counter,
    )?)?;
    ConstGauge::new(rss_bytes as i64).encode(encoder.encode_descriptor(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        None,
        MetricType::Gauge,
    )?)?;
    ConstGauge::new(start_seconds).encode(encoder.encode_descriptor(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds.",
        None,
        MetricType::Gauge,
    )?)?;
    ConstGauge::new(fds).encode(encoder.encode_descriptor(
        "process_open_fds",
        "Open file descriptors.",
        None,
        MetricType::Gauge,
    )?)?;
    Ok(())
}

impl Metrics {
    /// Registers every metric; `shared` is read at scrape time for the kernel counters.
    pub fn new(shared: Weak<Shared>) -> Self {
        let mut registry = Registry::default();
        let mut catalog = Catalog::default();
        let apply_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        catalog.register(
            &mut registry,
            "tollgate_policy_apply_duration_seconds",
            "Time from reading a revision to enforcing it (read, compile, apply).",
            apply_duration.clone(),
        );
        let apply_failures = Family::<ReasonLabel, Counter>::default();
        // Every reason from the start (at 0): the alert on this family (telemetry.md) must
        // see the series before the first failure.
        for kind in tollgate_model::source::RefusalKind::ALL {
            apply_failures
                .get_or_create(&ReasonLabel {
                    reason: kind.as_str().into(),
                })
                .inc_by(0);
        }
        catalog.register(
            &mut registry,
            "tollgate_policy_apply_failures",
            "Revisions that were not applied, by reason.",
            apply_failures.clone(),
        );
        let last_apply_success = Gauge::<f64, AtomicU64>::default();
        catalog.register(
            &mut registry,
            "tollgate_policy_last_apply_success_timestamp_seconds",
            "When a revision was last applied (Unix time).",
            last_apply_success.clone(),
        );
        let revision_info = Family::<RevisionLabels, Gauge>::default();
        catalog.register(
            &mut registry,
            "tollgate_policy_revision_info",
            "The revision in force (value 1).",
            revision_info.clone(),
        );
        let drift_corrections = Counter::default();
        catalog.register(
            &mut registry,
            "tollgate_policy_drift_corrections",
            "Kernel map entries put back, and programs attached again to an interface, after they were changed behind the agent's back.",
            drift_corrections.clone(),
        );
        let interface_enforced = Family::<InterfaceLabel, Gauge>::default();
        catalog.register(
            &mut registry,
            "tollgate_interface_enforced",
            "1 when the kernel shows the program on the configured interface, 0 when it is absent or the program is not attached.",
            interface_enforced.clone(),
        );
        let git_fetch_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        catalog.register(
            &mut registry,
            "tollgate_git_fetch_duration_seconds",
            "Time to fetch the Git source (failed fetches included).",
            git_fetch_duration.clone(),
        );
        let webhook_calls = Family::<OutcomeLabel, Counter>::default();
        // Every outcome from the start (at 0), so that rate() and alerts see the series.
        for outcome in super::webhook::Outcome::ALL {
            webhook_calls
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.as_str().into(),
                })
                .inc_by(0);
        }
        catalog.register(
            &mut registry,
            "tollgate_webhook_calls",
            "Calls of the Git webhook (POST /hooks/git), by outcome.",
            webhook_calls.clone(),
        );
        let objects_refused = Family::<KindLabel, Gauge>::default();
        // Every L7 kind from the start (at 0), so that alerts on `> 0` see the series.
        for kind in tollgate_compile::l7::status::L7_KINDS {
            objects_refused
                .get_or_create(&KindLabel { kind: kind.into() })
                .set(0);
        }
        catalog.register(
            &mut registry,
            "tollgate_policy_objects_refused",
            "Objects of the revision in force that were left out (broken L7 objects; the rest of the revision is served), by kind.",
            objects_refused.clone(),
        );
        let partial_problems = Gauge::default();
        catalog.register(
            &mut registry,
            "tollgate_policy_partial_problems",
            "Problems of the revision in force that leave only part of an object out: rules dropped, rules answering 500 (unresolved backendRefs, no backendRefs, a policy left out), listeners left out, parents a route could not attach to.",
            partial_problems.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        catalog.register(
            &mut registry,
            "tollgate_build_info",
            "The agent's version (value 1).",
            build_info,
        );
        let http = HttpMetrics::register_with(&mut registry, &mut catalog);
        let bans = BanMetrics::register(&mut registry, &mut catalog);
        let kubernetes = KubernetesMetrics::register(&mut registry, &mut catalog);
        registry.register_collector(Box::new(L4Collector { shared }));
        Metrics {
            registry: Mutex::new(registry),
            catalog,
            apply_duration,
            apply_failures,
            last_apply_success,
            revision_info,
            drift_corrections,
            interface_enforced,
            git_fetch_duration,
            webhook_calls,
            objects_refused,
            partial_problems,
            http,
            bans,
            kubernetes,
        }
    }

    /// Records what of the revision in force was left out or applies only in part.
    pub fn acceptance(&self, acceptance: &tollgate_compile::l7::Acceptance) {
        for (kind, n) in acceptance.left_out_by_kind() {
            self.objects_refused
                .get_or_create(&KindLabel { kind: kind.into() })
                .set(n as i64);
        }
        self.partial_problems.set(acceptance.partial.len() as i64);
    }

    /// The name of every sample series the registry can export (`_total` for counters,
    /// `_bucket`/`_sum`/`_count` for histograms): the registered families, and the collectors'
    /// families read from a scrape's descriptors. What dashboards, alerts and the docs may name.
    pub fn exported_names(&self) -> std::collections::BTreeSet<String> {
        let mut names: std::collections::BTreeSet<String> =
            self.catalog.series_names().into_iter().collect();
        for line in self.render(false).lines() {
            let mut parts = line.split_whitespace();
            if (parts.next(), parts.next()) != (Some("#"), Some("TYPE")) {
                continue;
            }
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" if !name.ends_with("_total") => {
                    names.insert(format!("{name}_total"));
                }
                "info" => {
                    names.insert(format!("{name}_info"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        }
        names
    }

    /// Counts a webhook call.
    pub fn webhook_call(&self, outcome: &str) {
        self.webhook_calls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Records whether the program runs on `interface`.
    pub fn interface_enforced(&self, interface: &str, enforced: bool) {
        self.interface_enforced
            .get_or_create(&InterfaceLabel {
                interface: interface.to_owned(),
            })
            .set(i64::from(enforced));
    }

    /// Records the revision in force.
    pub fn applied(&self, source: &str, revision: &str, seconds: f64) {
        self.apply_duration.observe(seconds);
        self.last_apply_success.set(super::unix_now() as f64);
        // Replacing the series is two steps: hold the registry lock that a scrape holds while it
        // encodes, so that no scrape sees the moment with no revision at all.
        let _scrapes_wait = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        self.revision_info.clear();
        self.revision_info
            .get_or_create(&RevisionLabels {
                source: source.into(),
                revision: revision.into(),
            })
            .set(1);
    }

    /// Records a revision that was not applied.
    pub fn failed(&self, reason: &str) {
        self.apply_failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// The exposition: OpenMetrics text, or the classic Prometheus text format (0.0.4) for
    /// clients that do not ask for OpenMetrics (promtool, older scrapers).
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        };
        if encoded.is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_the_contract_metrics_without_client_data() {
        let shared = Shared::new("/nonexistent/tollgate-pins".into());
        shared.metrics.applied("examples/", "dir:1234", 0.012);
        shared.metrics.applied("examples/", "dir:5678", 0.010);
        shared.metrics.failed("invalid");
        shared.status.write().unwrap().fast_path.exact_v6_ways = 42;
        shared
            .status
            .write()
            .unwrap()
            .fast_path
            .exact_v6_filter_bits = 7;
        let text = shared.metrics.render(true);
        for name in [
            "tollgate_map_entries{map=\"exact_v6\"} 42",
            "tollgate_map_capacity{map=\"exact_v6\"} 81920",
            "tollgate_map_capacity{map=\"exact_v4\"} 229376",
            "tollgate_map_capacity{map=\"leaves\"} 131072",
            "tollgate_map_entries{map=\"filter_v6\"} 7",
            "tollgate_map_capacity{map=\"filter_v6\"} 2097152",
            "tollgate_policy_apply_duration_seconds_bucket",
            "tollgate_policy_apply_failures_total{reason=\"invalid\"} 1",
            // The other reasons from the start, at 0 (an alert's series exists before the
            // first failure).
            "tollgate_policy_apply_failures_total{reason=\"source\"} 0",
            "tollgate_policy_apply_failures_total{reason=\"apply\"} 0",
            "tollgate_policy_last_apply_success_timestamp_seconds",
            "tollgate_policy_revision_info{source=\"examples/\",revision=\"dir:5678\"} 1",
            "tollgate_build_info{version=",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "# EOF",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(
            !text.contains("dir:1234"),
            "only the revision in force is reported:\n{text}"
        );
        let classic = shared.metrics.render(false);
        assert!(
            classic.contains("# HELP tollgate_policy_apply_failures_total ")
                && !classic.contains("# EOF"),
            "{classic}"
        );
    }
}
