//! The report stage in Kubernetes: this node's `TollgateNode` (what it enforces, since when,
//! what it refused), written by server-side apply, and events about it.
//!
//! The binary turns its own status into a [`TollgateNodeStatus`] and hands it to
//! [`NodeStatusWriter::publish`], which never waits: the value replaces any not yet written
//! (the latest state wins), and a task of its own writes it. That task:
//! - reads the object once (`GET`): when it is missing, creates it by applying the object with
//!   an empty spec; when it holds a status, that is what the next one is compared with (a
//!   restart that changed nothing writes nothing);
//! - makes the object owned by this node's core `v1` `Node` (an `ownerReference` by name and
//!   uid, read with a metadata-only `GET` of the Node when the object is read), so that the
//!   garbage collector deletes it with the Node instead of leaving a deleted node's last status
//!   behind: the reference goes into the apply that creates the object, and an object without
//!   it (made by an older agent, or before the Node could be read) or naming another uid (the
//!   Node was created again under the same name) gets it by one apply of the object, not of
//!   its status. A Node that cannot be read (missing, forbidden) or a reference the API server
//!   refuses is warned about once and left out: the status is written all the same, and the
//!   reference is tried again on its own, 30 s later, the wait doubling up to 10 min;
//! - never creates the object again once its Node is gone: when the object is missing and the
//!   Node this agent has read before is not found (deleted, and the object with it by the
//!   garbage collector), nothing is created, so that an agent outliving its Node (a node being
//!   decommissioned) does not leave an unowned object behind; the write is retried with the
//!   backoff below, and a Node of that name created again gets a new object, owned by it;
//! - compares before writing: a status equal to the last one written (or read) is not sent.
//!   `enforcedAt` and `timeToEnforceMillis` change only with the revision, and a condition's
//!   `lastTransitionTime` only with its status, so that nothing but a real change is a write
//!   (no heartbeats);
//! - applies the status through the `/status` subresource, field manager [`FIELD_MANAGER`],
//!   `force=true` (the agent is the one writer of its node's status; force takes over fields an
//!   older manager left behind instead of failing on a conflict forever);
//! - on a failure, logs it, counts it, and retries with backoff (1 s doubling to 5 min, with
//!   jitter), sending whatever is the latest status by then;
//! - publishes events about what changed ([`crate::events`]), from a task of its own.
//!
//! The agent never watches these objects: each node writes one, the controller reads them all.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::Resource as _;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tollgate_model::node::{TollgateNode, TollgateNodeStatus};
use tracing::{debug, info, warn};

use crate::events::{Change, Events};
use crate::{Error, Settings};

/// The field manager of everything the agent writes into its `TollgateNode`.
pub const FIELD_MANAGER: &str = "tollgate-agent";

/// The first wait after a failed write; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between two attempts to write a status that keeps failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The first wait before trying again to make the object owned by its Node; it doubles up to
/// [`OWNER_RETRY_MAX`].
pub const OWNER_RETRY_FIRST: Duration = Duration::from_secs(30);

/// The longest wait between two tries to make the object owned by its Node.
pub const OWNER_RETRY_MAX: Duration = Duration::from_secs(600);

/// Status changes whose events wait to be sent; more are dropped (counted as `throttled`).
const EVENT_QUEUE: usize = 16;

/// How a write ended, the `result` label of the write metrics: `ok`, `forbidden` (RBAC or the
/// admission policy said no: a setup problem), `invalid` (the API server refused the content),
/// `error` (anything else: unreachable, timeouts, 5xx).
pub fn result_of(error: &kube::Error) -> &'static str {
    match error {
        kube::Error::Api(status) if status.code == 403 => "forbidden",
        kube::Error::Api(status) if status.code == 422 || status.code == 400 => "invalid",
        _ => "error",
    }
}

/// The `result` label values of [`result_of`], and `ok`: every series the metrics show from
/// the start.
pub const WRITE_RESULTS: [&str; 4] = ["ok", "forbidden", "invalid", "error"];

