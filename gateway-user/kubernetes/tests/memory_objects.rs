//! What the source keeps per policy or route object, measured with a counting allocator (its
//! own test binary, one test, so that nothing else allocates meanwhile). Target (issue 11): at
//! most 3 KB per policy or route object.
//!
//! Measured: the kind's reflector store as the watch task fills it (each object turned into a
//! [`Stored`] and applied to kube's `Writer`, as `watch::watch_kind` does), i.e. the object's
//! text, its identity and the store's index entry. Counting the allocator in-process, rather
//! than the agent's RSS delta per 10,000 objects, separates the store from what the agent
//! builds out of it (the parse cache, the compiled route table) and from the allocator's
//! retained pages, and gives the same figure on a loaded machine.

use kube::api::DynamicObject;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use serde_json::{json, Value};
use tollgate_kubernetes::object::Stored;
use tollgate_kubernetes::{watched_kinds, WatchedKind};

mod common;
use common::counted;

/// The metadata the API server sends with a custom resource that `kubectl apply` wrote:
/// uid, generation, labels, the last-applied annotation (a second copy of the object) and
/// managedFields.
fn metadata(name: &str, namespace: Option<&str>, spec: &Value, i: usize) -> Value {
    let mut m = json!({
        "name": name,
        "uid": format!("5f4e3d2c-1b0a-9f8e-7d6c-{i:012}"),
        "resourceVersion": format!("{}", 200_000 + i),
        "generation": 2,
        "creationTimestamp": "2026-12-04T10:00:00Z",
        "labels": {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/part-of": "shop"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
            serde_json::to_string(&json!({"spec": spec})).unwrap()},
        "managedFields": [{"manager": "kubectl-client-side-apply", "operation": "Update",
            "apiVersion": "gateway.networking.k8s.io/v1", "time": "2026-12-04T10:00:00Z",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:rules": {}, "f:parentRefs": {}}}}],
    });
    if let Some(ns) = namespace {
        m["namespace"] = ns.into();
    }
    m
}

/// An HTTPRoute as a team writes one: two hostnames, two rules (a path and header match, a
/// header filter, a timeout; two weighted Services), and the status a controller wrote.
fn route(i: usize) -> DynamicObject {
    let spec = json!({
        "parentRefs": [{"name": "edge", "namespace": "infra", "sectionName": "https"}],
        "hostnames": [format!("shop-{i}.example.com"), format!("www.shop-{i}.example.com")],
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": format!("/api/v1/orders-{i}")},
                          "headers": [{"name": "x-tenant", "value": "blue"}]}],
             "filters": [{"type": "RequestHeaderModifier",
                          "requestHeaderModifier": {"set": [{"name": "x-route", "value": format!("orders-{i}")}]}}],
             "backendRefs": [{"name": format!("orders-{i}"), "port": 8080, "weight": 90},
                             {"name": format!("orders-{i}-canary"), "port": 8080, "weight": 10}],
             "timeouts": {"request": "10s"}},
            {"matches": [{"path": {"type": "Exact", "value": "/healthz"}}],
             "backendRefs": [{"name": format!("orders-{i}"), "port": 8080}]},
        ],
    });
    let object = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": metadata(&format!("orders-{i}"), Some(&format!("team-{}", i % 50)), &spec, i),
        "spec": spec,
        "status": {"parents": [{"parentRef": {"name": "edge", "namespace": "infra"},
            "controllerName": "tollgate.dev/gateway-controller",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                "message": "", "observedGeneration": 2, "lastTransitionTime": "2026-12-04T10:00:01Z"}]}]},
    });
    serde_json::from_value(object).unwrap()
}

/// An L4Policy of 20 rules (a deny list, allows with ports and a rate limit).
fn l4_policy(i: usize) -> DynamicObject {
    let rules: Vec<Value> = (0..20)
        .map(|r| {
            if r % 4 == 3 {
                json!({"name": format!("allow-{r}"), "action": "allow", "protocol": "tcp",
                       "ports": ["443", "8000-8100"],
                       "rateLimit": {"packetsPerSecond": 1000, "burst": 2000}})
            } else {
                json!({"name": format!("deny-{r}"), "action": "deny",
                       "from": [format!("10.{}.{r}.0/24", i % 256)]})
            }
        })
        .collect();
    let spec = json!({"defaultAction": "allow", "rules": rules});
    let object = json!({
        "apiVersion": "tollgate.dev/v1alpha1", "kind": "L4Policy",
        "metadata": metadata(&format!("edge-{i}"), None, &spec, i),
        "spec": spec,
        "status": {"observedGeneration": 2, "nodes": 40},
    });
    serde_json::from_value(object).unwrap()
}

fn kind(name: &str) -> WatchedKind {
    watched_kinds()
        .into_iter()
        .find(|k| k.resource.kind == name)
        .unwrap_or_else(|| panic!("{name} is watched"))
}

/// Fills a store of `kind` with `n` objects made by `make`, each made, turned into what is
/// kept and applied in turn (what is transient nets to zero); returns (bytes requested, bytes
/// in malloc chunks) per object kept.
fn per_object(kind: &WatchedKind, n: usize, make: fn(usize) -> DynamicObject) -> (f64, f64) {
    let mut writer = Writer::<Stored>::new(());
    writer.apply_watcher_event(&Event::Init);
    let before = counted();
    for i in 0..n {
        let stored = Stored::of(kind, make(i));
        writer.apply_watcher_event(&Event::InitApply(stored));
    }
    writer.apply_watcher_event(&Event::InitDone);
    let after = counted();
    assert_eq!(writer.as_reader().len(), n);
    let per = |a: isize, b: isize| (b - a) as f64 / n as f64;
    let kept = (per(before.0, after.0), per(before.1, after.1));
    drop(writer);
    kept
}

/// The size of one object decoded as kube's `DynamicObject` (malloc chunks), for comparison.
fn decoded(make: fn(usize) -> DynamicObject) -> f64 {
    let before = counted();
    let objects: Vec<DynamicObject> = (0..100).map(make).collect();
    let held = counted();
    drop(objects);
    (held.1 - before.1) as f64 / 100.0
}

#[test]
fn a_route_or_policy_object_costs_at_most_3_kb_in_the_store() {
    for (name, n, make) in [
        ("HTTPRoute", 10_000, route as fn(usize) -> DynamicObject),
        ("L4Policy", 1_000, l4_policy),
    ] {
        let k = kind(name);
        let json = serde_json::to_string(&make(0)).unwrap().len();
        let decoded = decoded(make);
        let text = Stored::of(&k, make(0)).text.len();
        let (requested, chunks) = per_object(&k, n, make);
        println!(
            "per {name} kept ({n} in the store): {requested:.0} bytes requested, {chunks:.0} bytes in malloc chunks (its text kept: {text} bytes; its JSON from the API server: {json} bytes; decoded as kube's DynamicObject: {decoded:.0} bytes)"
        );
        assert!(chunks <= 3072.0, "{name}: {chunks:.0} bytes per object");
    }
}
