//! This node's `Node` object (core `v1`), for L4Policy `nodeSelector`: one more watch,
//! restricted to the node by the field selector `metadata.name=<node>`, of which only the
//! labels are kept.
//!
//! The kubelet rewrites its Node's status every few seconds (heartbeats), and each write is a
//! new resourceVersion: the revision id is therefore keyed on a hash of the labels, not on the
//! resourceVersion, so that only a label change is a new revision. A Node that does not exist
//! (a `--node-name` that names no node) is a node without labels, warned about once.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1 as core;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use sha2::Digest as _;
use tollgate_model::cluster::NodeLabels;
use tracing::{debug, info, warn};

use crate::services::IdKey;
use crate::watch::{KindState, Shared};

/// The resource, as the revision id names it.
pub const RESOURCE: &str = "nodes";

/// The labels of the node, shared between its watch task and the source.
#[derive(Debug)]
pub(crate) struct NodeStore {
    name: String,
    state: Mutex<NodeState>,
}

#[derive(Debug, Default)]
struct NodeState {
    /// The labels of the Node (`None`: it does not exist).
    live: Option<BTreeMap<String, String>>,
    /// During a (re)list: what it has listed so far.
    relist: Option<Option<BTreeMap<String, String>>>,
    /// The missing Node was warned about (once, until it appears).
    warned_missing: bool,
}

