//! The Kubernetes API as a source of policy (`tollgate run --source kubernetes`).
//!
//! One watcher and one reflector store per kind the model reads (the tollgate.dev kinds, and
//! Gateway and HTTPRoute of gateway.networking.k8s.io), as dynamic objects; see [`watch`].
//! Each stored object is one [`SourceFile`] of the revision, named `kubernetes:/NS/Kind/NAME`
//! (`kubernetes:/Kind/NAME` when cluster-scoped) so that every error points at it, whose text
//! is the object as JSON (apiVersion, kind, metadata with name, namespace, labels, generation,
//! resourceVersion and creationTimestamp; every other top-level field but status). From there
//! the pipeline is the one a directory or Git goes through: parse, compile, apply, last good.
//!
//! [`KubernetesSource::next`] gives nothing until every kind has been listed once; then a
//! [`Next::Revision`] whenever the set of (kind, namespace, name, resourceVersion) differs from
//! the one it returned last, and [`Next::Unchanged`] otherwise. The revision id names what it
//! was built from: `k8s:` and 16 hex digits of a SHA-256 over that sorted set, then `@` and the
//! highest resourceVersion in it. Changes wake the agent through the waker: a change after a
//! quiet spell at once, the changes of a burst together (100 ms after the last, at most 1 s
//! after the first; see [`watch::debounce`]).
//!
//! Opened with a secrets directory ([`KubernetesSource::open_with_secrets`], what the agent
//! does), the source also watches Secrets and ConfigMaps and writes those the policy
//! references there before it hands a revision on; their resourceVersions are part of the
//! revision id (see [`secrets`]).
//!
//! Opened for a node ([`KubernetesSource::open_for_node`] with `--node-name`, what the agent
//! does), the source also watches that node's `Node` and hands its labels on with every
//! revision ([`tollgate_model::cluster::Cluster::node`]): an L4Policy whose `nodeSelector`
//! does not select them is not enforced here (see [`node`]). Opened without a node name, a
//! revision that holds an L4Policy with a `nodeSelector` is refused: enforcing it on every node
//! or on none would both be guesses.
//!
//! `Namespace` is watched [on demand](WatchedKind::on_demand): only while some Gateway has a
//! listener with `allowedRoutes.namespaces.from: Selector`, the one thing its labels decide.
//! [`KubernetesSource::next`] starts the watch when it first sees such a listener in the
//! Gateways' store and builds no revision until the Namespaces are listed (the revision in
//! force stays, so no route is judged without the labels: none is served that the selector
//! excludes, none dropped that it admits); it stops the watch when the last such listener
//! goes. That keeps the agent at 15 watch connections while no listener selects by label
//! (docs/kubernetes.md).
//!
//! The watchers run on the tokio runtime the source is opened on (the agent's), or, opened
//! outside of one (tests, tools), on a runtime of its own; `next` only reads the stores, so it
//! may be called from any thread.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::Store;
use sha2::Digest as _;
use tollgate_model::revision::MAX_REVISION_SIZE;
use tollgate_model::source::{Next, PolicySource, Poll, Refusal, RefusalKind, Waker};
use tollgate_model::{Documents, PolicyError, PolicyErrors, Revision, SourceFile};
use tracing::{debug, info};

pub mod connect;
pub mod events;
pub mod failsafe;
pub mod node;
pub mod nodes;
pub mod object;
pub mod report;
pub mod secrets;
pub mod services;
pub mod watch;

pub use connect::Settings;
pub use object::{watched_kinds, WatchedKind};
pub use report::{NodeStatusWriter, ReportMetrics};

use object::Stored;
use watch::Shared;

/// Why the source could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig or in-cluster settings are unusable.
    #[error("{0}")]
    Config(String),
    /// No runtime for the watchers could be started.
    #[error("start a runtime for the Kubernetes watchers: {0}")]
    Runtime(#[source] std::io::Error),
}

/// The Gateway API's group.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// How long the first `next` waits for every kind's first list, by default: a cluster's policy
/// lists in well under a second, and waiting spares the agent enforcing its saved last good
/// revision only to replace it a moment later.
pub const INITIAL_WAIT: Duration = Duration::from_secs(5);

