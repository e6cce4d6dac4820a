//! The Kubernetes policy source (tollgate-kubernetes) against the fake API server: what the
//! agent sees through `PolicySource` (set_waker, next, rescan). No root needed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_kubernetes::{KubernetesSource, Settings};
use tollgate_model::source::{Next, PolicySource};
use tollgate_model::Documents;
use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer, Fault, Kind};

const L4: &str = "tollgate.dev/v1alpha1";
const GW: &str = "gateway.networking.k8s.io/v1";

/// The kinds the source watches, and more (the fake serves every kind of the product).
fn all_kinds() -> Vec<Kind> {
    tollgate_kinds()
}

fn settings(fake: &FakeApiServer, dir: &tempfile::TempDir) -> Settings {
    let path: PathBuf = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path).expect("write the kubeconfig");
    Settings::resolve(&[path]).expect("read the kubeconfig")
}

/// A source with a waker that counts into a channel.
fn open(fake: &FakeApiServer, dir: &tempfile::TempDir) -> (KubernetesSource, mpsc::Receiver<()>) {
    let mut source = KubernetesSource::open(&settings(fake, dir)).expect("open the source");
    let (tx, rx) = mpsc::channel();
    source.set_waker(std::sync::Arc::new(move || {
        let _ = tx.send(());
    }));
    (source, rx)
}

fn l4(name: &str, cidr: &str) -> Value {
    json!({
        "apiVersion": L4, "kind": "L4Policy",
        "metadata": {"name": name},
        "spec": {"defaultAction": "allow", "rules": [
            {"name": "deny-src", "action": "deny", "from": [cidr]}
        ]},
    })
}

fn route(ns: &str, name: &str, host: &str) -> Value {
    json!({
        "apiVersion": GW, "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hostnames": [host], "parentRefs": [{"name": "gw"}]},
    })
}

fn gateway(ns: &str) -> Value {
    json!({
        "apiVersion": GW, "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": ns},
        "spec": {"gatewayClassName": "tollgate", "listeners": [
            {"name": "http", "port": 8080, "protocol": "HTTP"}
        ]},
    })
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
        Ok(Next::Revision(d)) => panic!(
            "expected no new revision, got {} with {:?}",
            d.revision.id,
            paths(&d)
        ),
        Err(e) => panic!("expected no new revision, got a refusal: {}", e.message),
    }
}

fn paths(docs: &Documents) -> Vec<String> {
    docs.files.iter().map(|f| f.path.clone()).collect()
}

/// Waits for the waker; returns how long it took.
fn woken(rx: &mpsc::Receiver<()>, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("the waker did not fire within {within:?}: {what}"));
    started.elapsed()
}

/// Drains wake-ups already sent.
fn drain(rx: &mpsc::Receiver<()>) {
    while rx.try_recv().is_ok() {}
}

/// (path, resourceVersion) of every object of the watched kinds the fake holds, as the source
/// names them.
fn fake_files(fake: &FakeApiServer) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (kind, api, namespaced) in tollgate_model::kinds() {
        for o in fake.list(api, kind) {
            let m = &o["metadata"];
            let name = m["name"].as_str().unwrap();
            let path = match m["namespace"].as_str().filter(|_| namespaced) {
                Some(ns) => format!("kubernetes:/{ns}/{kind}/{name}"),
                None => format!("kubernetes:/{kind}/{name}"),
            };
            out.insert((path, m["resourceVersion"].as_str().unwrap().to_owned()));
        }
    }
    out
}

