//! The fake Kubernetes API server (tollgate_tests::kube_fake) against the REAL kube client,
//! watcher and reflector: what the agent's Kubernetes mode relies on. No root needed.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, store::Writer, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tollgate_tests::kube_fake::{FakeApiServer, Fault, Kind, RequestRecord};

const ROUTES_PATH: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/ns1/httproutes";

fn kinds() -> Vec<Kind> {
    vec![
        Kind::cluster("tollgate.dev", "v1alpha1", "TollgateNode", "tollgatenodes"),
        Kind::namespaced("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
        Kind::lease(),
        Kind::event(),
    ]
}

fn routes() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

fn nodes() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tollgate.dev", "v1alpha1", "TollgateNode"),
        "tollgatenodes",
    )
}

/// A client built the way the agent builds one: from a kubeconfig file.
async fn client(fake: &FakeApiServer) -> Client {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let kubeconfig =
        Kubeconfig::read_from(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
    Client::try_from(config).unwrap_or_else(|e| panic!("client for {}: {e}", fake.url()))
}

fn route(name: &str, ns: &str, host: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hostnames": [host]},
    })
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A reflector over HTTPRoutes in ns1, as the agent runs one per kind.
fn reflect(client: Client, config: watcher::Config) -> (Store<DynamicObject>, JoinHandle<()>) {
    let writer = Writer::new(routes());
    let reader = writer.as_reader();
    let api: Api<DynamicObject> = Api::namespaced_with(client, "ns1", &routes());
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let task = tokio::spawn(async move {
        stream.for_each(|_| async {}).await;
    });
    (reader, task)
}