/// The Kubernetes API as a [`PolicySource`]; see the module documentation.
pub struct KubernetesSource {
    describe: String,
    kinds: Vec<WatchedKind>,
    stores: Vec<Store<Stored>>,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The Services and EndpointSlices (when they are watched: [`KubernetesSource::open`]).
    cluster: Option<Arc<services::ClusterStores>>,
    /// This node's labels, when the source was opened for a named node.
    node: Option<Arc<node::NodeStore>>,
    /// The runtime the watchers run on when the source was opened outside of one.
    runtime: Option<tokio::runtime::Runtime>,
    /// The id returned last (`None` after a rescan).
    last: Option<String>,
    initial_wait: Duration,
    /// Every kind has been listed once: `next` no longer waits.
    synced_once: bool,
    /// Secrets and ConfigMaps, when they are read (see [`secrets`]).
    secrets: Option<secrets::Secrets>,
    /// What starting a watch later needs: the runtime, the client (none when it could not be
    /// made) and the server's name for messages.
    handle: tokio::runtime::Handle,
    client: Option<kube::Client>,
    server: String,
    /// The kinds watched on demand (`Namespace`).
    on_demand: Vec<OnDemand>,
}

/// A kind watched only while the revision needs it ([`WatchedKind::on_demand`]).
struct OnDemand {
    /// Its position in `kinds`, `stores` and the shared state.
    index: usize,
    /// Its watch, while it runs.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for KubernetesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesSource")
            .field("describe", &self.describe)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl KubernetesSource {
    /// Starts watching every kind of [`watched_kinds`] on the API server of `settings`, and
    /// its Services and EndpointSlices ([`services`]).
    pub fn open(settings: &Settings) -> Result<Self, Error> {
        Self::open_with(settings, watched_kinds(), true)
    }

    /// As [`open`](Self::open), and the Secrets and ConfigMaps the policy references are
    /// read from the API and written under `secrets_dir` (`--tls-secrets-dir`; see
    /// [`secrets`]).
    pub fn open_with_secrets(settings: &Settings, secrets_dir: PathBuf) -> Result<Self, Error> {
        Self::start(settings, watched_kinds(), true, Some(secrets_dir), None)
    }

    /// As [`open`](Self::open), with the Secrets and ConfigMaps when a directory for them is
    /// given, and this node's `Node` when `node_name` is (`--node-name`): L4Policy
    /// `nodeSelector` is matched against its labels. Without a name, a revision with an
    /// L4Policy that has a `nodeSelector` is refused.
    pub fn open_for_node(
        settings: &Settings,
        secrets_dir: Option<PathBuf>,
        node_name: Option<String>,
    ) -> Result<Self, Error> {
        Self::start(settings, watched_kinds(), true, secrets_dir, node_name)
    }

    /// As [`open`](Self::open), for the given kinds only (no Services or EndpointSlices).
    pub fn open_kinds(settings: &Settings, kinds: Vec<WatchedKind>) -> Result<Self, Error> {
        Self::start(settings, kinds, false, None, None)
    }

    /// As [`open_kinds`](Self::open_kinds), with the Secrets and ConfigMaps when a directory
    /// for them is given.
    pub fn open_kinds_with(
        settings: &Settings,
        kinds: Vec<WatchedKind>,
        secrets_dir: Option<PathBuf>,
    ) -> Result<Self, Error> {
        Self::start(settings, kinds, false, secrets_dir, None)
    }

    /// Watches `kinds`, and Services and EndpointSlices when `cluster`.
    pub fn open_with(
        settings: &Settings,
        kinds: Vec<WatchedKind>,
        cluster: bool,
    ) -> Result<Self, Error> {
        Self::start(settings, kinds, cluster, None, None)
    }

    /// Watches `kinds`; Services and EndpointSlices when `cluster`; the Secrets and
    /// ConfigMaps the policy references when `secrets_dir` is given; the Node named
    /// `node_name` when given. The progress of the watches is kept in that order: the kinds,
    /// then the cluster's two, then the secrets', then the Node.
    fn start(
        settings: &Settings,
        kinds: Vec<WatchedKind>,
        cluster: bool,
        secrets_dir: Option<PathBuf>,
        node_name: Option<String>,
    ) -> Result<Self, Error> {
        let (handle, runtime) = match tokio::runtime::Handle::try_current() {
            Ok(handle) => (handle, None),
            Err(_) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("tollgate-kube")
                    .enable_all()
                    .build()
                    .map_err(Error::Runtime)?;
                (runtime.handle().clone(), Some(runtime))
            }
        };
        let server = settings.server();
        let cluster = cluster.then(|| Arc::new(services::ClusterStores::default()));
        let cluster_watches = 2 * usize::from(cluster.is_some());
        let secrets_watches = if secrets_dir.is_some() {
            secrets::WATCHES
        } else {
            0
        };
        let node = node_name.map(|name| Arc::new(node::NodeStore::new(name)));
        let node_index = kinds.len() + cluster_watches + secrets_watches;
        let shared = Arc::new(Shared::new(node_index + usize::from(node.is_some())));
        let mut stores = Vec::with_capacity(kinds.len());
        let mut tasks = Vec::with_capacity(kinds.len() + 1);
        let client = {
            // The client's request buffer is a task: made within the runtime.
            let _entered = handle.enter();
            settings.client()
        };
        let mut secrets_client = None;
        let mut on_demand = Vec::new();
        match client {
            Ok(client) => {
                secrets_client = Some(client.clone());
                for (index, kind) in kinds.iter().enumerate() {
                    let writer = Writer::<Stored>::new(());
                    stores.push(writer.as_reader());
                    if kind.on_demand {
                        // Idle until a revision needs it: synced and empty.
                        shared.update(|s| s.kinds[index].synced = true);
                        on_demand.push(OnDemand { index, task: None });
                        continue;
                    }
                    tasks.push(handle.spawn(watch::watch_kind(
                        client.clone(),
                        index,
                        kind.clone(),
                        writer,
                        shared.clone(),
                        server.clone(),
                        0,
                    )));
                }
                if let Some(stores) = &cluster {
                    tasks.extend(stores.spawn(&handle, &client, kinds.len(), &shared, &server));
                }
                if let Some(node) = &node {
                    tasks.push(node.spawn(&handle, &client, node_index, &shared, &server));
                }
                tasks.push(handle.spawn(watch::debounce(shared.clone())));
            }
            // Reported by every `next` as the source being unavailable (the agent keeps its
            // last good revision), as an unreachable server is.
            Err(e) => shared.fail(e.to_string()),
        }
        let later_client = secrets_client.clone();
        let secrets = secrets_dir.map(|dir| {
            secrets::Secrets::start(
                dir,
                &handle,
                secrets_client,
                kinds.len() + cluster_watches,
                &shared,
                &server,
                &mut tasks,
            )
        });
        info!(server = %server, settings = settings.origin(), kinds = kinds.len(), services = cluster.is_some(), secrets = secrets.is_some(), node = node.is_some(), "watching the Kubernetes API for policy");
        Ok(KubernetesSource {
            describe: format!("kubernetes ({server})"),
            kinds,
            stores,
            shared,
            tasks,
            cluster,
            node,
            runtime,
            last: None,
            initial_wait: INITIAL_WAIT,
            synced_once: false,
            secrets,
            handle,
            client: later_client,
            server,
            on_demand,
        })
    }

