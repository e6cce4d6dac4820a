//! The controller's view of the cluster: one watcher and reflector store per kind the agents
//! read (as the agents' source watches them, [`watched_kinds`]) and for `TollgateNode`, keeping
//! whole objects, status included (the agents' source drops status; the controller compares
//! and merges it). A kind whose resource the API server does not serve (its CRD is not
//! installed) counts as listed and empty, and is listed again with the watcher's backoff.
//! Services and EndpointSlices, Secrets and ConfigMaps are kept by the agents' own stores
//! ([`ClusterWatch`], [`SecretsWatch`]): what the agents resolve and leave out, the status says.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use tollgate_kubernetes::object::Stored;
use tollgate_kubernetes::secrets::SecretsWatch;
use tollgate_kubernetes::services::ClusterWatch;
use tollgate_kubernetes::{watched_kinds, WatchedKind};
use tollgate_model::node::TollgateNode;
use tollgate_model::{Documents, Revision, SourceFile};
use tracing::{info, warn};

use crate::desired::{ObjectKey, ObjectView};
use crate::outcome::NodeView;

/// One watched kind and its store.
struct Watched {
    kind: WatchedKind,
    /// Its objects are part of the policy the agents compile (GatewayClass is not: the
    /// controller reads it only to know which Gateways are its own).
    policy: bool,
    store: Store<DynamicObject>,
    synced: Arc<AtomicBool>,
}

/// Every store, and the notification of a change in any.
pub struct Cache {
    kinds: Vec<Watched>,
    nodes: Watched,
    /// Notified on every change of any store.
    pub changed: Arc<tokio::sync::Notify>,
    /// Services and EndpointSlices: backendRefs to Services are judged as the agents judge
    /// them (a route to an existing Service port is `ResolvedRefs=True`).
    cluster: ClusterWatch,
    /// Secrets and ConfigMaps: a listener whose certificate Secret is missing, an AuthPolicy
    /// whose keys Secret is, are left out by the agents, and their status says so (the Gateway
    /// API requires `ResolvedRefs=False, InvalidCertificateRef` on such a listener). Only the
    /// objects the policy references wake the controller.
    secrets: SecretsWatch,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One consistent read of the stores.
pub struct Snapshot {
    /// The policy objects as the agents read them.
    pub documents: Documents,
    /// Every object whose status the controller writes, with its generation and spec.
    pub objects: std::collections::BTreeMap<ObjectKey, ObjectView>,
    /// Each object's `resourceVersion` and `status` as the store has them.
    pub current: std::collections::BTreeMap<ObjectKey, (String, Option<serde_json::Value>)>,
    /// What each node reports.
    pub nodes: Vec<NodeView>,
}

/// The kinds whose status the controller writes.
pub const WRITTEN_KINDS: [&str; 9] = [
    "GatewayClass",
    "Gateway",
    "HTTPRoute",
    "GRPCRoute",
    "AuthPolicy",
    "RateLimitPolicy",
    "BackendTrafficPolicy",
    "Backend",
    "L4Policy",
];

/// The resource of each kind in [`WRITTEN_KINDS`] and whether it is namespaced, for the
/// writer: those of the kinds the agents read (GatewayClass is one of them).
pub fn written_resources() -> Vec<(ApiResource, bool)> {
    watched_kinds()
        .into_iter()
        .filter(|k| WRITTEN_KINDS.contains(&k.resource.kind.as_str()))
        .map(|k| (k.resource, k.namespaced))
        .collect()
}

impl Cache {
    /// Starts watching, on the current tokio runtime.
    pub fn start(client: kube::Client) -> Cache {
        let changed = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        let mut spawn = |kind: WatchedKind, policy: bool| {
            let writer = Writer::<DynamicObject>::new(kind.resource.clone());
            let store = writer.as_reader();
            let synced = Arc::new(AtomicBool::new(false));
            tasks.push(tokio::spawn(watch(
                client.clone(),
                kind.resource.clone(),
                writer,
                synced.clone(),
                changed.clone(),
            )));
            Watched {
                kind,
                policy,
                store,
                synced,
            }
        };
        let kinds: Vec<Watched> = watched_kinds()
            .into_iter()
            .map(|k| spawn(k, true))
            .collect();
        // GatewayClass is one of them: the compiler reads it to know which Gateways are
        // Tollgate's, as the agents' does.
        let nodes = spawn(WatchedKind::other::<TollgateNode>(false), false);
        let wake = changed.clone();
        let cluster = ClusterWatch::start(
            &client,
            "kubernetes (controller)",
            Arc::new(move || wake.notify_one()),
        );
        let wake = changed.clone();
        let secrets = SecretsWatch::start(
            &client,
            "kubernetes (controller)",
            Arc::new(move || wake.notify_one()),
        );
        Cache {
            kinds,
            nodes,
            changed,
            cluster,
            secrets,
            tasks,
        }
    }