fn doc_files(docs: &Documents) -> BTreeSet<(String, String)> {
    docs.files
        .iter()
        .map(|f| {
            let v: Value = serde_json::from_str(&f.content).expect("JSON text");
            (
                f.path.clone(),
                v["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        })
        .collect()
}

/// The resources watched whatever the policy holds (Namespace is watched on demand).
fn always_watched() -> Vec<String> {
    let kinds = tollgate_kubernetes::watched_kinds();
    let on_demand: Vec<String> = kinds
        .iter()
        .filter(|k| k.on_demand)
        .map(|k| k.resource_name())
        .collect();
    assert_eq!(on_demand, ["namespaces"]);
    kinds
        .iter()
        .filter(|k| !k.on_demand)
        .map(|k| k.resource_name())
        .collect()
}

/// Waits until every kind's watch is open (a compaction before that would not reach it).
fn wait_for_watches(fake: &FakeApiServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    // One per policy kind watched always, and Services and EndpointSlices.
    while fake.open_watch_count() < always_watched().len() + 2 {
        assert!(Instant::now() < deadline, "{:?}", fake.open_watches());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nothing_before_every_kind_is_listed_then_one_revision_naming_every_object() {
    let fake = FakeApiServer::start(all_kinds());
    fake.put(l4("edge", "192.0.2.0/24")).unwrap();
    fake.put(gateway("team-a")).unwrap();
    fake.put(route("team-a", "r1", "a.example")).unwrap();
    fake.put(route("team-b", "r2", "b.example")).unwrap();
    // HTTPRoutes list slowly: the other kinds are synced long before.
    fake.inject(
        Fault::delay(Duration::from_millis(1500))
            .path_contains("/httproutes")
            .watches(false)
            .times(1),
    );
    let dir = tempfile::tempdir().unwrap();
    let (source, rx) = open(&fake, &dir);
    let mut source = source.with_initial_wait(Duration::ZERO);
    std::thread::sleep(Duration::from_millis(500));
    unchanged(&mut source);
    woken(&rx, Duration::from_secs(5), "every kind listed");
    let docs = revision(&mut source);
    assert_eq!(
        paths(&docs),
        [
            "kubernetes:/L4Policy/edge",
            "kubernetes:/team-a/Gateway/gw",
            "kubernetes:/team-a/HTTPRoute/r1",
            "kubernetes:/team-b/HTTPRoute/r2",
        ]
    );
    assert_eq!(doc_files(&docs), fake_files(&fake));
    let rv = fake.resource_version();
    assert!(
        docs.revision.id.starts_with("k8s:") && docs.revision.id.ends_with(&format!("@{rv}")),
        "{}",
        docs.revision.id
    );
    assert_eq!(docs.revision.source, format!("kubernetes ({})", fake.url()));
    assert_eq!(source.describe(), docs.revision.source);
    // The texts are what the model reads, namespaces included.
    let objects = tollgate_model::parse(&docs).expect("the objects parse");
    let names: Vec<&str> = objects.iter().map(|o| o.object.as_str()).collect();
    assert_eq!(
        names,
        [
            "L4Policy/edge",
            "Gateway/team-a/gw",
            "HTTPRoute/team-a/r1",
            "HTTPRoute/team-b/r2"
        ]
    );
    unchanged(&mut source);
    // A rescan gives the same revision again.
    source.rescan();
    assert_eq!(revision(&mut source).revision.id, docs.revision.id);
    unchanged(&mut source);
}

#[test]
fn the_first_read_waits_for_the_initial_lists() {
    let fake = FakeApiServer::start(all_kinds());
    fake.put(l4("edge", "192.0.2.0/24")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, _rx) = open(&fake, &dir);
    assert_eq!(paths(&revision(&mut source)), ["kubernetes:/L4Policy/edge"]);
}

#[test]
fn a_status_only_update_is_no_new_revision_and_a_spec_update_or_delete_is_one_at_once() {
    let fake = FakeApiServer::start(all_kinds());
    fake.put(l4("edge", "192.0.2.0/24")).unwrap();
    fake.put(route("team-a", "r1", "a.example")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, rx) = open(&fake, &dir);
    let first = revision(&mut source);
    woken(&rx, Duration::from_secs(2), "the initial lists");
    // The lists are a burst of changes: its first wakes the agent at once, the rest once more
    // when they are over.
    std::thread::sleep(Duration::from_millis(300));
    drain(&rx);

    // Status only: the resourceVersion moves, generation does not.
    let mut with_status = fake.get(L4, "L4Policy", None, "edge").unwrap();
    with_status["status"] = json!({"observedGeneration": 1, "nodes": 3});
    let stored = fake.put(with_status).unwrap();
    assert_eq!(stored["metadata"]["generation"], 1);
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "a status-only change woke the agent"
    );
    unchanged(&mut source);

    // A spec change.
    fake.put(l4("edge", "198.51.100.0/24")).unwrap();
    let took = woken(&rx, Duration::from_secs(2), "a spec change");
    let second = revision(&mut source);
    assert_ne!(second.revision.id, first.revision.id);
    let text = &second.files[0].content;
    assert!(text.contains("198.51.100.0/24"), "{text}");
    assert!(!text.contains("nodes"), "status is not read: {text}");
    assert_eq!(doc_files(&second), fake_files(&fake));
    eprintln!("spec change -> waker: {took:?}");

    // A delete.
    fake.delete(GW, "HTTPRoute", Some("team-a"), "r1").unwrap();
    woken(&rx, Duration::from_secs(2), "a delete");
    let third = revision(&mut source);
    assert_eq!(paths(&third), ["kubernetes:/L4Policy/edge"]);
    unchanged(&mut source);
}

#[test]
fn a_burst_of_changes_wakes_the_agent_once_and_within_a_second_of_its_start() {
    let fake = FakeApiServer::start(all_kinds());
    let dir = tempfile::tempdir().unwrap();
    let (mut source, rx) = open(&fake, &dir);
    revision(&mut source);
    drain(&rx);
    // A change every 30 ms for 1.5 s: the quiet period never comes, the 1 s bound does.
    let started = Instant::now();
    let mut wakes = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        fake.put(route("team-a", &format!("r{i}"), "a.example"))
            .unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(30));
        while rx.try_recv().is_ok() {
            wakes.push(started.elapsed());
        }
    }
    assert!(
        !wakes.is_empty() && wakes[0] < Duration::from_millis(1400),
        "the first wake-up of a long burst came at {wakes:?}"
    );
    // Debounced: far fewer wake-ups than changes.
    assert!(wakes.len() <= 3, "{} wake-ups for {i} changes", wakes.len());
    woken(&rx, Duration::from_secs(2), "the end of the burst");
    let docs = revision(&mut source);
    assert_eq!(docs.files.len(), i);
}

#[test]
fn after_compaction_the_watchers_relist_and_nothing_is_lost() {
    let fake = FakeApiServer::start(all_kinds());
    fake.put(l4("edge", "192.0.2.0/24")).unwrap();
    fake.put(route("team-a", "r1", "a.example")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, rx) = open(&fake, &dir);
    let first = revision(&mut source);
    let lists = |fake: &FakeApiServer| {
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET" && !r.watch && r.path.ends_with("/httproutes"))
            .count()
    };
    wait_for_watches(&fake);
    let before = lists(&fake);

    // A relist alone is no new revision.
    fake.compact();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lists(&fake) == before || fake.open_watch_count() < 7 {
        assert!(
            Instant::now() < deadline,
            "no relist after the 410: {:#?}",
            fake.requests()
                .iter()
                .map(|r| format!("{} {} {} {}", r.method, r.path, r.query, r.status))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    unchanged(&mut source);

    // Changes made while the watches are gone (between the 410 and the relist) are seen.
    wait_for_watches(&fake);
    drain(&rx);
    fake.compact();
    fake.put(route("team-a", "r2", "b.example")).unwrap();
    fake.delete(GW, "HTTPRoute", Some("team-a"), "r1").unwrap();
    fake.put(l4("edge", "203.0.113.0/24")).unwrap();
    woken(
        &rx,
        Duration::from_secs(10),
        "the relist after the second 410",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let docs = loop {
        if let Ok(Next::Revision(d)) = source.next(None).outcome {
            if doc_files(&d) == fake_files(&fake) {
                break d;
            }
        }
        assert!(Instant::now() < deadline, "the source never caught up");
        std::thread::sleep(Duration::from_millis(100));
        source.rescan();
    };
    assert_ne!(docs.revision.id, first.revision.id);
    assert_eq!(
        paths(&docs),
        [
            "kubernetes:/L4Policy/edge",
            "kubernetes:/team-a/HTTPRoute/r2"
        ]
    );
}

#[test]
fn a_kind_whose_crd_is_missing_does_not_block_the_others() {
    // No Backend, AuthPolicy or BackendTrafficPolicy: their lists answer 404.
    let kinds: Vec<Kind> = all_kinds()
        .into_iter()
        .filter(|k| {
            !matches!(
                k.kind.as_str(),
                "Backend" | "AuthPolicy" | "BackendTrafficPolicy"
            )
        })
        .collect();
    let fake = FakeApiServer::start(kinds);
    fake.put(l4("edge", "192.0.2.0/24")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, rx) = open(&fake, &dir);
    let docs = revision(&mut source);
    assert_eq!(paths(&docs), ["kubernetes:/L4Policy/edge"]);
    // The other kinds keep working. (The initial lists are a burst: its last wake-up may come
    // after the first read.)
    std::thread::sleep(Duration::from_millis(300));
    drain(&rx);
    fake.put(route("team-a", "r1", "a.example")).unwrap();
    woken(&rx, Duration::from_secs(2), "a route next to missing kinds");
    assert_eq!(revision(&mut source).files.len(), 2);
    // The missing kinds are tried again (with backoff), not given up.
    let missing_lists = || {
        fake.requests()
            .iter()
            .filter(|r| r.path.ends_with("/backends") && !r.watch)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while missing_lists() < 2 {
        assert!(
            Instant::now() < deadline,
            "the missing kind was never listed again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Retries of a kind known to be missing wake nobody.
    drain(&rx);
    assert!(rx.recv_timeout(Duration::from_millis(1200)).is_err());
    unchanged(&mut source);
}

#[test]
fn an_object_with_an_unknown_field_is_read_and_the_model_names_it() {
    let fake = FakeApiServer::start(all_kinds());
    fake.put(l4("edge", "192.0.2.0/24")).unwrap();
    let mut newer = route("team-a", "newer", "a.example");
    newer["spec"]["futureField"] = json!({"x": 1});
    fake.put(newer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut source, _rx) = open(&fake, &dir);
    let docs = revision(&mut source);
    assert_eq!(docs.files.len(), 2, "{:?}", paths(&docs));
    let errors = tollgate_model::parse(&docs).unwrap_err().to_string();
    assert!(
        errors.contains("kubernetes:/team-a/HTTPRoute/newer") && errors.contains("futureField"),
        "{errors}"
    );
}

#[test]
fn one_watch_connection_per_kind() {
    let fake = FakeApiServer::start(all_kinds());
    let dir = tempfile::tempdir().unwrap();
    let (mut source, _rx) = open(&fake, &dir);
    revision(&mut source);
    wait_for_watches(&fake);
    std::thread::sleep(Duration::from_millis(300));
    let watches = fake.open_watches();
    // The policy kinds but Namespace (no Gateway selects namespaces by label), and Services
    // and EndpointSlices (for backendRefs to Services).
    let expected: BTreeSet<String> = always_watched()
        .into_iter()
        .chain(["services".into(), "endpointslices.discovery.k8s.io".into()])
        .collect();
    assert_eq!(watches.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(watches.values().all(|n| *n == 1), "{watches:?}");
    assert_eq!(fake.peak_open_watches(), expected.len());
    // None on the per-node status objects.
    assert!(!watches.contains_key("tollgatenodes.tollgate.dev"));
    drop(source);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.open_watch_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "watches left open after the source was dropped: {:?}",
            fake.open_watches()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unreachable_api_server_is_reported_as_unavailable() {
    // A port nothing listens on: the fake is started and stopped to find one.
    let dir = tempfile::tempdir().unwrap();
    let settings = {
        let fake = FakeApiServer::start(all_kinds());
        settings(&fake, &dir)
    };
    let mut source = KubernetesSource::open(&settings).unwrap();
    let started = Instant::now();
    let refusal = source.next(None).outcome.unwrap_err();
    assert!(refusal.unavailable);
    assert_eq!(refusal.kind.as_str(), "source");
    assert!(
        refusal.message.contains(&settings.server()) && refusal.message.contains("cannot list"),
        "{}",
        refusal.message
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited {:?} for a refused connection",
        started.elapsed()
    );
}

/// `Accepted` of the route `ns/name` in the compiled revision: its first parent's condition.
fn accepted(docs: &Documents, ns: &str, name: &str) -> (String, String) {
    let snapshot = tollgate_compile::snapshot::compile_documents(docs, None)
        .unwrap_or_else(|e| panic!("the revision compiles: {e}"));
    let route = snapshot
        .acceptance
        .routes
        .iter()
        .find(|r| r.namespace == ns && r.name == name)
        .unwrap_or_else(|| panic!("route {ns}/{name} in {:?}", snapshot.acceptance.routes));
    let c = route.parents[0]
        .conditions
        .iter()
        .find(|c| c.type_ == "Accepted")
        .expect("an Accepted condition");
    (c.status.to_owned(), c.reason.to_owned())
}

/// The next revision the source hands on, within 10 s (waking on the waker).
fn next_revision(source: &mut KubernetesSource, rx: &mpsc::Receiver<()>, what: &str) -> Documents {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match source.next(None).outcome {
            Ok(Next::Revision(docs)) => return docs,
            Ok(Next::Unchanged) => {}
            Err(e) => panic!("{what}: refused: {}", e.message),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: no revision within 10 s");
        let _ = rx.recv_timeout(left.min(Duration::from_millis(200)));
    }
}

/// Namespaces are watched only while a Gateway listener admits routes by namespace labels
/// (the agent's budget of 15 watch connections), and a revision that holds such a listener
/// always carries the labels: the route the selector excludes is never accepted, the one it
/// admits always is, from the first revision with the selector on.
#[test]
fn namespaces_are_watched_only_while_a_listener_selects_them_by_label() {
    let fake = FakeApiServer::start(all_kinds());
    let namespace = |name: &str, labels: Value| {
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": name, "labels": labels}})
    };
    fake.put(namespace("team-b", json!({"shared": "yes"})))
        .unwrap();
    fake.put(namespace("team-c", json!({}))).unwrap();
    let gateway_from = |allowed: Value| {
        let mut gw = gateway("edge");
        gw["spec"]["listeners"][0]["allowedRoutes"] = json!({ "namespaces": allowed });
        gw
    };
    fake.put(gateway_from(json!({"from": "All"}))).unwrap();
    for (ns, host) in [("team-b", "b.example"), ("team-c", "c.example")] {
        let mut r = route(ns, "r", host);
        r["spec"]["parentRefs"] = json!([{"name": "gw", "namespace": "edge"}]);
        r["spec"]["rules"] = json!([{"filters": [
            {"type": "RequestRedirect", "requestRedirect": {"statusCode": 302}}
        ]}]);
        fake.put(r).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut source, rx) = open(&fake, &dir);
    let docs = revision(&mut source);
    assert!(
        !paths(&docs).iter().any(|p| p.contains("/Namespace/")),
        "{:?}",
        paths(&docs)
    );
    assert_eq!(
        accepted(&docs, "team-c", "r"),
        ("True".to_owned(), "Accepted".to_owned())
    );
    wait_for_watches(&fake);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !fake.open_watches().contains_key("namespaces"),
        "{:?}",
        fake.open_watches()
    );
    assert_eq!(fake.open_watch_count(), always_watched().len() + 2);

    // A listener selects by label: the first revision with it carries the labels.
    drain(&rx);
    fake.put(gateway_from(
        json!({"from": "Selector", "selector": {"matchLabels": {"shared": "yes"}}}),
    ))
    .unwrap();
    let docs = next_revision(&mut source, &rx, "the selector listener");
    let files = paths(&docs);
    for want in [
        "kubernetes:/Namespace/team-b",
        "kubernetes:/Namespace/team-c",
    ] {
        assert!(files.iter().any(|p| p == want), "{want} in {files:?}");
    }
    assert!(docs.files.iter().any(|f| f.content.contains("Selector")));
    assert_eq!(accepted(&docs, "team-b", "r").0, "True");
    assert_eq!(
        accepted(&docs, "team-c", "r"),
        ("False".to_owned(), "NotAllowedByListeners".to_owned())
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.open_watches().get("namespaces") != Some(&1) {
        assert!(Instant::now() < deadline, "{:?}", fake.open_watches());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fake.open_watch_count(), always_watched().len() + 3);

    // Labelling team-c is a new revision that admits its route.
    fake.put(namespace("team-c", json!({"shared": "yes"})))
        .unwrap();
    let docs = next_revision(&mut source, &rx, "team-c labelled");
    assert_eq!(accepted(&docs, "team-c", "r").0, "True");

    // Back to `from: All`: the watch is closed, and the revision carries no Namespace.
    fake.put(gateway_from(json!({"from": "All"}))).unwrap();
    let docs = next_revision(&mut source, &rx, "the selector removed");
    assert!(
        !paths(&docs).iter().any(|p| p.contains("/Namespace/")),
        "{:?}",
        paths(&docs)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.open_watches().contains_key("namespaces") {
        assert!(Instant::now() < deadline, "{:?}", fake.open_watches());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fake.open_watch_count(), always_watched().len() + 2);

    // And again on: a second run of the watch reads the labels as they are now.
    fake.put(namespace("team-c", json!({}))).unwrap();
    fake.put(gateway_from(
        json!({"from": "Selector", "selector": {"matchLabels": {"shared": "yes"}}}),
    ))
    .unwrap();
    let docs = next_revision(&mut source, &rx, "the selector again");
    assert_eq!(
        accepted(&docs, "team-c", "r"),
        ("False".to_owned(), "NotAllowedByListeners".to_owned())
    );
    assert_eq!(accepted(&docs, "team-b", "r").0, "True");
}