/// Where the writer counts what it does (the binary's metrics; the kubernetes crate keeps no
/// registry of its own).
pub trait ReportMetrics: Send + Sync + 'static {
    /// One write of the object or of its status, with its [`result_of`] (`ok` on success).
    fn status_write(&self, result: &'static str);
    /// One event: a [`result_of`] or `ok`, or `throttled` when the rate limit dropped it.
    fn event(&self, result: &'static str);
}

/// Counts nothing (tools and tests that do not look).
impl ReportMetrics for () {
    fn status_write(&self, _: &'static str) {}
    fn event(&self, _: &'static str) {}
}

/// Writes this node's `TollgateNode`; see the module documentation. Dropping it stops the
/// task (a write in flight is abandoned; the next agent writes again).
pub struct NodeStatusWriter {
    latest: watch::Sender<Option<TollgateNodeStatus>>,
    task: tokio::task::JoinHandle<()>,
    events: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for NodeStatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStatusWriter").finish_non_exhaustive()
    }
}

impl NodeStatusWriter {
    /// A writer of `TollgateNode/{node}` on the API server of `settings`. Must be called
    /// within a tokio runtime: the task runs on it.
    pub fn start(
        settings: &Settings,
        node: &str,
        metrics: Arc<dyn ReportMetrics>,
    ) -> Result<Self, Error> {
        check_node_name(node)?;
        let client = settings.client()?;
        info!(node, server = %settings.server(), "writing this node's TollgateNode status");
        Ok(Self::with_client(client, node, metrics, FIRST_BACKOFF))
    }

    /// As [`start`](Self::start), with a client of the caller's (tests: a mock service) and
    /// the first backoff.
    pub fn with_client(
        client: kube::Client,
        node: &str,
        metrics: Arc<dyn ReportMetrics>,
        first_backoff: Duration,
    ) -> Self {
        let (latest, rx) = watch::channel(None);
        // Events are sent by a task of their own: a slow events API never delays a status.
        let (events_tx, mut events_rx) = mpsc::channel::<(Change, Option<String>)>(EVENT_QUEUE);
        let mut sender = Events::new(client.clone(), node);
        let events_metrics = metrics.clone();
        let events = tokio::spawn(async move {
            while let Some((change, uid)) = events_rx.recv().await {
                sender
                    .publish(&change, uid.as_deref(), events_metrics.as_ref())
                    .await;
            }
        });
        let writer = Writer {
            api: Api::all(client.clone()),
            nodes: Api::all(client),
            events: events_tx,
            node: node.to_owned(),
            metrics,
            known: None,
            failing: None,
            owner_warned: false,
            owner_retry: None,
            node_seen: false,
        };
        let task = tokio::spawn(writer.run(rx, first_backoff));
        NodeStatusWriter {
            latest,
            task,
            events,
        }
    }

    /// Hands over the node's status as it is now; returns at once. A status not yet written
    /// is replaced (only the latest is ever written).
    pub fn publish(&self, status: TollgateNodeStatus) {
        self.latest.send_replace(Some(status));
    }
}

impl Drop for NodeStatusWriter {
    fn drop(&mut self) {
        self.task.abort();
        self.events.abort();
    }
}

/// A node name the API server would take as an object name (a DNS subdomain), checked at
/// start so that a wrong `--node-name` is reported with the other settings.
pub fn check_node_name(node: &str) -> Result<(), Error> {
    tollgate_model::names::dns_subdomain(node).map_err(|e| {
        Error::Config(format!(
            "--node-name {node:?} {e}: it names the TollgateNode object, as the node is named"
        ))
    })
}

/// What the API server holds, as far as the writer knows.
struct Known {
    /// The object's uid (events point at it).
    uid: Option<String>,
    /// The status last written or read.
    status: Option<TollgateNodeStatus>,
}

struct Writer {
    api: Api<TollgateNode>,
    /// This node's `Node`, the owner of its `TollgateNode`.
    nodes: Api<Node>,
    /// To the events task: what changed, and the object's uid.
    events: mpsc::Sender<(Change, Option<String>)>,
    node: String,
    metrics: Arc<dyn ReportMetrics>,
    /// `None` until the object has been read (and again after it was found missing).
    known: Option<Known>,
    /// The message of the failure being retried, so that a failure repeated is logged once.
    failing: Option<String>,
    /// The object could not be made owned by the Node, and that was warned about (once, until
    /// it is).
    owner_warned: bool,
    /// When to try again to make the object owned by its Node, and the wait that led there
    /// (`None`: it is owned, or not read yet). A Node that could not be read at start (RBAC
    /// still propagating at install, an API server error) would otherwise leave the object
    /// unowned until the agent restarts.
    owner_retry: Option<(tokio::time::Instant, Duration)>,
    /// A Node of this name has been read: its absence now means it was deleted.
    node_seen: bool,
}

/// What a read of this node's `Node` found.
enum NodeRead {
    /// The Node, of this uid.
    Uid(String),
    /// No Node of this name.
    Missing,
    /// It could not be read (forbidden, an API server error, no uid): why.
    Unknown(String),
}

/// Why a status was not written.
#[derive(Debug)]
enum SyncError {
    /// The API server's answer, or no answer.
    Api(kube::Error),
    /// The object is missing and so is the Node it belonged to: not created again.
    NodeDeleted(String),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Api(e) => e.fmt(f),
            SyncError::NodeDeleted(node) => write!(
                f,
                "the Node {node:?} was deleted: its TollgateNode is not created again until a Node of this name exists (enforcement goes on)"
            ),
        }
    }
}

