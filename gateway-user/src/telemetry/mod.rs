//! The report side: what is enforced here, since when, what was refused, and what the data
//! path is doing. One registry ([`metrics::Metrics`]), one shared status ([`Status`]), served by
//! the admin HTTP server ([`admin`]).
pub mod admin;
pub mod metrics;
pub mod node;
pub mod wake;
pub mod webhook;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// A revision as reported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RevisionStatus {
    /// Revision id (commit, or `dir:` + content hash).
    pub id: String,
    /// Where it came from.
    pub source: String,
    /// When it was applied or attempted (Unix seconds).
    pub at_unix: u64,
    /// For an attempted revision that was not applied: why (`invalid`, `rewind`,
    /// `unverified`, `source`, `apply`; the label of `tollgate_policy_apply_failures_total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A configured interface and whether the program runs on it, as last read back from the
/// kernel (at start, on every link event, and every `--interval`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InterfaceStatus {
    /// Interface name.
    pub name: String,
    /// `native`, `generic` or `tc` when the program runs on it; `absent` when there is no
    /// interface of that name; `detached` when it exists and the program is not attached.
    pub mode: String,
    /// True only when the kernel shows this agent's program on the interface.
    pub enforced: bool,
    /// The interface's index (`null` when it is absent).
    pub ifindex: Option<u32>,
    /// Why it is not enforced (`detached` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl InterfaceStatus {
    /// The report of `name` in `state`.
    pub fn new(name: String, state: &tollgate_dataplane::IfaceState) -> Self {
        InterfaceStatus {
            name,
            mode: state.mode_str().to_owned(),
            enforced: state.is_enforced(),
            ifindex: state.ifindex(),
            problem: match state {
                tollgate_dataplane::IfaceState::NotAttached { reason, .. } => Some(reason.clone()),
                _ => None,
            },
        }
    }
}

/// What `/status` shows and what readiness is decided on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// The revision in force.
    pub applied: Option<RevisionStatus>,
    /// The last revision read (applied or refused).
    pub attempted: Option<RevisionStatus>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// Every configured interface: attach mode, and whether it is enforced.
    pub interfaces: Vec<InterfaceStatus>,
    /// The failsafe endpoints in force (lock-out protection): their TCP replies pass whatever
    /// the L4 policy says.
    pub failsafe: Vec<tollgate_compile::l4::failsafe::Failsafe>,
    /// Rules in force (including one default per rule set).
    pub rules: usize,
    /// Source-trie entries in force.
    pub source_entries: usize,
    /// Port-table entries in force.
    pub port_entries: usize,
    /// How full the kernel's exact-address tables are with the revision in force.
    pub fast_path: tollgate_dataplane::exact::FastPath,
    /// Attempts in a row that could not read the source (fetch errors, an unreachable Git
    /// server); 0 once it answers again.
    pub consecutive_failures: u32,
    /// When the next scheduled pass runs (`/status` shows it as `next_attempt_in_seconds`).
    #[serde(skip)]
    pub next_attempt: Option<std::time::Instant>,
    /// Ports the L7 proxy listens on.
    pub http_ports: Vec<u16>,
    /// HTTPRoutes in force.
    pub routes: usize,
    /// What of the revision in force is not served as written (Gateway API failure
    /// isolation): objects left out, problems that leave part of an object out, and the
    /// conditions of the routes that are not fully accepted.
    pub not_served: NotServed,
    /// The L4Policies of the revision in force whose `nodeSelector` does not select this
    /// node (Kubernetes mode with `--node-name`): valid, and not enforced here.
    pub l4_not_for_this_node: Vec<String>,
    /// How many objects of each kind the revision in force holds (those left out included).
    pub objects: std::collections::BTreeMap<String, usize>,
    /// The L7 proxy's listening ports, with the Gateway listeners served on each.
    pub listeners: Vec<ListenerStatus>,
    /// Milliseconds from the start of the pass that read the revision in force to its being
    /// enforced (`null` for the last good revision enforced at start).
    pub time_to_enforce_ms: Option<u64>,
}

/// One listening port of the L7 proxy.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ListenerStatus {
    /// The port (on `--gateway-address`).
    pub port: u16,
    /// `HTTP` or `HTTPS`.
    pub protocol: &'static str,
    /// The Gateway listeners served on it, as `namespace/gateway/listener`.
    pub gateway_listeners: Vec<String>,
}