    /// How long the first `next` waits for every kind's first list (default [`INITIAL_WAIT`]).
    pub fn with_initial_wait(mut self, wait: Duration) -> Self {
        self.initial_wait = wait;
        self
    }

    /// Starts the watches of the on-demand kinds the Gateways now need, stops those they no
    /// longer need; whether one was started.
    fn follow_demand(&mut self) -> bool {
        let Some(client) = self.client.clone() else {
            return false;
        };
        let needed = match self.namespaces_needed() {
            Some(needed) => needed,
            // The Gateways are not listed yet: decided once they are.
            None => return false,
        };
        let mut started = false;
        for demand in &mut self.on_demand {
            let kind = &self.kinds[demand.index];
            let name = kind.resource_name();
            match (&demand.task, needed) {
                (None, true) => {
                    let writer = Writer::<Stored>::new(());
                    self.stores[demand.index] = writer.as_reader();
                    let mut epoch = 0;
                    self.shared.update(|s| {
                        let k = &mut s.kinds[demand.index];
                        epoch = k.epoch + 1;
                        *k = watch::KindState {
                            epoch,
                            ..Default::default()
                        };
                    });
                    demand.task = Some(self.handle.spawn(watch::watch_kind(
                        client.clone(),
                        demand.index,
                        kind.clone(),
                        writer,
                        self.shared.clone(),
                        self.server.clone(),
                        epoch,
                    )));
                    started = true;
                    info!(resource = %name, "a Gateway listener admits routes by namespace labels (allowedRoutes.namespaces.from: Selector): watching them; no revision until they are listed");
                }
                (Some(task), false) => {
                    task.abort();
                    demand.task = None;
                    self.stores[demand.index] = Writer::<Stored>::new(()).as_reader();
                    self.shared.update(|s| {
                        let k = &mut s.kinds[demand.index];
                        *k = watch::KindState {
                            synced: true,
                            epoch: k.epoch + 1,
                            ..Default::default()
                        };
                    });
                    info!(resource = %name, "no Gateway listener admits routes by namespace labels any more: no longer watched");
                }
                _ => {}
            }
        }
        started
    }