impl From<kube::Error> for SyncError {
    fn from(e: kube::Error) -> Self {
        SyncError::Api(e)
    }
}

impl Writer {
    async fn run(
        mut self,
        mut rx: watch::Receiver<Option<TollgateNodeStatus>>,
        first_backoff: Duration,
    ) {
        let mut backoff = Backoff::new(first_backoff);
        loop {
            let retry = self.owner_retry.map(|(at, _)| at);
            let changed = tokio::select! {
                changed = rx.changed() => changed,
                () = sleep_until(retry) => {
                    self.retry_owner().await;
                    continue;
                }
            };
            if changed.is_err() {
                return;
            }
            loop {
                let Some(desired) = rx.borrow_and_update().clone() else {
                    break;
                };
                match self.sync(desired).await {
                    Ok(()) => {
                        if let Some(was) = self.failing.take() {
                            info!(node = %self.node, after = %was, "the TollgateNode status is written again");
                        }
                        backoff.reset();
                        break;
                    }
                    Err(e) => {
                        let delay = backoff.next();
                        let message = e.to_string();
                        if self.failing.as_deref() != Some(message.as_str()) {
                            warn!(node = %self.node, error = %message, retry_in_s = delay.as_secs_f64(), "could not write the TollgateNode status (retrying with backoff; enforcement goes on)");
                        } else {
                            debug!(node = %self.node, error = %message, retry_in_s = delay.as_secs_f64(), "the TollgateNode status write failed again");
                        }
                        self.failing = Some(message);
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        }
    }

    /// Brings the object to `desired`, writing only what differs.
    async fn sync(&mut self, desired: TollgateNodeStatus) -> Result<(), SyncError> {
        if self.known.is_none() {
            self.known = Some(self.read_or_create().await?);
        }
        let known = self.known.as_mut().expect("just read");
        let desired = stabilize(desired, known.status.as_ref());
        if known.status.as_ref() == Some(&desired) {
            return Ok(());
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let body = json!({
            "apiVersion": TollgateNode::api_version(&()),
            "kind": TollgateNode::kind(&()),
            "metadata": {"name": self.node},
            "status": desired,
        });
        let written = self
            .api
            .patch_status(&self.node, &params, &Patch::Apply(&body))
            .await;
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                self.metrics.status_write(result_of(&e));
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    // Deleted behind the agent's back: created again on the next attempt.
                    self.known = None;
                }
                return Err(e.into());
            }
        };
        self.metrics.status_write("ok");
        let known = self.known.as_mut().expect("read above");
        if written.metadata.uid.is_some() {
            known.uid = written.metadata.uid.clone();
        }
        let before = known.status.replace(desired.clone());
        let uid = known.uid.clone();
        let change = Change::between(before.as_ref(), &desired);
        if !change.events.is_empty() {
            let notes = change.events.len();
            if self.events.try_send((change, uid)).is_err() {
                for _ in 0..notes {
                    self.metrics.event("throttled");
                }
            }
        }
        Ok(())
    }

    /// Reads the object; creates it (empty spec, no status, owned by the Node) when it is
    /// missing, unless the Node read before is gone; makes it owned by the Node when it is not.
    async fn read_or_create(&mut self) -> Result<Known, SyncError> {
        let found = self.api.get_opt(&self.node).await?;
        let node = self.read_node().await;
        if found.is_none() && self.node_seen && matches!(node, NodeRead::Missing) {
            return Err(SyncError::NodeDeleted(self.node.clone()));
        }
        let owner = self.owner_of(node);
        if let Some(found) = found {
            debug!(node = %self.node, "the TollgateNode exists: its status is what the next one is compared with");
            let mut known = Known {
                uid: found.metadata.uid.clone(),
                status: found.status,
            };
            let Some(owner) = owner else {
                self.owner_later();
                return Ok(known);
            };
            if owned_by(&found.metadata, &self.node, &owner) {
                self.owner_set();
                return Ok(known);
            }
            // Made by an older agent, or before the Node could be read, or owned by a Node of
            // the same name since deleted: one apply of the object (never of its status, and
            // never holding the status up when it fails).
            if let Some(uid) = self.own(&owner).await {
                known.uid = Some(uid);
            }
            return Ok(known);
        }
        let created = match self.apply_object(owner.as_deref()).await {
            // The reference refused (an admission plugin such as
            // OwnerReferencesPermissionEnforcement, which wants `delete` on the object):
            // created without it rather than never.
            Err(e) if owner.is_some() && matches!(result_of(&e), "forbidden" | "invalid") => {
                self.warn_owner(&format!(
                    "could not create the TollgateNode owned by its Node ({e}); creating it without the ownerReference"
                ));
                self.apply_object(None).await
            }
            other => other,
        }?;
        let owned = owner
            .as_deref()
            .is_some_and(|uid| owned_by(&created.metadata, &self.node, uid));
        if owned {
            self.owner_set();
        } else {
            self.owner_later();
        }
        info!(node = %self.node, owned_by_node = owned, "created this node's TollgateNode");
        Ok(Known {
            uid: created.metadata.uid,
            status: created.status,
        })
    }

    /// Reads this node's `Node` (a metadata-only `GET`).
    async fn read_node(&mut self) -> NodeRead {
        match self.nodes.get_metadata_opt(&self.node).await {
            Ok(Some(node)) => match node.metadata.uid.filter(|u| !u.is_empty()) {
                Some(uid) => {
                    self.node_seen = true;
                    NodeRead::Uid(uid)
                }
                None => NodeRead::Unknown("the Node has no uid".to_owned()),
            },
            Ok(None) => NodeRead::Missing,
            Err(e) => NodeRead::Unknown(format!("could not read the Node: {e}")),
        }
    }

    /// The uid of this node's `Node`, or `None`, warned about, when it cannot be read: the
    /// object is then written without an owner.
    async fn node_uid(&mut self) -> Option<String> {
        let node = self.read_node().await;
        self.owner_of(node)
    }

    /// The owner's uid that `node` gives, or `None`, warned about.
    fn owner_of(&mut self, node: NodeRead) -> Option<String> {
        let problem = match node {
            NodeRead::Uid(uid) => return Some(uid),
            NodeRead::Missing => "no Node of this name".to_owned(),
            NodeRead::Unknown(why) => why,
        };
        self.warn_owner(&format!(
            "{problem}: the TollgateNode is written without an ownerReference to it, so it is not deleted with the Node"
        ));
        None
    }

    /// The object is owned by its Node: nothing more to try.
    fn owner_set(&mut self) {
        self.owner_warned = false;
        self.owner_retry = None;
    }

    /// The object is not owned by its Node: tried again later, the wait doubling from
    /// [`OWNER_RETRY_FIRST`] up to [`OWNER_RETRY_MAX`].
    fn owner_later(&mut self) {
        let wait = match self.owner_retry {
            Some((_, last)) => (last * 2).min(OWNER_RETRY_MAX),
            None => OWNER_RETRY_FIRST,
        };
        self.owner_retry = Some((tokio::time::Instant::now() + wait, wait));
    }

    /// Tries again to make the known object owned by its Node (see [`Writer::owner_retry`]):
    /// reads the Node, applies the object with the reference. A failure waits longer; the
    /// status is not touched either way.
    async fn retry_owner(&mut self) {
        if self.known.is_none() {
            // Read (and made owned) again at the next write.
            self.owner_retry = None;
            return;
        }
        let Some(owner) = self.node_uid().await else {
            self.owner_later();
            return;
        };
        if let (Some(uid), Some(known)) = (self.own(&owner).await, self.known.as_mut()) {
            known.uid = Some(uid);
        }
    }

    /// Applies the existing object with the ownerReference to the Node of uid `owner`: the
    /// object's uid as the apply returned it when it took, else warned about and tried again
    /// later ([`Writer::owner_later`]).
    async fn own(&mut self, owner: &str) -> Option<String> {
        match self.apply_object(Some(owner)).await {
            Ok(applied) => {
                info!(node = %self.node, node_uid = %owner, "this node's TollgateNode is now owned by its Node (deleted with it)");
                self.owner_set();
                applied.metadata.uid
            }
            Err(e) => {
                self.warn_owner(&format!(
                    "could not set the TollgateNode's ownerReference to its Node: {e}"
                ));
                self.owner_later();
                None
            }
        }
    }

    /// Logs a reason the object is not owned by the Node: a warning the first time, then at
    /// debug level until it is.
    fn warn_owner(&mut self, message: &str) {
        if self.owner_warned {
            debug!(node = %self.node, "{message} (again)");
        } else {
            self.owner_warned = true;
            warn!(node = %self.node, "{message} (status writes go on; tried again when the object is next read)");
        }
    }

    /// Applies the object itself (not its status): the empty spec, and the ownerReference to
    /// the Node of uid `owner` when there is one. Everything the agent's field manager owns in
    /// the object is in each apply (a field it stops applying would be removed).
    async fn apply_object(&self, owner: Option<&str>) -> Result<TollgateNode, kube::Error> {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut metadata = json!({"name": self.node});
        if let Some(uid) = owner {
            metadata["ownerReferences"] = json!([owner_reference(&self.node, uid)]);
        }
        let body = json!({
            "apiVersion": TollgateNode::api_version(&()),
            "kind": TollgateNode::kind(&()),
            "metadata": metadata,
            "spec": {},
        });
        let applied = self
            .api
            .patch(&self.node, &params, &Patch::Apply(&body))
            .await;
        self.metrics.status_write(match &applied {
            Ok(_) => "ok",
            Err(e) => result_of(e),
        });
        applied
    }
}

/// Sleeps until `at`; forever when there is none.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The reference of a `TollgateNode` to its owner, the core `v1` `Node` of this name and uid.
/// Neither `controller` nor `blockOwnerDeletion`: the object is only to go with the Node (and
/// `blockOwnerDeletion` would take `update` on `nodes/finalizers`).
fn owner_reference(node: &str, uid: &str) -> serde_json::Value {
    json!({
        "apiVersion": Node::api_version(&()),
        "kind": Node::kind(&()),
        "name": node,
        "uid": uid,
    })
}

/// Whether `metadata` holds [`owner_reference`]`(node, uid)`.
fn owned_by(metadata: &ObjectMeta, node: &str, uid: &str) -> bool {
    metadata.owner_references.iter().flatten().any(|r| {
        r.api_version == Node::api_version(&()).as_ref()
            && r.kind == Node::kind(&()).as_ref()
            && r.name == node
            && r.uid == uid
    })
}

/// `desired`, with what must not change unless something real did taken from `last`: the
/// revision's `enforcedAt` and `timeToEnforceMillis` while the revision is the same (a
/// re-read of the same revision is no new enforcement), and each condition's
/// `lastTransitionTime` while its status is the same.
pub fn stabilize(
    mut desired: TollgateNodeStatus,
    last: Option<&TollgateNodeStatus>,
) -> TollgateNodeStatus {
    let Some(last) = last else {
        return desired;
    };
    if desired.revision.is_some() && desired.revision == last.revision {
        desired.enforced_at = last.enforced_at.clone();
        desired.time_to_enforce_millis = last.time_to_enforce_millis;
    }
    for c in &mut desired.conditions {
        if let Some(before) = last
            .conditions
            .iter()
            .find(|b| b.type_ == c.type_ && b.status == c.status)
        {
            c.last_transition_time = before.last_transition_time.clone();
        }
    }
    desired
}

/// Now, to the second (what the API server keeps of a `Time`: a value with a fraction would
/// never compare equal to what was read back).
pub fn now_seconds() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Exponential backoff with jitter: `first`, doubling, at most [`MAX_BACKOFF`]; each wait is
/// between half and all of the step, so that the agents of a cluster whose API server came
/// back do not all retry at the same moment.
struct Backoff {
    first: Duration,
    step: Duration,
}

impl Backoff {
    fn new(first: Duration) -> Self {
        Backoff { first, step: first }
    }

    fn next(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(MAX_BACKOFF.max(self.first));
        // Jitter from std's per-process random hash keys: no RNG crate for one number.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let fraction = (h.finish() % 1000) as u32;
        step / 2 + step / 2 * fraction / 1000
    }

    fn reset(&mut self) {
        self.step = self.first;
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