impl ListenerStatus {
    /// The ports of `policy`'s listeners, in port order.
    pub fn of(policy: &tollgate_compile::l7::table::L7Policy) -> Vec<Self> {
        let mut ports: std::collections::BTreeMap<u16, ListenerStatus> = Default::default();
        for l in &policy.listeners {
            let entry = ports.entry(l.port).or_insert_with(|| ListenerStatus {
                port: l.port,
                protocol: if l.tls.is_some() { "HTTPS" } else { "HTTP" },
                gateway_listeners: Vec::new(),
            });
            entry
                .gateway_listeners
                .push(format!("{}/{}", l.gateway, l.name));
        }
        ports.into_values().collect()
    }
}

/// Most objects (and routes, and problems) `/status` lists; the rest are counted.
pub const MAX_STATUS_ITEMS: usize = 32;

/// The part of a revision in force that is not served as written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NotServed {
    /// Objects left out, with their problems (at most [`MAX_STATUS_ITEMS`]).
    pub left_out: Vec<tollgate_model::LeftOut>,
    /// How many objects were left out in all.
    pub left_out_count: usize,
    /// Problems that leave part of an object out (at most [`MAX_STATUS_ITEMS`]).
    pub partial: Vec<tollgate_model::PolicyError>,
    /// How many such problems in all.
    pub partial_count: usize,
    /// The HTTPRoutes not fully accepted, with their conditions per parent (at most
    /// [`MAX_STATUS_ITEMS`]).
    pub routes: Vec<tollgate_compile::l7::status::RouteStatus>,
}

impl NotServed {
    /// The report of `acceptance`, bounded.
    pub fn of(acceptance: &tollgate_compile::l7::Acceptance) -> Self {
        NotServed {
            left_out: acceptance
                .left_out
                .iter()
                .take(MAX_STATUS_ITEMS)
                .cloned()
                .collect(),
            left_out_count: acceptance.left_out.len(),
            partial: acceptance
                .partial
                .iter()
                .take(MAX_STATUS_ITEMS)
                .cloned()
                .collect(),
            partial_count: acceptance.partial.len(),
            routes: acceptance
                .routes
                .iter()
                .filter(|r| !r.clean())
                .take(MAX_STATUS_ITEMS)
                .cloned()
                .collect(),
        }
    }
}

/// Names of the rule counters in force: (policy, rule, counter id).
pub type CounterNames = Vec<(String, String, u32)>;

/// State shared by the agent (writer) and the admin server (reader).
#[derive(Debug)]
pub struct Shared {
    /// The status.
    pub status: RwLock<Status>,
    /// Rule names of the counter slots, published after every apply.
    pub counter_names: RwLock<Arc<CounterNames>>,
    /// Where the counter maps are pinned.
    pub pin_dir: PathBuf,
    /// The metrics.
    pub metrics: metrics::Metrics,
    /// Wakes the agent for a pass (the webhook), calls coalesced: at most one pass pending,
    /// and at most one per [`wake::MIN_GAP`] after the first.
    pub wake: wake::Wake,
    /// The webhook's shared secret; `None`: the webhook is disabled.
    pub webhook_secret: Option<webhook::WebhookSecret>,
    /// Notified after every change of [`Shared::status`] by the agent (the node status
    /// reporter waits on it; a notification with no one waiting is kept until someone does).
    pub status_changed: tokio::sync::Notify,
    /// The shared counters of cluster rate limits (set once the proxy exists): `/status`
    /// shows their state.
    pub ratelimit_backend: std::sync::OnceLock<Arc<tollgate_proxy::cluster::Backend>>,
}

impl Shared {
    /// New shared state for an agent whose maps are pinned under `pin_dir`.
    pub fn new(pin_dir: PathBuf) -> Arc<Self> {
        Self::with_webhook(pin_dir, None)
    }

    /// As [`Shared::new`], with the webhook enabled when `webhook_secret` is given.
    pub fn with_webhook(
        pin_dir: PathBuf,
        webhook_secret: Option<webhook::WebhookSecret>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|weak| Shared {
            status: RwLock::new(Status::default()),
            counter_names: RwLock::new(Arc::new(Vec::new())),
            pin_dir,
            metrics: metrics::Metrics::new(weak.clone()),
            wake: wake::Wake::default(),
            webhook_secret,
            status_changed: tokio::sync::Notify::new(),
            ratelimit_backend: std::sync::OnceLock::new(),
        })
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
