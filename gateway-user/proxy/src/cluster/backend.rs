//! The shared counters' backend as requests and `/status` see it: the settings, the
//! connection state, the agent count and the sync task's queue ([`Backend`]).
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::slots::{self, NodeDownStatus, SlotHealth};
use super::{redis, ClusterMetrics, RedisSettings, SyncRequest, SYNC_QUEUE};

/// Settings of cluster limits (`--ratelimit-redis`, `--ratelimit-agents`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The shared counters; `None`: cluster limits always run in their `onBackendFailure` mode.
    pub redis: Option<RedisSettings>,
    /// Agents sharing the limits: each one's share, when Redis cannot be reached, is
    /// `requests / agents` (at least 1).
    pub agents: u32,
    /// Where `agents` comes from; only [`AgentsFrom::Flag`] is never replaced by a count of
    /// the cluster's nodes ([`Backend::set_node_count`]).
    pub agents_from: AgentsFrom,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis: None,
            agents: 1,
            agents_from: AgentsFrom::Default,
        }
    }
}

/// Where the agent count of cluster limits comes from (`/status` `agents_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentsFrom {
    /// Nothing said: 1, until a count of nodes replaces it.
    Default,
    /// `--ratelimit-agents`: kept whatever the cluster's size.
    Flag,
    /// The Kubernetes cluster's Nodes, counted by the agent.
    KubernetesNodes,
}

/// What `/status` says of the shared counters.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendStatus {
    /// `up`, `partial` (a Redis Cluster with primaries down: their keys follow
    /// `onBackendFailure`, the others are shared), `down` or `not_configured`.
    pub state: &'static str,
    /// The Redis address (no credentials).
    pub address: Option<String>,
    /// `standalone`, `cluster` (Redis Cluster) or `sentinel`; none without Redis.
    pub topology: Option<&'static str>,
    /// Whether cluster limits are in force and follow their `onBackendFailure` now.
    pub fallback: bool,
    /// Seconds since the state last changed.
    pub since_seconds: f64,
    /// The last error, while down.
    pub last_error: Option<String>,
    /// Primaries of a Redis Cluster that do not answer (their slots' keys fall back).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes_down: Vec<NodeDownStatus>,
    /// The agents sharing the limits (each one's share is `requests / agents`).
    pub agents: u32,
    /// Where that number comes from: `flag` (`--ratelimit-agents`), `kubernetes_nodes` (the
    /// cluster's Nodes, counted every minute) or `default` (1).
    pub agents_from: AgentsFrom,
    /// Seconds since the Nodes were last counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents_counted_seconds_ago: Option<f64>,
    /// Why the last count of Nodes failed (the last count stays in force).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents_count_error: Option<String>,
}

/// The agent count and where it comes from.
#[derive(Debug)]
pub(super) struct AgentCount {
    pub(super) from: AgentsFrom,
    pub(super) counted: Option<Instant>,
    pub(super) error: Option<String>,
}

/// The shared counters' connection state, as requests and `/status` see it.
#[derive(Debug)]
pub struct Backend {
    pub(super) settings: ClusterSettings,
    pub(super) up: AtomicBool,
    /// The revision in force has cluster limits (only then is a Redis that is down, or
    /// missing, a fallback worth an alert).
    pub(super) in_force: AtomicBool,
    pub(super) changed: Mutex<(Instant, Option<String>)>,
    pub(super) metrics: ClusterMetrics,
    pub(super) queue: Option<mpsc::Sender<SyncRequest>>,
    /// Slots whose primary is down (a Redis Cluster only).
    pub(super) slots: SlotHealth,
    /// Agents sharing the limits now.
    pub(super) agents: AtomicU32,
    pub(super) agent_count: Mutex<AgentCount>,
}

