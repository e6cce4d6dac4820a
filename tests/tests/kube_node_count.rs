//! The agent count of cluster rate limits in Kubernetes mode: the cluster's Nodes, counted
//! with a metadata-only list in pages (`tollgate_kubernetes::nodes`), against the fake API
//! server (no root).
use std::path::PathBuf;

use serde_json::json;
use tollgate_kubernetes::Settings;
use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer};

fn node(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        // The bulk of a real Node, which a metadata-only list leaves out.
        "status": {"images": [{"names": ["registry.test/big:1"], "sizeBytes": 1}]},
    })
}

#[test]
fn nodes_are_counted_page_by_page_with_metadata_only_lists() {
    let fake = FakeApiServer::start(tollgate_kinds());
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path).unwrap();
    // Read outside a runtime (it runs its own); the client inside one.
    let settings = Settings::resolve(&[path]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_rt = rt.enter();
    let client = settings.client().unwrap();

    // More Nodes than a page (500): the count follows the continue tokens.
    let n = tollgate_kubernetes::nodes::PAGE as usize + 23;
    for i in 0..n {
        fake.put(node(&format!("node-{i:04}"))).unwrap();
    }
    let count = rt.block_on(tollgate_kubernetes::nodes::count(client.clone()));
    assert_eq!(count, Ok(n as u32));
    let lists: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/nodes")
        .collect();
    assert_eq!(lists.len(), 2, "two pages: {lists:?}");
    for r in &lists {
        assert_eq!(r.param("limit"), Some("500"), "{r:?}");
        assert!(!r.watch, "a list, not a watch");
        assert!(
            r.accept
                .as_deref()
                .is_some_and(|a| a.contains("as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")),
            "metadata only: {:?}",
            r.accept
        );
    }
    assert!(lists[0].param("continue").is_none());
    assert!(lists[1].param("continue").is_some_and(|c| !c.is_empty()));

    // The cluster shrinks: the next count says so.
    for i in 0..n - 3 {
        let _ = fake.delete("v1", "Node", None, &format!("node-{i:04}"));
    }
    assert_eq!(
        rt.block_on(tollgate_kubernetes::nodes::count(client.clone())),
        Ok(3)
    );
    drop(fake);
    // No API server: an error naming what failed, not a count.
    let e = rt
        .block_on(tollgate_kubernetes::nodes::count(client))
        .unwrap_err();
    assert!(e.contains("list Nodes"), "{e}");
}
