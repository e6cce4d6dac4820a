//! What the source keeps per EndpointSlice, measured with a counting allocator (its own test
//! binary, one test, so that nothing else allocates meanwhile). Target (issue 11): at most
//! 1 KB per slice of 10 endpoints.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use serde_json::json;
use tollgate_kubernetes::services::Store;

mod common;
use common::counted;

/// A slice as the EndpointSlice controller writes it: 10 endpoints with node names, zones,
/// target references and hints, labels, managedFields.
fn slice(i: usize) -> EndpointSlice {
    let endpoints: Vec<_> = (0..10)
        .map(|e| {
            json!({
                "addresses": [format!("10.{}.{}.{}", i / 256, i % 256, e + 1)],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": format!("node-{e}.cluster.example"),
                "zone": "europe-west1-b",
                "hints": {"forZones": [{"name": "europe-west1-b"}]},
                "targetRef": {"kind": "Pod", "name": format!("checkout-7d9f8c6b5-{i:05}{e}"),
                              "namespace": "shop", "uid": "0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5"},
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("checkout-{i:05}-x7k2p"), "namespace": "shop",
            "uid": "5f4e3d2c-1b0a-9f8e-7d6c-5b4a39281706", "resourceVersion": format!("{}", 100000 + i),
            "generation": 3, "generateName": format!("checkout-{i:05}-"),
            "labels": {"kubernetes.io/service-name": format!("checkout-{i:05}"),
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                       "app.kubernetes.io/name": "checkout"},
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-12-04T10:00:00Z"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": format!("checkout-{i:05}"),
                                 "uid": "6a5b4c3d-2e1f-0a9b-8c7d-6e5f4a3b2c1d", "controller": true,
                                 "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "apiVersion": "discovery.k8s.io/v1", "time": "2026-12-04T10:00:00Z",
                               "fieldsType": "FieldsV1", "fieldsV1": {"f:addressType": {}, "f:endpoints": {}}}],
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

#[test]
fn a_slice_of_10_endpoints_costs_at_most_1_kb_in_the_store() {
    const SLICES: usize = 2_000;
    let before = counted();
    let mut store = Store::<tollgate_model::cluster::EndpointSlice>::default();
    store.apply(Event::Init);
    for i in 0..SLICES {
        store.apply(Event::InitApply(slice(i)));
    }
    store.apply(Event::InitDone);
    let after = counted();
    assert_eq!(store.len(), SLICES);
    let per = |a: isize, b: isize| (b - a) as f64 / SLICES as f64;
    let (requested, chunks) = (per(before.0, after.0), per(before.1, after.1));
    let json = serde_json::to_string(&slice(0)).unwrap().len();
    println!(
        "per 10-endpoint EndpointSlice kept: {requested:.0} bytes requested, {chunks:.0} bytes in malloc chunks (its JSON: {json} bytes)"
    );
    assert!(chunks <= 1024.0, "{chunks:.0} bytes per slice");
    drop(store);
}