/// name -> resourceVersion, from the reflector's store.
fn store_state(store: &Store<DynamicObject>) -> BTreeMap<String, String> {
    store
        .state()
        .iter()
        .map(|o| {
            (
                o.metadata.name.clone().unwrap_or_default(),
                o.metadata.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// name -> resourceVersion, from the fake itself.
fn fake_state(fake: &FakeApiServer) -> BTreeMap<String, String> {
    fake.list("gateway.networking.k8s.io/v1", "HTTPRoute")
        .iter()
        .filter(|o| o["metadata"]["namespace"] == "ns1")
        .map(|o| {
            (
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn route_lists(log: &[RequestRecord]) -> usize {
    log.iter()
        .filter(|r| r.method == "GET" && r.path == ROUTES_PATH && !r.watch)
        .count()
}

fn route_watches(log: &[RequestRecord]) -> Vec<RequestRecord> {
    log.iter()
        .filter(|r| r.path == ROUTES_PATH && r.watch)
        .cloned()
        .collect()
}

fn api_status(err: kube::Error) -> (u16, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason.clone()),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn kube_lists_every_page_through_continue_tokens() {
    let fake = FakeApiServer::start(kinds());
    for i in 0..7 {
        fake.put(route(&format!("r{i}"), "ns1", "a.example"))
            .unwrap();
    }
    fake.put(route("other", "ns2", "b.example")).unwrap();
    let client = client(&fake).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "ns1", &routes());
    let mut params = ListParams::default().limit(3);
    let (mut names, mut pages, mut versions) = (Vec::new(), 0, Vec::new());
    loop {
        let page = within("a page", api.list(&params))
            .await
            .expect("list a page");
        pages += 1;
        versions.push(page.metadata.resource_version.clone());
        names.extend(page.items.iter().map(|o| o.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["r0", "r1", "r2", "r3", "r4", "r5", "r6"]);
    assert!(
        versions.windows(2).all(|w| w[0] == w[1]),
        "one snapshot: {versions:?}"
    );
    let all: Api<DynamicObject> = Api::all_with(client, &routes());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        8
    );
    let limits: Vec<Option<String>> = fake
        .requests()
        .iter()
        .filter(|r| r.path == ROUTES_PATH)
        .map(|r| r.param("limit").map(str::to_string))
        .collect();
    assert_eq!(limits, vec![Some("3".to_string()); 3]);
}

#[tokio::test]
async fn reflector_follows_adds_updates_and_deletes() {
    let fake = FakeApiServer::start(kinds());
    for i in 0..3 {
        fake.put(route(&format!("r{i}"), "ns1", "a.example"))
            .unwrap();
    }
    fake.put(route("elsewhere", "ns2", "a.example")).unwrap();
    let client = client(&fake).await;
    let (store, task) = reflect(client, watcher::Config::default().page_size(2));
    eventually("the initial list is in the store", || {
        store_state(&store) == fake_state(&fake)
    })
    .await;
    assert_eq!(store_state(&store).len(), 3);

    fake.put(route("r3", "ns1", "a.example")).unwrap();
    fake.put(route("r0", "ns1", "changed.example")).unwrap();
    fake.delete(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        Some("ns1"),
        "r1",
    )
    .unwrap();
    eventually("the changes are in the store", || {
        store_state(&store) == fake_state(&fake)
    })
    .await;
    let r0 = store
        .state()
        .into_iter()
        .find(|o| o.metadata.name.as_deref() == Some("r0"))
        .unwrap();
    assert_eq!(r0.data["spec"]["hostnames"][0], "changed.example");
    assert_eq!(r0.metadata.generation, Some(2));

    let log = fake.requests();
    assert_eq!(route_lists(&log), 2, "3 objects in pages of 2");
    let watch = route_watches(&log).into_iter().next().expect("a watch");
    assert_eq!(watch.param("allowWatchBookmarks"), Some("true"));
    let listed_at = log
        .iter()
        .find(|r| r.path == ROUTES_PATH && !r.watch)
        .unwrap();
    assert!(listed_at.param("limit") == Some("2"));
    assert!(watch
        .param("resourceVersion")
        .is_some_and(|rv| rv.parse::<u64>().is_ok()));
    task.abort();
}

#[tokio::test]
async fn compaction_under_an_open_watch_forces_a_relist_and_the_store_stays_right() {
    let fake = FakeApiServer::start(kinds());
    fake.put(route("a", "ns1", "a.example")).unwrap();
    let client = client(&fake).await;
    let (store, task) = reflect(client, watcher::Config::default());
    eventually("the watch is open", || fake.open_watch_count() == 1).await;
    assert_eq!(route_lists(&fake.requests()), 1);
    fake.put(route("b", "ns1", "b.example")).unwrap();
    eventually("b is in the store", || {
        store_state(&store) == fake_state(&fake)
    })
    .await;

    fake.compact();
    eventually("the watcher lists again", || {
        route_lists(&fake.requests()) == 2
    })
    .await;
    eventually("it watches again", || fake.open_watch_count() == 1).await;
    fake.put(route("c", "ns1", "c.example")).unwrap();
    eventually("the store matches the server", || {
        store_state(&store) == fake_state(&fake)
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn changes_missed_during_an_outage_arrive_through_the_relist_after_compaction() {
    let fake = FakeApiServer::start(kinds());
    for name in ["keep", "change", "remove"] {
        fake.put(route(name, "ns1", "a.example")).unwrap();
    }
    let client = client(&fake).await;
    let (store, task) = reflect(client, watcher::Config::default());
    eventually("the store is filled", || store_state(&store).len() == 3).await;
    eventually("the watch is open", || fake.open_watch_count() == 1).await;

    // The watch breaks and cannot come back; meanwhile objects change, one is deleted (its
    // DELETED event will never be replayed), and the history is compacted.
    fake.inject(Fault::status(503).watches(true));
    fake.close_watches();
    eventually("the watcher has tried to watch again", || {
        route_watches(&fake.requests())
            .iter()
            .any(|r| r.status == 503)
    })
    .await;
    fake.put(route("change", "ns1", "changed.example")).unwrap();
    fake.delete(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        Some("ns1"),
        "remove",
    )
    .unwrap();
    fake.put(route("new", "ns1", "new.example")).unwrap();
    fake.compact();
    let lists_before = route_lists(&fake.requests());
    fake.clear_faults();

    eventually("the store matches the server", || {
        store_state(&store) == fake_state(&fake)
    })
    .await;
    let log = fake.requests();
    assert_eq!(route_lists(&log), lists_before + 1, "exactly one relist");
    // The resumed watch got the in-stream 410 (HTTP 200) that sent the watcher to relist.
    assert!(route_watches(&log)
        .iter()
        .any(|r| r.status == 200 && r.param("resourceVersion").is_some_and(|rv| rv != "0")));
    assert!(!store_state(&store).contains_key("remove"));
    task.abort();
}

#[tokio::test]
async fn a_clean_close_resumes_the_watch_from_the_last_version_without_relisting() {
    let fake = FakeApiServer::start(kinds());
    fake.put(route("a", "ns1", "a.example")).unwrap();
    let client = client(&fake).await;
    let (store, task) = reflect(client, watcher::Config::default());
    eventually("the watch is open", || fake.open_watch_count() == 1).await;
    fake.put(route("b", "ns1", "b.example")).unwrap();
    eventually("b is in the store", || {
        store_state(&store) == fake_state(&fake)
    })
    .await;
    let last = fake.resource_version().to_string();

    fake.close_watches();
    eventually("a second watch", || {
        route_watches(&fake.requests()).len() == 2
    })
    .await;
    let resumed = route_watches(&fake.requests())[1].clone();
    assert_eq!(resumed.param("resourceVersion"), Some(last.as_str()));
    assert_eq!(route_lists(&fake.requests()), 1, "no relist");
    fake.put(route("c", "ns1", "c.example")).unwrap();
    eventually("c is in the store", || {
        store_state(&store) == fake_state(&fake)
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn a_streaming_list_watcher_fills_its_store_from_initial_events() {
    let fake = FakeApiServer::start(kinds());
    for name in ["a", "b"] {
        fake.put(route(name, "ns1", "a.example")).unwrap();
    }
    let client = client(&fake).await;
    let (store, task) = reflect(client, watcher::Config::default().streaming_lists());
    eventually("the store is filled", || {
        store_state(&store) == fake_state(&fake)
    })
    .await;
    fake.put(route("c", "ns1", "c.example")).unwrap();
    eventually("c is in the store", || {
        store_state(&store) == fake_state(&fake)
    })
    .await;
    let log = fake.requests();
    assert_eq!(route_lists(&log), 0, "no LIST at all");
    let first = &route_watches(&log)[0];
    assert_eq!(first.param("sendInitialEvents"), Some("true"));
    assert_eq!(first.param("resourceVersionMatch"), Some("NotOlderThan"));
    task.abort();
}

#[tokio::test]
async fn status_apply_with_field_manager_and_force_is_exact_and_a_repeat_writes_nothing() {
    let fake = FakeApiServer::start(kinds());
    let client = client(&fake).await;
    let api: Api<DynamicObject> = Api::all_with(client, &nodes());
    let params = PatchParams::apply("tollgate-agent").force();
    let object = json!({
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "TollgateNode",
        "metadata": {"name": "node-a"},
        "spec": {"nodeName": "node-a"},
    });
    let created = api
        .patch("node-a", &params, &Patch::Apply(&object))
        .await
        .expect("apply the object");
    assert_eq!(created.metadata.generation, Some(1));
    let status = json!({
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "TollgateNode",
        "metadata": {"name": "node-a"},
        "status": {"appliedRevision": "abc123", "conditions": [{"type": "Ready", "status": "True"}]},
    });
    fake.clear_requests();
    let first = api
        .patch_status("node-a", &params, &Patch::Apply(&status))
        .await
        .expect("apply status");
    assert_eq!(first.data["status"]["appliedRevision"], "abc123");
    assert_eq!(
        first.data["spec"]["nodeName"], "node-a",
        "status apply keeps the rest"
    );
    assert_eq!(
        first.metadata.generation,
        Some(1),
        "status does not bump generation"
    );
    let log = fake.requests();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(r.method, "PATCH");
    assert_eq!(
        r.path,
        "/apis/tollgate.dev/v1alpha1/tollgatenodes/node-a/status"
    );
    assert_eq!(r.field_manager.as_deref(), Some("tollgate-agent"));
    assert_eq!(r.force, Some(true));
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let managers: Vec<(String, Option<String>)> = first
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.subresource))
        .collect();
    assert!(
        managers.contains(&("tollgate-agent".to_string(), Some("status".to_string()))),
        "{managers:?}"
    );

    let rv = fake.resource_version();
    let second = api
        .patch_status("node-a", &params, &Patch::Apply(&status))
        .await
        .expect("apply again");
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    assert_eq!(
        fake.resource_version(),
        rv,
        "an identical apply writes nothing"
    );

    // Object apply never touches status.
    let with_status = json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "TollgateNode", "metadata": {"name": "node-a"}, "spec": {"nodeName": "node-a"}, "status": {"appliedRevision": "zzz"}});
    let after = api
        .patch("node-a", &params, &Patch::Apply(&with_status))
        .await
        .unwrap();
    assert_eq!(after.data["status"]["appliedRevision"], "abc123");
}

#[tokio::test]
async fn apply_over_another_managers_field_conflicts_unless_forced() {
    let fake = FakeApiServer::start(kinds());
    let client = client(&fake).await;
    let api: Api<DynamicObject> = Api::all_with(client, &nodes());
    let object = |name: &str| json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "TollgateNode", "metadata": {"name": "n"}, "spec": {"nodeName": name}});
    api.patch(
        "n",
        &PatchParams::apply("tollgate-agent"),
        &Patch::Apply(&object("a")),
    )
    .await
    .unwrap();
    let err = api
        .patch(
            "n",
            &PatchParams::apply("kubectl"),
            &Patch::Apply(&object("b")),
        )
        .await
        .expect_err("a conflict");
    assert_eq!(api_status(err), (409, "Conflict".to_string()));
    let forced = api
        .patch(
            "n",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&object("b")),
        )
        .await
        .unwrap();
    assert_eq!(forced.data["spec"]["nodeName"], "b");
    assert_eq!(forced.metadata.generation, Some(2));
}

#[tokio::test]
async fn a_lease_update_with_a_stale_resource_version_gets_409() {
    let fake = FakeApiServer::start(kinds());
    let client = client(&fake).await;
    let leases: Api<Lease> = Api::namespaced(client, "tollgate-system");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("tollgate-controller".into()),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            holder_identity: Some("pod-a".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create the lease");
    let err = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect_err("exists");
    assert_eq!(api_status(err), (409, "AlreadyExists".to_string()));

    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    let renewed = leases
        .replace("tollgate-controller", &PostParams::default(), &renewed)
        .await
        .expect("update");
    assert_ne!(
        renewed.metadata.resource_version,
        created.metadata.resource_version
    );

    let mut stale = created.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("pod-c".into());
    let err = leases
        .replace("tollgate-controller", &PostParams::default(), &stale)
        .await
        .expect_err("stale");
    assert_eq!(api_status(err), (409, "Conflict".to_string()));
    let now = leases.get("tollgate-controller").await.unwrap();
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("pod-b"));
}

#[tokio::test]
async fn events_are_created_through_the_events_v1_api() {
    let fake = FakeApiServer::start(kinds());
    let client = client(&fake).await;
    let events: Api<KubeEvent> = Api::namespaced(client, "ns1");
    let event = KubeEvent {
        metadata: ObjectMeta {
            generate_name: Some("tollgate-".into()),
            ..Default::default()
        },
        event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            "2025-01-01T00:00:00.000000Z".parse().unwrap(),
        )),
        reason: Some("RevisionRefused".into()),
        action: Some("Apply".into()),
        note: Some("L4Policy/deny: ports: 70000 is not a port".into()),
        reporting_controller: Some("tollgate.dev/agent".into()),
        reporting_instance: Some("node-a".into()),
        type_: Some("Warning".into()),
        ..Default::default()
    };
    let created = events
        .create(&PostParams::default(), &event)
        .await
        .expect("create the event");
    let name = created.metadata.name.clone().unwrap();
    assert!(
        name.starts_with("tollgate-") && name.len() > "tollgate-".len(),
        "{name}"
    );
    assert_eq!(
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let post = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .unwrap();
    assert_eq!(post.path, "/apis/events.k8s.io/v1/namespaces/ns1/events");
}

#[tokio::test]
async fn open_watch_connections_are_counted_by_resource_and_released() {
    let fake = FakeApiServer::start(kinds());
    let client = client(&fake).await;
    let (_routes, routes_task) = reflect(client.clone(), watcher::Config::default());
    let leases: Api<Lease> = Api::all(client);
    let leases_task = tokio::spawn(async move {
        watcher(leases, watcher::Config::default())
            .for_each(|_| async {})
            .await;
    });
    eventually("two watches", || fake.open_watch_count() == 2).await;
    let open = fake.open_watches();
    assert_eq!(open.get("httproutes.gateway.networking.k8s.io"), Some(&1));
    assert_eq!(open.get("leases.coordination.k8s.io"), Some(&1));
    routes_task.abort();
    leases_task.abort();
    eventually("no watch left", || fake.open_watch_count() == 0).await;
    assert_eq!(fake.peak_open_watches(), 2);
}

#[tokio::test]
async fn a_wrong_token_is_unauthorized() {
    let fake = FakeApiServer::start(kinds());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&path).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(fake.token().unwrap(), "stolen");
    std::fs::write(&path, text).unwrap();
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let api: Api<Lease> = Api::all(Client::try_from(config).unwrap());
    let err = api.list(&ListParams::default()).await.expect_err("refused");
    assert_eq!(api_status(err), (401, "Unauthorized".to_string()));
}

#[tokio::test]
async fn discovery_finds_the_registered_kinds() {
    let fake = FakeApiServer::start(kinds());
    let client = client(&fake).await;
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    let discovery = kube::Discovery::new(client).run().await.expect("discovery");
    let (resource, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "tollgate.dev",
            "v1alpha1",
            "TollgateNode",
        ))
        .expect("TollgateNode discovered");
    assert_eq!(resource.plural, "tollgatenodes");
    assert_eq!(caps.scope, kube::discovery::Scope::Cluster);
    assert!(discovery.has_group("coordination.k8s.io"));
}
