//! `tollgate controller`: the one writer of Gateway API status for Tollgate.
//!
//! The agents never write the status of the objects they read (with N nodes that would be N
//! writers per object, and N² watches if they read each other's). A Deployment of two replicas
//! runs this instead; one of them leads through a `coordination.k8s.io/v1` Lease ([`lease`])
//! and only the leader writes. Each replica watches what the agents watch, with status
//! ([`cache`]), and the agents' `TollgateNode` objects; on a change it runs the agents' own
//! parser and compiler ([`outcome`]), derives the status every object should have
//! ([`desired`]: HTTPRoute and GRPCRoute `RouteParentStatus`, Gateway and listener conditions
//! with "k/n nodes programmed", GEP-713 `PolicyAncestorStatus`, Backend `Accepted`, L4Policy
//! node counts), and writes what differs ([`merge`], [`write`]): to `/status` only, field
//! manager `tollgate-controller`, at most once per object per 10 s.
pub mod cache;
pub mod desired;
pub mod lease;
pub mod merge;
pub mod outcome;
pub mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tokio::sync::watch;
use tollgate_model::ParseCache;
use tracing::{debug, info};

use crate::cache::{written_resources, Cache};
use crate::lease::{Leadership, LeaseConfig};
use crate::write::{Metrics, StatusWriter};

/// `controllerName` of the entries this controller writes (and of Tollgate's GatewayClass).
pub const CONTROLLER_NAME: &str = "tollgate.dev/gateway-controller";
/// The field manager of every write.
pub const FIELD_MANAGER: &str = "tollgate-controller";
/// After a change, wait this long for more before compiling (a `kubectl apply` of many
/// objects is one round, not many).
pub const SETTLE: Duration = Duration::from_millis(200);

/// Shared with the admin server: health and metrics.
#[derive(Default)]
pub struct Health {
    /// Every kind has been listed once.
    pub synced: std::sync::atomic::AtomicBool,
}

/// Runs the controller until `stop` turns true: watches, elects, writes; on stop, gives the
/// Lease up. Needs a tokio runtime.
pub async fn run(
    client: kube::Client,
    lease: LeaseConfig,
    metrics: Metrics,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) {
    let leadership = Arc::new(Leadership::default());
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    let elector = tokio::spawn(lease::run(
        leases,
        lease,
        leadership.clone(),
        metrics.lease_errors.clone(),
        stop.clone(),
    ));
    let mut cache = Cache::start(client.clone());
    let mut writer = StatusWriter::new(client, written_resources(), metrics.clone());
    let mut leading_changes = leadership.subscribe();
    let mut stop_rx = stop.clone();
    let mut parse_cache = ParseCache::default();
    // The last compile, by what it read: the policy files and the cluster (Services,
    // EndpointSlices and the unresolved Secrets and ConfigMaps).
    type Read = (
        Vec<(String, String)>,
        Option<Arc<tollgate_model::cluster::Cluster>>,
    );
    let mut compiled: Option<(Read, outcome::Outcome)> = None;
    let mut due: Option<Instant> = None;
    loop {
        let leading = leadership.is_leader();
        metrics.leader.set(i64::from(leading));
        // Wait for a change, a write that was put off, or leadership (checked at least every
        // second, as leadership can also run out without a call).
        let wake = due.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = cache.changed.notified() => {
                tokio::time::sleep(SETTLE).await;
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = leading_changes.changed() => {}
            _ = stop_rx.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        if !cache.synced() {
            continue;
        }
        if !health
            .synced
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            info!("every kind is listed");
        }
        if !leadership.is_leader() {
            due = None;
            continue;
        }
        let snapshot = cache.snapshot();
        let read: Read = (
            snapshot
                .documents
                .files
                .iter()
                .map(|f| (f.path.clone(), f.content.clone()))
                .collect(),
            snapshot.documents.cluster.clone(),
        );
        let outcome = match &compiled {
            Some((seen, outcome)) if *seen == read => outcome.clone(),
            _ => {
                let started = Instant::now();
                let outcome = outcome::compile(&mut parse_cache, &snapshot.documents);
                debug!(objects = read.0.len(), took = ?started.elapsed(), "compiled");
                compiled = Some((read, outcome.clone()));
                outcome
            }
        };
        let plans = desired::plans(&snapshot.objects, &outcome, &snapshot.nodes);
        let leader = leadership.clone();
        due = writer
            .round(&plans, &snapshot.current, &move || leader.is_leader())
            .await;
    }
    metrics.leader.set(0);
    let _ = elector.await;
}