    /// Whether some Gateway has a listener with `allowedRoutes.namespaces.from: Selector`
    /// (over-approximated: every Gateway counts, whatever its class; one whose text is no JSON
    /// counts when it names `Selector`); `None` while the Gateways are not listed.
    fn namespaces_needed(&self) -> Option<bool> {
        let index = self
            .kinds
            .iter()
            .position(|k| k.resource.kind == "Gateway" && k.resource.group == GATEWAY_GROUP)?;
        if !self.shared.lock().kinds[index].synced {
            return None;
        }
        Some(self.stores[index].state().iter().any(|g| {
            // Most Gateways never name it: no parse for them.
            if !g.text.contains("\"Selector\"") {
                return false;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&g.text) else {
                return true;
            };
            v.pointer("/spec/listeners")
                .and_then(|l| l.as_array())
                .is_some_and(|ls| {
                    ls.iter().any(|l| {
                        l.pointer("/allowedRoutes/namespaces/from")
                            .and_then(|f| f.as_str())
                            == Some("Selector")
                    })
                })
        }))
    }

    /// Reads the stores.
    fn read(&mut self, applied: Option<&str>) -> Result<Next, Refusal> {
        if !self.synced_once {
            watch::wait_for_sync(&self.shared, self.initial_wait);
        }
        if self.follow_demand() && !self.synced_once {
            // At start, the first revision may as well wait for them.
            watch::wait_for_sync(&self.shared, self.initial_wait);
        }
        {
            let state = self.shared.lock();
            if let Some(fatal) = &state.fatal {
                return Err(Refusal::unavailable(format!(
                    "cannot reach the Kubernetes API: {fatal}"
                )));
            }
            if !state.all_synced() {
                let failing: Vec<&str> = state
                    .kinds
                    .iter()
                    .filter(|k| !k.synced)
                    .filter_map(|k| k.error.as_deref())
                    .collect();
                if !failing.is_empty() {
                    return Err(Refusal::unavailable(format!(
                        "cannot list the policy from the Kubernetes API (retrying with backoff): {}",
                        failing.join("; ")
                    )));
                }
                // Those past the policy kinds (Services, Secrets, the Node) are named by count.
                let mut waiting: Vec<String> = self
                    .kinds
                    .iter()
                    .zip(&state.kinds)
                    .filter(|(_, s)| !s.synced)
                    .map(|(k, _)| k.resource_name())
                    .collect();
                let others = state.kinds[self.kinds.len().min(state.kinds.len())..]
                    .iter()
                    .filter(|s| !s.synced)
                    .count();
                if others > 0 {
                    waiting.push(format!("{others} more"));
                }
                debug!(waiting = %waiting.join(", "), "not every kind is listed yet: no revision");
                return Ok(Next::Unchanged);
            }
        }
        if !self.synced_once {
            self.synced_once = true;
            info!("every kind is listed: building revisions from the Kubernetes API");
        }
        let (mut docs, mut keys) = self.documents();
        let resolved = self.secrets.as_mut().map(|s| s.resolve(&docs));
        if let Some(resolved) = &resolved {
            keys.extend(resolved.keys.iter().cloned());
            let mut ordered: Vec<&[String; 4]> = keys.iter().collect();
            ordered.sort();
            docs.revision.id = revision_id(&ordered);
        }
        if self.last.as_deref() == Some(docs.revision.id.as_str()) {
            return Ok(Next::Unchanged);
        }
        self.last = Some(docs.revision.id.clone());
        if self.node.is_none() {
            let unknown = self.node_selectors();
            if !unknown.is_empty() {
                return Err(
                    Refusal::refused(RefusalKind::Invalid, PolicyErrors(unknown))
                        .of(&docs.revision.id),
                );
            }
        }
        let size: u64 = docs.files.iter().map(|f| f.content.len() as u64).sum();
        if size > MAX_REVISION_SIZE {
            return Err(Refusal::refused(
                RefusalKind::Source,
                format!(
                    "the policy objects hold {size} bytes together, over the {MAX_REVISION_SIZE}-byte limit of one revision"
                ),
            )
            .of(&docs.revision.id));
        }
        if let (Some(secrets), Some(resolved)) = (self.secrets.as_mut(), resolved) {
            let id = docs.revision.id.clone();
            if let Err(e) = secrets.write(&id, &resolved, applied) {
                // Read again at the next pass (the disk may have room by then).
                self.last = None;
                return Err(Refusal::refused(RefusalKind::Apply, e).of(&id));
            }
            if !resolved.unresolved.is_empty() {
                // The compiler leaves out what references them (see `secrets`).
                let mut cluster = docs
                    .cluster
                    .take()
                    .map(Arc::unwrap_or_clone)
                    .unwrap_or_default();
                cluster.unresolved = resolved.unresolved;
                docs.cluster = Some(Arc::new(cluster));
            }
        }
        Ok(Next::Revision(docs))
    }

