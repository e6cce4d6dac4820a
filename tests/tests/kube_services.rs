//! backendRefs to Services in Kubernetes mode: the source's Service and EndpointSlice watches
//! against the fake API server (no root), and the real agent routing through them (root): an
//! HTTPRoute to a Service reaches the ready endpoints of its EndpointSlices, follows their
//! changes, and a Service deleted answers 500 while the other routes serve.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_kubernetes::{KubernetesSource, Settings};
use tollgate_model::cluster::{Cluster, ServiceType};
use tollgate_model::source::{Next, PolicySource};
use tollgate_model::Documents;
use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer, Kind};
use tollgate_tests::l7::{
    backend_object, curl, documents, gateway, route_object, start_agent, to, Backend,
};
use tollgate_tests::{require_root, Lab, POLICY_APPLIED};

fn settings(fake: &FakeApiServer, dir: &tempfile::TempDir) -> Settings {
    let path: PathBuf = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path).expect("write the kubeconfig");
    Settings::resolve(&[path]).expect("read the kubeconfig")
}

fn open(fake: &FakeApiServer, dir: &tempfile::TempDir) -> (KubernetesSource, mpsc::Receiver<()>) {
    let mut source = KubernetesSource::open(&settings(fake, dir)).expect("open the source");
    let (tx, rx) = mpsc::channel();
    source.set_waker(std::sync::Arc::new(move || {
        let _ = tx.send(());
    }));
    (source, rx)
}

fn revision(source: &mut KubernetesSource) -> Documents {
    match source.next(None).outcome {
        Ok(Next::Revision(docs)) => docs,
        other => panic!("expected a revision, got {other:?}"),
    }
}

fn unchanged(source: &mut KubernetesSource) {
    match source.next(None).outcome {
        Ok(Next::Unchanged) => {}
        Ok(Next::Revision(d)) => panic!("expected no new revision, got {}", d.revision.id),
        Err(e) => panic!("expected no new revision, got a refusal: {}", e.message),
    }
}

fn cluster(docs: &Documents) -> &Cluster {
    docs.cluster
        .as_deref()
        .expect("the revision has the cluster")
}

/// Service `name` in `ns` with one port `http` (`port`, `appProtocol` if given).
fn service(ns: &str, name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"app": name}, "ports": [
            {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}
        ]},
    })
}

/// EndpointSlice `name` of Service `service`: port `http` = `port`, and `endpoints` as
/// (address, ready); `zone` stands for what the agent does not keep.
fn slice(
    ns: &str,
    name: &str,
    service: &str,
    port: u16,
    endpoints: &[(&str, Option<bool>)],
    zone: &str,
) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, ready)| {
            let mut e = json!({"addresses": [address], "zone": zone, "nodeName": "node-1"});
            if let Some(r) = ready {
                e["conditions"] = json!({"ready": r, "serving": r, "terminating": false});
            }
            e
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// Waits for the waker; returns how long it took.
fn woken(rx: &mpsc::Receiver<()>, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("the waker did not fire within {within:?}: {what}"));
    started.elapsed()
}

#[test]
fn services_and_slices_reach_every_revision_in_compact_form() {
    let fake = FakeApiServer::start(tollgate_kinds());
    fake.put(service("shop", "web", 80)).unwrap();
    let kept = fake
        .put(slice(
            "shop",
            "web-a",
            "web",
            8080,
            &[("10.0.0.1", Some(true)), ("10.0.0.2", Some(false))],
            "z1",
        ))
        .unwrap();
    // An FQDN slice is not kept.
    fake.put(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "ext", "namespace": "shop",
                     "labels": {"kubernetes.io/service-name": "ext"}},
        "addressType": "FQDN",
        "endpoints": [{"addresses": ["db.example"]}],
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, _rx) = open(&fake, &dir);
    let docs = revision(&mut source);
    assert!(docs.files.is_empty(), "Services are no policy files");
    let c = cluster(&docs);
    assert_eq!(c.services.len(), 1);
    let s = &c.services[0];
    assert_eq!(
        (&*s.namespace, &*s.name, s.type_),
        ("shop", "web", ServiceType::ClusterIP)
    );
    assert_eq!((&*s.ports[0].name, s.ports[0].port), ("http", 80));
    assert_eq!(c.slices.len(), 1, "{:?}", c.slices);
    let sl = &c.slices[0];
    assert_eq!((&*sl.name, &*sl.service), ("web-a", "web"));
    assert_eq!(sl.ports[0].port, 8080);
    let ready: Vec<(String, bool)> = sl
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.is_ready()))
        .collect();
    assert_eq!(
        ready,
        [("10.0.0.1".into(), true), ("10.0.0.2".into(), false)]
    );
    // The revision id names the objects it was built from: the highest resourceVersion is the
    // slice's (the FQDN slice, written after it, is not kept).
    let rv = kept["metadata"]["resourceVersion"].as_str().unwrap();
    assert!(fake.resource_version() > rv.parse().unwrap());
    assert!(
        docs.revision.id.ends_with(&format!("@{rv}")),
        "{}",
        docs.revision.id
    );
    unchanged(&mut source);
}