impl NodeStore {
    pub(crate) fn new(name: String) -> Self {
        NodeStore {
            name,
            state: Mutex::new(NodeState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The labels of `node` when it is this node (the field selector already asks for it
    /// alone; a server that ignored it must not make another node's labels ours).
    fn labels_of(&self, node: &core::Node) -> Option<BTreeMap<String, String>> {
        (node.metadata.name.as_deref() == Some(self.name.as_str()))
            .then(|| node.metadata.labels.clone().unwrap_or_default())
    }

    /// Applies one watch event; returns whether the labels may have changed, and whether the
    /// event ended a list.
    fn apply(&self, event: Event<core::Node>) -> (bool, bool) {
        let mut s = self.lock();
        match event {
            Event::Init => {
                s.relist = Some(None);
                (false, false)
            }
            Event::InitApply(node) => {
                if let Some(labels) = self.labels_of(&node) {
                    s.relist = Some(Some(labels));
                }
                (false, false)
            }
            Event::InitDone => {
                let listed = s.relist.take().flatten();
                if listed.is_none() && !s.warned_missing {
                    s.warned_missing = true;
                    warn!(node = %self.name, "no Node of this name (--node-name): it counts as a node without labels for L4Policy nodeSelector");
                }
                if listed.is_some() {
                    s.warned_missing = false;
                }
                let changed = s.live != listed;
                s.live = listed;
                (changed, true)
            }
            Event::Apply(node) => match self.labels_of(&node) {
                Some(labels) => {
                    let changed = s.live.as_ref() != Some(&labels);
                    if changed {
                        info!(node = %self.name, "the Node's labels changed");
                    }
                    s.live = Some(labels);
                    s.warned_missing = false;
                    (changed, false)
                }
                None => (false, false),
            },
            Event::Delete(node) => {
                if self.labels_of(&node).is_none() {
                    return (false, false);
                }
                warn!(node = %self.name, "the Node was deleted: it counts as a node without labels for L4Policy nodeSelector");
                let changed = s.live.take().is_some();
                (changed, false)
            }
        }
    }

    /// The node's labels, and the revision id key they stand for: (`nodes`, ``, name,
    /// `labels-` and 16 hex digits of a SHA-256 over them). The last part is never a number,
    /// so it never counts as the highest resourceVersion of the id.
    pub(crate) fn snapshot(&self) -> (NodeLabels, IdKey) {
        let labels = self.lock().live.clone().unwrap_or_default();
        let key = [
            RESOURCE.to_owned(),
            String::new(),
            self.name.clone(),
            labels_hash(&labels),
        ];
        (
            NodeLabels {
                name: self.name.as_str().into(),
                labels,
            },
            key,
        )
    }

    /// Starts the watch on `handle`, as kind `index` of `shared`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        handle: &tokio::runtime::Handle,
        client: &kube::Client,
        index: usize,
        shared: &Arc<Shared>,
        server: &str,
    ) -> tokio::task::JoinHandle<()> {
        handle.spawn(watch(
            self.clone(),
            client.clone(),
            index,
            shared.clone(),
            server.to_owned(),
        ))
    }
}

/// `labels-` and 16 hex digits of a SHA-256 over the sorted labels (each key and value
/// length-prefixed, so that no two label sets hash the same input).
fn labels_hash(labels: &BTreeMap<String, String>) -> String {
    let mut h = sha2::Sha256::new();
    for (k, v) in labels {
        for part in [k, v] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
    }
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("labels-{hex}")
}

/// Lists and watches the Node into `store` until the task is aborted.
async fn watch(
    store: Arc<NodeStore>,
    client: kube::Client,
    index: usize,
    shared: Arc<Shared>,
    server: String,
) {
    let api: Api<core::Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", store.name));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => {
                let (changed, done) = store.apply(event);
                if done {
                    shared.update(|s| {
                        let k = &mut s.kinds[index];
                        if k.error.is_some() {
                            info!(resource = RESOURCE, "listed again after errors");
                        }
                        *k = KindState {
                            synced: true,
                            absent: false,
                            error: None,
                            epoch: 0,
                        };
                    });
                }
                if changed {
                    shared.changed.notify_one();
                }
            }
            Err(e) => {
                // No revision is built until the Node is listed: a policy for some nodes must
                // not be enforced on every node (or none) while the labels are unknown.
                let message = format!("the Node {} from {server}: {e}", store.name);
                let mut repeated = false;
                shared.update(|s| {
                    let k = &mut s.kinds[index];
                    repeated = k.error.as_deref() == Some(message.as_str());
                    k.error = Some(message.clone());
                });
                if repeated {
                    debug!("watch error (again): {message}");
                } else {
                    warn!("watch error, retrying with backoff: {message}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, rv: &str, labels: serde_json::Value, ready: &str) -> core::Node {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "resourceVersion": rv, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .unwrap()
    }

    fn listed(store: &NodeStore, nodes: Vec<core::Node>) -> (bool, bool) {
        store.apply(Event::Init);
        for n in nodes {
            store.apply(Event::InitApply(n));
        }
        store.apply(Event::InitDone)
    }

    #[test]
    fn only_a_label_change_changes_the_id_key() {
        let store = NodeStore::new("node-a".into());
        assert_eq!(
            listed(
                &store,
                vec![node("node-a", "1", json!({"role": "edge"}), "True")]
            ),
            (true, true)
        );
        let (labels, key) = store.snapshot();
        assert_eq!(&*labels.name, "node-a");
        assert_eq!(labels.labels, [("role".into(), "edge".into())].into());
        // A heartbeat: a new resourceVersion and status, the same labels.
        assert_eq!(
            store.apply(Event::Apply(node(
                "node-a",
                "2",
                json!({"role": "edge"}),
                "False"
            ))),
            (false, false)
        );
        assert_eq!(store.snapshot().1, key);
        // A relist that finds the same labels is no change either.
        assert_eq!(
            listed(
                &store,
                vec![node("node-a", "3", json!({"role": "edge"}), "True")]
            ),
            (false, true)
        );
        assert_eq!(store.snapshot().1, key);
        // Another node's object (a server ignoring the field selector) is not ours.
        assert_eq!(
            store.apply(Event::Apply(node(
                "node-b",
                "4",
                json!({"role": "x"}),
                "True"
            ))),
            (false, false)
        );
        assert_eq!(store.snapshot().1, key);
        // A label change is.
        assert_eq!(
            store.apply(Event::Apply(node(
                "node-a",
                "5",
                json!({"role": "worker"}),
                "True"
            ))),
            (true, false)
        );
        let (labels, changed) = store.snapshot();
        assert_ne!(changed, key);
        assert_eq!(labels.labels["role"], "worker");
        assert!(changed[3].starts_with("labels-") && changed[3].parse::<u64>().is_err());
    }

    #[test]
    fn a_missing_or_deleted_node_has_no_labels() {
        let store = NodeStore::new("node-a".into());
        assert_eq!(
            listed(
                &store,
                vec![node("node-b", "1", json!({"role": "edge"}), "True")]
            ),
            (false, true)
        );
        assert!(store.snapshot().0.labels.is_empty());
        let empty = store.snapshot().1;
        store.apply(Event::Apply(node(
            "node-a",
            "2",
            json!({"role": "edge"}),
            "True",
        )));
        assert_ne!(store.snapshot().1, empty);
        assert_eq!(
            store.apply(Event::Delete(node(
                "node-a",
                "3",
                json!({"role": "edge"}),
                "True"
            ))),
            (true, false)
        );
        assert!(store.snapshot().0.labels.is_empty());
        assert_eq!(store.snapshot().1, empty);
    }
}