    /// The revision of what the stores hold now, and the (resource, namespace, name,
    /// resourceVersion) keys its id is made of.
    fn documents(&self) -> (Documents, Vec<[String; 4]>) {
        struct Entry {
            path: String,
            key: [String; 4],
            text: Arc<str>,
        }
        let mut entries = Vec::new();
        for (kind, store) in self.kinds.iter().zip(&self.stores) {
            for o in store.state() {
                let m = &o.metadata;
                entries.push(Entry {
                    path: o.path(kind),
                    key: [
                        kind.resource_name(),
                        m.namespace.as_deref().unwrap_or_default().to_owned(),
                        m.name.to_string(),
                        m.resource_version.as_deref().unwrap_or_default().to_owned(),
                    ],
                    text: o.text.clone(),
                });
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let (mut cluster, mut cluster_keys) = match &self.cluster {
            Some(stores) => {
                let (cluster, keys) = stores.snapshot();
                (Some(cluster), keys)
            }
            None => (None, Vec::new()),
        };
        if let Some(node) = &self.node {
            let (labels, key) = node.snapshot();
            cluster.get_or_insert_with(Default::default).node = Some(labels);
            cluster_keys.push(key);
        }
        let cluster = cluster.map(Arc::new);
        let mut ordered: Vec<&[String; 4]> = entries
            .iter()
            .map(|e| &e.key)
            .chain(&cluster_keys)
            .collect();
        ordered.sort();
        let id = revision_id(&ordered);
        // Every key the id was made of, the cluster's included: the Secrets' are added to
        // these when the id is made again with them.
        let keys = entries
            .iter()
            .map(|e| e.key.clone())
            .chain(cluster_keys.iter().cloned())
            .collect();
        let docs = Documents {
            revision: Revision {
                id,
                source: self.describe.clone(),
            },
            files: entries
                .into_iter()
                .map(|e| SourceFile {
                    path: e.path,
                    content: e.text.to_string(),
                })
                .collect(),
            cluster,
            unresolved: Vec::new(),
        };
        (docs, keys)
    }
}

impl KubernetesSource {
    /// Without a node name: one problem per L4Policy with a `nodeSelector`, which this agent
    /// cannot tell whether to enforce.
    fn node_selectors(&self) -> Vec<PolicyError> {
        let mut problems = Vec::new();
        for (kind, store) in self.kinds.iter().zip(&self.stores) {
            if kind.resource.kind != "L4Policy" || kind.resource.group != "tollgate.dev" {
                continue;
            }
            for o in store.state() {
                let selector = serde_json::from_str::<serde_json::Value>(&o.text)
                    .ok()
                    .and_then(|v| v.pointer("/spec/nodeSelector").cloned())
                    .filter(|v| !v.is_null());
                if selector.is_some() {
                    let name = &o.metadata.name;
                    problems.push(PolicyError::new(
                        o.path(kind),
                        format!("L4Policy/{name}"),
                        "spec.nodeSelector",
                        "the agent does not know which node it runs on (no --node-name / NODE_NAME), so it cannot tell whether this policy applies here; set --node-name (the DaemonSet passes spec.nodeName) or remove the nodeSelector",
                    ));
                }
            }
        }
        problems.sort_by(|a, b| a.location.file.cmp(&b.location.file));
        problems
    }
}

/// `k8s:` and 16 hex digits of a SHA-256 over the sorted (resource, namespace, name,
/// resourceVersion) set (each part length-prefixed, so that no two sets hash the same input),
/// then `@` and the highest resourceVersion (when the API server's are numbers, as etcd's are).
fn revision_id(sorted: &[&[String; 4]]) -> String {
    let mut h = sha2::Sha256::new();
    let mut highest: Option<u64> = None;
    for key in sorted {
        for part in key.iter() {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        if let Ok(rv) = key[3].parse::<u64>() {
            highest = highest.max(Some(rv));
        }
    }
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    match highest {
        Some(rv) => format!("k8s:{hex}@{rv}"),
        None => format!("k8s:{hex}"),
    }
}

impl PolicySource for KubernetesSource {
    fn set_waker(&mut self, wake: Waker) {
        *self.shared.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(wake);
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn next(&mut self, applied: Option<&str>) -> Poll {
        let started = Instant::now();
        let outcome = self.read(applied);
        Poll {
            outcome,
            fetch: None,
            read: started.elapsed(),
        }
    }

    fn rescan(&mut self) {
        self.last = None;
    }
}

impl Drop for KubernetesSource {
    fn drop(&mut self) {
        for task in self
            .tasks
            .iter()
            .chain(self.on_demand.iter().filter_map(|d| d.task.as_ref()))
        {
            task.abort();
        }
        // Dropping a runtime may block; shutting it down in the background never does (the
        // source may be dropped on the agent's runtime thread).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(parts: [&str; 4]) -> [String; 4] {
        parts.map(str::to_owned)
    }

    #[test]
    fn the_revision_id_names_the_set_and_the_highest_resource_version() {
        let a = key(["l4policies.tollgate.dev", "", "edge", "12"]);
        let b = key(["httproutes.gateway.networking.k8s.io", "ns", "r", "9"]);
        let id = revision_id(&[&b, &a]);
        assert!(id.starts_with("k8s:"), "{id}");
        assert!(id.ends_with("@12"), "{id}");
        assert_eq!(id.len(), "k8s:".len() + 16 + "@12".len());
        // Another resourceVersion is another revision; the same set is the same id.
        let a2 = key(["l4policies.tollgate.dev", "", "edge", "13"]);
        assert_ne!(revision_id(&[&b, &a2]), id);
        assert_eq!(revision_id(&[&b, &a]), id);
        // Moving bytes between parts changes the id.
        let c = key(["l4policies.tollgate.dev", "", "edg", "e12"]);
        assert_ne!(revision_id(&[&c]), revision_id(&[&a]));
        assert_eq!(revision_id(&[]).len(), "k8s:".len() + 16);
    }
}