#[test]
fn an_endpoint_change_is_a_revision_at_once_and_a_change_of_nothing_kept_is_none() {
    let fake = FakeApiServer::start(tollgate_kinds());
    fake.put(service("shop", "web", 80)).unwrap();
    fake.put(slice(
        "shop",
        "web-a",
        "web",
        8080,
        &[("10.0.0.1", None)],
        "z1",
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, rx) = open(&fake, &dir);
    let first = revision(&mut source);
    std::thread::sleep(Duration::from_millis(300));
    while rx.try_recv().is_ok() {}

    // Another zone and node: nothing the agent keeps changed.
    fake.put(slice(
        "shop",
        "web-a",
        "web",
        8080,
        &[("10.0.0.1", None)],
        "z2",
    ))
    .unwrap();
    assert!(
        rx.recv_timeout(Duration::from_millis(600)).is_err(),
        "woken for a change of nothing kept"
    );
    unchanged(&mut source);

    // The endpoint is replaced (a pod rescheduled): a new revision, woken after the debounce.
    let mut times = Vec::new();
    for (i, address) in ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        .iter()
        .enumerate()
    {
        fake.put(slice(
            "shop",
            "web-a",
            "web",
            8080,
            &[(address, None)],
            "z2",
        ))
        .unwrap();
        times.push(woken(&rx, Duration::from_secs(3), "an endpoint changed"));
        let docs = revision(&mut source);
        assert_ne!(docs.revision.id, first.revision.id);
        let e = &cluster(&docs).slices[0].endpoints;
        assert_eq!(e[0].address.to_string(), *address, "change {i}");
        std::thread::sleep(Duration::from_millis(200));
        while rx.try_recv().is_ok() {}
    }
    times.sort();
    println!(
        "slice change -> agent woken: median {:?} of {times:?}",
        times[2]
    );
    assert!(times[2] < Duration::from_millis(600), "{times:?}");

    // Not ready, then the Service deleted: each a revision.
    fake.put(slice(
        "shop",
        "web-a",
        "web",
        8080,
        &[("10.0.0.6", Some(false))],
        "z2",
    ))
    .unwrap();
    woken(&rx, Duration::from_secs(3), "the endpoint is not ready");
    let docs = revision(&mut source);
    assert!(!cluster(&docs).slices[0].endpoints[0].is_ready());
    fake.delete("v1", "Service", Some("shop"), "web").unwrap();
    woken(&rx, Duration::from_secs(3), "the Service is deleted");
    let docs = revision(&mut source);
    assert!(cluster(&docs).services.is_empty());
    assert_eq!(cluster(&docs).slices.len(), 1);
}

#[test]
fn a_cluster_that_does_not_serve_services_or_slices_still_gives_revisions() {
    let kinds: Vec<Kind> = tollgate_kinds()
        .into_iter()
        .filter(|k| k.kind != "Service" && k.kind != "EndpointSlice")
        .collect();
    let fake = FakeApiServer::start(kinds);
    fake.put(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "shop"},
        "spec": {"gatewayClassName": "tollgate", "listeners": [
            {"name": "http", "port": 8080, "protocol": "HTTP"}
        ]},
    }))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, _rx) = open(&fake, &dir);
    let docs = revision(&mut source);
    assert_eq!(docs.files.len(), 1);
    assert_eq!(cluster(&docs), &Cluster::default());
}