impl Backend {
    /// The backend of `settings`; with Redis, its sync task is spawned (inside a tokio runtime).
    pub fn start(settings: ClusterSettings, metrics: ClusterMetrics) -> Arc<Backend> {
        let (queue, rx) = if settings.redis.is_some() {
            let (tx, rx) = mpsc::channel(SYNC_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let backend = Arc::new(Backend {
            up: AtomicBool::new(false),
            in_force: AtomicBool::new(false),
            changed: Mutex::new((Instant::now(), None)),
            metrics,
            queue,
            slots: SlotHealth::default(),
            agents: AtomicU32::new(settings.agents.max(1)),
            agent_count: Mutex::new(AgentCount {
                from: settings.agents_from,
                counted: None,
                error: None,
            }),
            settings,
        });
        if let (Some(rx), Some(redis)) = (rx, backend.settings.redis.clone()) {
            tokio::spawn(redis::run(backend.clone(), redis, rx));
        }
        backend
    }

    /// Whether syncs succeed now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether keys of `slot` are shared now: syncs succeed and, on a Redis Cluster, the
    /// slot's primary answers.
    pub fn is_up_for(&self, slot: u16) -> bool {
        self.is_up() && self.slots.is_up(slot)
    }

    /// The agents sharing the limits.
    pub fn agents(&self) -> u32 {
        self.agents.load(Ordering::Relaxed).max(1)
    }

    /// Whether a count of the cluster's nodes may set the agent count (not when
    /// `--ratelimit-agents` set it).
    pub fn counts_nodes(&self) -> bool {
        self.settings.agents_from != AgentsFrom::Flag
    }

    /// A count of the cluster's Nodes (one agent each), or why it failed (the last count stays
    /// in force). Ignored when `--ratelimit-agents` was given. Returns the count in force if it
    /// changed.
    pub fn set_node_count(&self, count: Result<u32, String>) -> Option<u32> {
        if !self.counts_nodes() {
            return None;
        }
        let mut c = self.agent_count.lock().unwrap_or_else(|e| e.into_inner());
        match count {
            Ok(n) => {
                c.from = AgentsFrom::KubernetesNodes;
                c.counted = Some(Instant::now());
                c.error = None;
                let n = n.max(1);
                (self.agents.swap(n, Ordering::Relaxed) != n).then_some(n)
            }
            Err(e) => {
                c.error = Some(e);
                None
            }
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &ClusterMetrics {
        &self.metrics
    }

    /// Records a change of state (the sync task calls this).
    pub(super) fn set_up(&self, up: bool, error: Option<String>) {
        let was = self.up.swap(up, Ordering::Relaxed);
        let mut c = self.changed.lock().unwrap_or_else(|e| e.into_inner());
        if was != up {
            c.0 = Instant::now();
        }
        c.1 = error;
        drop(c);
        self.metrics.fallback.set(i64::from(self.in_fallback()));
    }

    /// Records whether the revision in force has cluster limits (the proxy calls this on
    /// every commit).
    pub fn set_in_force(&self, in_force: bool) {
        self.in_force.store(in_force, Ordering::Relaxed);
        self.metrics.fallback.set(i64::from(self.in_fallback()));
    }

    /// Takes a check of a Redis Cluster's primaries (the sync task calls this).
    pub(super) fn set_nodes(&self, checks: &[slots::NodeCheck]) -> slots::Changes {
        let changes = self.slots.set(checks);
        self.metrics.fallback.set(i64::from(self.in_fallback()));
        changes
    }

    /// Cluster limits are in force and some or all of their keys follow their
    /// `onBackendFailure`.
    pub fn in_fallback(&self) -> bool {
        self.in_force.load(Ordering::Relaxed) && (!self.is_up() || self.slots.any_down())
    }

    /// What `/status` shows.
    pub fn status(&self) -> BackendStatus {
        let count = self.agent_count.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.changed.lock().unwrap_or_else(|e| e.into_inner());
        let configured = self.settings.redis.is_some();
        BackendStatus {
            state: match (configured, self.is_up(), self.slots.any_down()) {
                (false, _, _) => "not_configured",
                (true, true, false) => "up",
                (true, true, true) => "partial",
                (true, false, _) => "down",
            },
            address: self.settings.redis.as_ref().map(RedisSettings::address),
            topology: self.settings.redis.as_ref().map(RedisSettings::kind),
            fallback: self.in_fallback(),
            since_seconds: (c.0.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            last_error: if self.is_up() { None } else { c.1.clone() },
            nodes_down: if self.is_up() {
                self.slots.status()
            } else {
                Vec::new()
            },
            agents: self.agents(),
            agents_from: count.from,
            agents_counted_seconds_ago: count
                .counted
                .map(|t| (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
            agents_count_error: count.error.clone(),
        }
    }

    pub(super) fn enqueue(&self, request: SyncRequest) -> bool {
        self.queue
            .as_ref()
            .is_some_and(|q| q.try_send(request).is_ok())
    }
}