    /// Every kind has been listed once.
    pub fn synced(&self) -> bool {
        self.kinds
            .iter()
            .chain(std::iter::once(&self.nodes))
            .all(|w| w.synced.load(Ordering::Acquire))
            && self.cluster.synced()
            && self.secrets.synced()
    }

    /// Reads every store. The Secrets and ConfigMaps the policy read references become the
    /// ones whose changes wake the controller.
    pub fn snapshot(&mut self) -> Snapshot {
        let mut files = Vec::new();
        let mut objects = std::collections::BTreeMap::new();
        let mut current = std::collections::BTreeMap::new();
        for w in &self.kinds {
            for o in w.store.state() {
                let stored = Stored::of(&w.kind, (*o).clone());
                if w.policy {
                    files.push(SourceFile {
                        path: stored.path(&w.kind),
                        content: stored.text.to_string(),
                    });
                }
                let kind = w.kind.resource.kind.as_str();
                if !WRITTEN_KINDS.contains(&kind) {
                    continue;
                }
                let key = ObjectKey {
                    kind: kind.to_owned(),
                    namespace: stored.metadata.namespace.as_deref().map(str::to_owned),
                    name: stored.metadata.name.to_string(),
                };
                current.insert(
                    key.clone(),
                    (
                        o.metadata.resource_version.clone().unwrap_or_default(),
                        o.data.get("status").cloned(),
                    ),
                );
                let status_owned = o.metadata.managed_fields.iter().flatten().any(|m| {
                    m.manager.as_deref() == Some(crate::FIELD_MANAGER)
                        && m.subresource.as_deref() == Some("status")
                        && m.fields_v1.as_ref().is_some_and(|f| {
                            f.0.get("f:status")
                                .and_then(serde_json::Value::as_object)
                                .is_some_and(|s| !s.is_empty())
                        })
                });
                objects.insert(
                    key,
                    ObjectView {
                        generation: o.metadata.generation,
                        object: o.data.clone(),
                        status_owned,
                    },
                );
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut documents = Documents {
            revision: Revision {
                id: String::new(),
                source: "kubernetes (controller)".into(),
            },
            files,
            cluster: None,
            unresolved: Vec::new(),
        };
        // Where the agents' source puts them, and the compiler reads them in Kubernetes mode.
        let mut cluster = self.cluster.cluster();
        cluster.unresolved = self.secrets.unresolved(&documents);
        documents.cluster = Some(Arc::new(cluster));
        let mut nodes: Vec<NodeView> = self
            .nodes
            .store
            .state()
            .iter()
            .map(|n| {
                NodeView::of(
                    n.metadata.name.as_deref().unwrap_or_default(),
                    n.data.get("status"),
                )
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            documents,
            objects,
            current,
            nodes,
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Lists and watches one kind into its store until aborted.
async fn watch(
    client: kube::Client,
    resource: ApiResource,
    mut writer: Writer<DynamicObject>,
    synced: Arc<AtomicBool>,
    changed: Arc<tokio::sync::Notify>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let name = format!("{}.{}", resource.plural, resource.group);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut absent = false;
    let mut failing = false;
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => {
                let done = matches!(event, Event::InitDone);
                writer.apply_watcher_event(&event);
                if done {
                    if absent || failing {
                        info!(resource = %name, "listed");
                    }
                    absent = false;
                    failing = false;
                    synced.store(true, Ordering::Release);
                }
                if !matches!(event, Event::Init | Event::InitApply(_)) {
                    changed.notify_one();
                }
            }
            Err(e) if is_not_found(&e) => {
                writer.apply_watcher_event(&Event::Init);
                writer.apply_watcher_event(&Event::InitDone);
                if !absent {
                    warn!(resource = %name, "the API server does not serve this resource (its CRD is not installed?): read as empty, listed again with backoff");
                    absent = true;
                    changed.notify_one();
                }
                synced.store(true, Ordering::Release);
            }
            Err(e) => {
                if !failing {
                    warn!(resource = %name, error = %e, "watch error, retrying with backoff");
                    failing = true;
                }
            }
        }
    }
}

fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}