// The real agent (root).

const PROXY: u16 = 18371;
const L7_ADMIN: u16 = 18372;
const ONE: u16 = 18373;
const TWO: u16 = 18374;
const STATIC: u16 = 18375;

/// A Service named `name` in `default` with port 80 (name `http`).
fn service_yaml(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: {name} }}\nspec:\n  ports: [{{ name: http, port: 80, targetPort: http }}]\n"
    )
}

/// EndpointSlice `web-1` of Service `web`: 127.0.0.1 on `port`, ready or not.
fn slice_yaml(port: u16, ready: bool) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  labels: {{ kubernetes.io/service-name: web }}\naddressType: IPv4\nports: [{{ name: http, port: {port}, protocol: TCP }}]\nendpoints:\n  - addresses: [127.0.0.1]\n    conditions: {{ ready: {ready} }}\n"
    )
}

/// GETs `path` through the proxy until `want(status, backend)` holds, for up to `within`;
/// returns how long it took.
fn until(path: &str, within: Duration, want: impl Fn(u16, &str) -> bool) -> Duration {
    let url = format!("http://127.0.0.1:{PROXY}{path}");
    let started = Instant::now();
    loop {
        let r = curl(&["--http1.1", &url]);
        let backend = if r.status == 200 {
            r.backend()
        } else {
            String::new()
        };
        if want(r.status, &backend) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{path}: still {} {backend:?} after {within:?}: {r:?}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_route_to_a_service_follows_its_endpoint_slices() {
    require_root!();
    let lab = Lab::new("k8ssvc", &[]);
    let _one = Backend::start("one", ONE);
    let _two = Backend::start("two", TWO);
    let _static = Backend::start("static", STATIC);
    let fake = FakeApiServer::start(tollgate_kinds());
    let kubeconfig = lab.config.base_dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).unwrap();
    let web = route_object(
        "web",
        "  rules:\n    - matches: [{ path: { value: /web } }]\n      backendRefs: [{ name: web, port: 80 }]\n",
    );
    let other = route_object(
        "other",
        &format!(
            "  rules:\n    - matches: [{{ path: {{ value: /static }} }}]\n      backendRefs: [{}]\n",
            to("static")
        ),
    );
    fake.apply_yaml(&documents(&[
        &gateway(&[("http", PROXY, None)]),
        &backend_object("static", &[STATIC], ""),
        &web,
        &other,
        &service_yaml("web"),
        &slice_yaml(ONE, true),
    ]))
    .unwrap();
    let mut agent = start_agent(
        &lab,
        L7_ADMIN,
        &[PROXY],
        &[
            "--source",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    let url = format!("http://127.0.0.1:{PROXY}/web");
    let r = curl(&["--http1.1", &url]);
    assert_eq!((r.status, r.backend()), (200, "one".into()), "{r:?}");

    // The slice moves to another endpoint: traffic follows. Timed from the write to the
    // first request the new endpoint answers.
    let mut times = Vec::new();
    for (i, port, name) in [
        (0, TWO, "two"),
        (1, ONE, "one"),
        (2, TWO, "two"),
        (3, ONE, "one"),
    ] {
        fake.apply_yaml(&slice_yaml(port, true)).unwrap();
        times.push(until("/web", Duration::from_secs(5), |s, b| {
            s == 200 && b == name
        }));
        // Each change is a revision (logged just after the proxy switched to it).
        agent
            .wait_for_log_count(POLICY_APPLIED, 2 + i, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    times.sort();
    println!("endpoint change -> traffic on the new endpoint: {times:?}");

    // A not-ready endpoint gets no traffic: the Service has no ready endpoint, 503.
    fake.apply_yaml(&slice_yaml(ONE, false)).unwrap();
    until("/web", Duration::from_secs(5), |s, _| s == 503);
    for _ in 0..5 {
        let r = curl(&["--http1.1", &url]);
        assert_eq!(r.status, 503, "{r:?}");
    }
    fake.apply_yaml(&slice_yaml(TWO, true)).unwrap();
    until("/web", Duration::from_secs(5), |s, b| {
        s == 200 && b == "two"
    });

    // The Service is deleted: its rule answers 500, the other route serves.
    fake.delete("v1", "Service", Some("default"), "web")
        .unwrap();
    until("/web", Duration::from_secs(5), |s, _| s == 500);
    let r = curl(&["--http1.1", &format!("http://127.0.0.1:{PROXY}/static")]);
    assert_eq!((r.status, r.backend()), (200, "static".into()), "{r:?}");
    let status: Value =
        serde_json::from_str(&curl(&[&format!("http://127.0.0.1:{L7_ADMIN}/status")]).body)
            .unwrap_or(Value::Null);
    let shown = status.to_string();
    assert!(
        shown.contains("no Service default/web"),
        "the status names the missing Service: {shown}"
    );
    // And it comes back.
    fake.apply_yaml(&service_yaml("web")).unwrap();
    until("/web", Duration::from_secs(5), |s, b| {
        s == 200 && b == "two"
    });
    assert!(agent.is_running());
}

/// What an endpoint change costs among 10,000 routes, each to its own Service (10,000 Services
/// and EndpointSlices): the time from the slice's write to the first request the new endpoint
/// answers, and the agent's breakdown of the rebuild. A timing (run it alone, with a release
/// agent): `TOLLGATE_BIN=... cargo test -p tollgate-tests --test kube_services -- --ignored
/// --nocapture`.
#[test]
#[ignore = "a timing: 10,000 routes, run alone with a release build of the agent"]
fn an_endpoint_change_among_10000_routes_is_served_within_a_second() {
    require_root!();
    const ROUTES: usize = 10_000;
    let lab = Lab::new("k8ssvk", &[]);
    let _one = Backend::start("one", ONE);
    let _two = Backend::start("two", TWO);
    let fake = FakeApiServer::start(tollgate_kinds());
    let kubeconfig = lab.config.base_dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).unwrap();
    fake.apply_yaml(&gateway(&[("http", PROXY, None)])).unwrap();
    let slice_of = |i: usize, port: u16| {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("s{i}-1"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": format!("s{i}")}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        })
    };
    for i in 0..ROUTES {
        fake.put(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": format!("r{i}"), "namespace": "default"},
            "spec": {"parentRefs": [{"name": "edge"}], "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": format!("/svc-{i}")}}],
                "backendRefs": [{"name": format!("s{i}"), "port": 80}],
            }]},
        }))
        .unwrap();
        fake.put(service("default", &format!("s{i}"), 80)).unwrap();
        fake.put(slice_of(i, ONE)).unwrap();
    }
    let mut agent = start_agent(
        &lab,
        L7_ADMIN,
        &[PROXY],
        &[
            "--source",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    let path = format!("/svc-{}", ROUTES / 2);
    until(&path, Duration::from_secs(30), |s, b| {
        s == 200 && b == "one"
    });
    let mut times = Vec::new();
    for (k, (port, name)) in [
        (TWO, "two"),
        (ONE, "one"),
        (TWO, "two"),
        (ONE, "one"),
        (TWO, "two"),
    ]
    .into_iter()
    .enumerate()
    {
        let applies = agent.log_count(POLICY_APPLIED);
        fake.put(slice_of(ROUTES / 2, port)).unwrap();
        times.push(until(&path, Duration::from_secs(30), |s, b| {
            s == 200 && b == name
        }));
        agent
            .wait_for_log_count(POLICY_APPLIED, applies + 1, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
        let log = agent.log();
        let line = log
            .lines()
            .rfind(|l| l.contains(POLICY_APPLIED))
            .unwrap_or_default();
        println!("change {k}: {:?}; {line}", times[k]);
        std::thread::sleep(Duration::from_millis(300));
    }
    times.sort();
    println!(
        "{ROUTES} routes, {ROUTES} Services and EndpointSlices: endpoint change -> traffic on the new endpoint, median {:?} of {times:?}",
        times[times.len() / 2]
    );
    assert!(times[times.len() / 2] < Duration::from_secs(1), "{times:?}");
    assert!(agent.is_running());
}
