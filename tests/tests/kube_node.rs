//! This node's `Node` (L4Policy nodeSelector) through the Kubernetes source, against the fake
//! API server: its labels travel with the revision, a heartbeat is no new revision, a label
//! change is one. No root needed.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_kubernetes::{KubernetesSource, Settings};
use tollgate_model::source::{Next, PolicySource};
use tollgate_model::Documents;
use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer};

fn settings(fake: &FakeApiServer, dir: &tempfile::TempDir) -> Settings {
    let path: PathBuf = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path).expect("write the kubeconfig");
    Settings::resolve(&[path]).expect("read the kubeconfig")
}

/// The source as the agent opens it with `--node-name node`, with a waker into a channel.
fn open(
    fake: &FakeApiServer,
    dir: &tempfile::TempDir,
    node: Option<&str>,
) -> (KubernetesSource, mpsc::Receiver<()>) {
    let mut source =
        KubernetesSource::open_for_node(&settings(fake, dir), None, node.map(str::to_owned))
            .expect("open the source");
    let (tx, rx) = mpsc::channel();
    source.set_waker(std::sync::Arc::new(move || {
        let _ = tx.send(());
    }));
    (source, rx)
}

fn node(name: &str, labels: Value, ready: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"conditions": [{"type": "Ready", "status": ready,
                                   "lastHeartbeatTime": format!("2026-12-04T00:00:0{}Z", ready.len())}]},
    })
}

fn l4(name: &str, selector: Option<Value>) -> Value {
    let mut p = json!({
        "apiVersion": "tollgate.dev/v1alpha1", "kind": "L4Policy",
        "metadata": {"name": name},
        "spec": {"rules": [{"name": "ssh", "action": "deny", "from": ["0.0.0.0/0"],
                            "protocol": "TCP", "ports": ["22"]}]},
    });
    if let Some(s) = selector {
        p["spec"]["nodeSelector"] = s;
    }
    p
}

fn revision(source: &mut KubernetesSource) -> Documents {
    match source.next(None).outcome {
        Ok(Next::Revision(docs)) => docs,
        other => panic!("expected a revision, got {other:?}"),
    }
}

fn labels(docs: &Documents) -> Vec<(String, String)> {
    let node = docs
        .cluster
        .as_ref()
        .and_then(|c| c.node.as_ref())
        .expect("the revision carries the node");
    node.labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_owned(), v.to_owned())
}

#[test]
fn a_label_change_is_a_new_revision_and_a_heartbeat_is_not() {
    let fake = FakeApiServer::start(tollgate_kinds());
    fake.put(node("node-a", json!({"role": "edge"}), "True"))
        .unwrap();
    // Another node's labels are never ours.
    fake.put(node("node-b", json!({"role": "other"}), "True"))
        .unwrap();
    fake.put(l4("edge", Some(json!({"matchLabels": {"role": "edge"}}))))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, rx) = open(&fake, &dir, Some("node-a"));
    let first = revision(&mut source);
    assert_eq!(labels(&first), [pair("role", "edge")]);
    assert_eq!(
        &*first.cluster.as_ref().unwrap().node.as_ref().unwrap().name,
        "node-a"
    );
    // One watch more than without a node: the Node's, for this node alone (opened just after
    // its list, which the first revision waited for).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut watches = fake.open_watches();
    while !watches.contains_key("nodes") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        watches = fake.open_watches();
    }
    assert_eq!(watches.get("nodes"), Some(&1), "{watches:?}");
    let requests = fake.requests();
    let node_requests: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/api/v1/nodes")
        .collect();
    assert!(!node_requests.is_empty());
    for r in &node_requests {
        assert!(
            r.params
                .iter()
                .any(|(k, v)| k == "fieldSelector" && v == "metadata.name=node-a"),
            "{r:?}"
        );
    }
    while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}

    // Heartbeats: the kubelet's status writes, a new resourceVersion each, the same labels.
    for ready in ["False", "True", "Unknown"] {
        fake.put(node("node-a", json!({"role": "edge"}), ready))
            .unwrap();
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a heartbeat woke the agent"
    );
    match source.next(None).outcome {
        Ok(Next::Unchanged) => {}
        other => panic!("a heartbeat made {other:?}"),
    }

    // A label change.
    fake.put(node(
        "node-a",
        json!({"role": "worker", "zone": "b"}),
        "True",
    ))
    .unwrap();
    rx.recv_timeout(Duration::from_secs(2))
        .expect("a label change wakes the agent");
    let second = revision(&mut source);
    assert_ne!(second.revision.id, first.revision.id);
    assert_eq!(labels(&second), [pair("role", "worker"), pair("zone", "b")]);
    // The policy is the same object: only the node changed.
    assert_eq!(second.files, first.files);
}

#[test]
fn a_node_that_does_not_exist_has_no_labels() {
    let fake = FakeApiServer::start(tollgate_kinds());
    fake.put(node("node-b", json!({"role": "edge"}), "True"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, rx) = open(&fake, &dir, Some("node-a"));
    let first = revision(&mut source);
    assert_eq!(labels(&first), []);
    while rx.recv_timeout(Duration::from_millis(300)).is_ok() {}
    // Created later: its labels arrive.
    fake.put(node("node-a", json!({"role": "edge"}), "True"))
        .unwrap();
    rx.recv_timeout(Duration::from_secs(2))
        .expect("the Node's creation wakes the agent");
    assert_eq!(labels(&revision(&mut source)), [pair("role", "edge")]);
    // Deleted: no labels again.
    fake.delete("v1", "Node", None, "node-a").unwrap();
    rx.recv_timeout(Duration::from_secs(2))
        .expect("the Node's deletion wakes the agent");
    let third = revision(&mut source);
    assert_eq!(labels(&third), []);
    assert_eq!(third.revision.id, first.revision.id);
}

#[test]
fn without_a_node_name_a_policy_with_a_node_selector_is_refused() {
    let fake = FakeApiServer::start(tollgate_kinds());
    fake.put(l4("everywhere", None)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, rx) = open(&fake, &dir, None);
    let first = revision(&mut source);
    assert!(first.cluster.as_ref().unwrap().node.is_none());
    let watches = fake.open_watches();
    assert!(!watches.contains_key("nodes"), "{watches:?}");
    // The initial lists are a burst: its last wake-up may come after the first read.
    std::thread::sleep(Duration::from_millis(300));
    while rx.try_recv().is_ok() {}
    fake.put(l4("edge", Some(json!({"matchLabels": {"role": "edge"}}))))
        .unwrap();
    rx.recv_timeout(Duration::from_secs(2))
        .expect("the new policy wakes the agent");
    let refusal = match source.next(None).outcome {
        Err(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let message = refusal.message.to_string();
    assert!(
        message.contains("kubernetes:/L4Policy/edge")
            && message.contains("spec.nodeSelector")
            && message.contains("--node-name"),
        "{message}"
    );
    assert!(!message.contains("everywhere"), "{message}");
}
