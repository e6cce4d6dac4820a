//! Unit tests of the fake's protocol over raw HTTP/1.1 (the real kube client's view is in
//! tests/tests/kube_fake.rs).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::raw_http::{call, get, open, post, read_head, WatchReader};
use super::{FakeApiServer, Fault, Kind};

const NODES: &str = "/apis/tollgate.dev/v1alpha1/tollgatenodes";
const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/ns1/httproutes";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ns1/leases";

fn kinds() -> Vec<Kind> {
    vec![
        Kind::cluster("tollgate.dev", "v1alpha1", "TollgateNode", "tollgatenodes"),
        Kind::namespaced("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes"),
        Kind::lease(),
    ]
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let name = e
                .pointer("/object/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("-");
            format!("{} {name}", e["type"].as_str().unwrap_or("?"))
        })
        .collect()
}

fn route(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name, "namespace": "ns1", "labels": labels}, "spec": {"hostnames": ["a.example"]}})
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn unknown_paths_and_scopes_answer_404_status_like_the_real_server() {
    let fake = FakeApiServer::start(kinds());
    for path in [
        "/apis/tollgate.dev/v1alpha1/nosuchthings",
        "/apis/tollgate.dev/v1/tollgatenodes",
        "/apis/tollgate.dev/v1alpha1/namespaces/ns1/tollgatenodes",
        "/apis/gateway.networking.k8s.io/v1/httproutes/x",
        "/apis/coordination.k8s.io/v1/namespaces/ns1/leases/x/status",
        "/nonsense",
    ] {
        let (code, body) = get(&fake, path);
        assert_eq!(code, 404, "{path}");
        assert_eq!(
            (
                body["kind"].as_str(),
                body["reason"].as_str(),
                body["code"].as_u64()
            ),
            (Some("Status"), Some("NotFound"), Some(404)),
            "{path}: {body}"
        );
    }
    let (code, body) = get(&fake, &format!("{LEASES}/missing"));
    assert_eq!(code, 404);
    assert_eq!(
        body["message"],
        "leases.coordination.k8s.io \"missing\" not found"
    );
    let (code, body) = get(&fake, "/apis/gateway.networking.k8s.io/v1");
    assert_eq!(code, 200);
    assert_eq!(body["resources"][0]["name"], "httproutes");
    assert_eq!(body["resources"][1]["name"], "httproutes/status");
}

#[test]
fn requests_without_the_bearer_token_are_unauthorized() {
    let fake = FakeApiServer::start(kinds());
    let mut stream = TcpStream::connect(fake.addr()).unwrap();
    stream
        .write_all(format!("GET {LEASES} HTTP/1.1\r\nHost: fake\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_head(&mut reader).0, 401);
    let open = FakeApiServer::builder(kinds()).token(None).start().unwrap();
    assert_eq!(get(&open, LEASES).0, 200);
}

#[test]
fn create_conflicts_and_optimistic_concurrency_use_the_real_codes() {
    let fake = FakeApiServer::start(kinds());
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}});
    let (code, created) = post(&fake, LEASES, lease.clone());
    assert_eq!(code, 201, "{created}");
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "ns1");
    assert_eq!(meta["generation"], 1);
    assert!(
        meta["uid"].as_str().is_some_and(|u| u.len() == 36),
        "{meta}"
    );
    assert!(meta["creationTimestamp"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(
        meta["managedFields"][0]["manager"], "unit-test",
        "manager from the User-Agent"
    );
    let (code, body) = post(&fake, LEASES, lease);
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    let stale = created.clone();
    let mut fresh = created.clone();
    fresh["spec"]["holderIdentity"] = json!("b");
    let (code, updated) = call(
        &fake,
        "PUT",
        &format!("{LEASES}/leader"),
        "application/json",
        &fresh.to_string(),
    );
    assert_eq!(code, 200, "{updated}");
    assert!(
        updated["metadata"]["resourceVersion"].as_str()
            > created["metadata"]["resourceVersion"].as_str()
            || updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    );
    let mut stale = stale;
    stale["spec"]["holderIdentity"] = json!("c");
    let (code, body) = call(
        &fake,
        "PUT",
        &format!("{LEASES}/leader"),
        "application/json",
        &stale.to_string(),
    );
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("Conflict")),
        "{body}"
    );
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("the object has been modified"));

    // A custom kind refuses an update without resourceVersion (422); a built-in one takes it.
    let (code, _) = post(&fake, ROUTES, route("r1", json!({})));
    assert_eq!(code, 201);
    let (code, body) = call(
        &fake,
        "PUT",
        &format!("{ROUTES}/r1"),
        "application/json",
        &route("r1", json!({"x": "y"})).to_string(),
    );
    assert_eq!(
        (code, body["reason"].as_str()),
        (422, Some("Invalid")),
        "{body}"
    );
    let mut unconditional = fresh.clone();
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    unconditional["spec"]["holderIdentity"] = json!("d");
    let (code, _) = call(
        &fake,
        "PUT",
        &format!("{LEASES}/leader"),
        "application/json",
        &unconditional.to_string(),
    );
    assert_eq!(code, 200);
    let (code, body) = post(&fake, LEASES, json!({"metadata": {"name": "Not_A_Name"}}));
    assert_eq!(
        (code, body["reason"].as_str()),
        (422, Some("Invalid")),
        "{body}"
    );
}

#[test]
fn list_pages_come_from_one_consistent_snapshot() {
    let fake = FakeApiServer::start(kinds());
    for i in 0..5 {
        assert_eq!(
            post(&fake, ROUTES, route(&format!("r{i}"), json!({}))).0,
            201
        );
    }
    let (_, page1) = get(&fake, &format!("{ROUTES}?limit=2"));
    assert_eq!(page1["kind"], "HTTPRouteList");
    let names = |p: &Value| {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&page1), ["r0", "r1"]);
    assert_eq!(page1["metadata"]["remainingItemCount"], 3);
    let snapshot_rv = page1["metadata"]["resourceVersion"].clone();
    // Changes after the first page do not show on the next pages.
    fake.delete(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        Some("ns1"),
        "r3",
    )
    .unwrap();
    post(&fake, ROUTES, route("r9", json!({})));
    let token = page1["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, page2) = get(&fake, &format!("{ROUTES}?limit=2&continue={token}"));
    assert_eq!(names(&page2), ["r2", "r3"]);
    assert_eq!(page2["metadata"]["resourceVersion"], snapshot_rv);
    let token = page2["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, page3) = get(&fake, &format!("{ROUTES}?limit=2&continue={token}"));
    assert_eq!(names(&page3), ["r4"]);
    assert!(page3["metadata"].get("continue").is_none());
    // The token dies with the history it reads.
    fake.compact();
    let (code, body) = get(&fake, &format!("{ROUTES}?limit=2&continue={token}"));
    assert_eq!((code, body["reason"].as_str()), (410, Some("Expired")));
    // resourceVersion=0 is served "from the cache", which ignores limit.
    let (_, any) = get(&fake, &format!("{ROUTES}?limit=2&resourceVersion=0"));
    assert_eq!(names(&any), ["r0", "r1", "r2", "r4", "r9"]);
    let (code, _) = get(
        &fake,
        &format!("{ROUTES}?resourceVersion=999&resourceVersionMatch=NotOlderThan"),
    );
    assert_eq!(code, 504);
}

#[test]
fn selectors_filter_lists() {
    let fake = FakeApiServer::start(kinds());
    post(&fake, ROUTES, route("a", json!({"app": "web"})));
    post(&fake, ROUTES, route("b", json!({"app": "db"})));
    post(&fake, ROUTES, route("c", json!({})));
    let names = |path: &str| {
        let (code, list) = get(&fake, path);
        assert_eq!(code, 200, "{path}: {list}");
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(names(&format!("{ROUTES}?labelSelector=app%3Dweb")), "a");
    assert_eq!(
        names(&format!("{ROUTES}?labelSelector=app%20in%20(web,db)")),
        "a,b"
    );
    assert_eq!(names(&format!("{ROUTES}?labelSelector=!app")), "c");
    assert_eq!(names(&format!("{ROUTES}?labelSelector=app!%3Dweb")), "b,c");
    assert_eq!(
        names(&format!("{ROUTES}?fieldSelector=metadata.name%3Db")),
        "b"
    );
    assert_eq!(
        names(
            "/apis/gateway.networking.k8s.io/v1/httproutes?fieldSelector=metadata.namespace%3Dns1"
        ),
        "a,b,c"
    );
    assert_eq!(
        get(&fake, &format!("{ROUTES}?fieldSelector=spec.x%3D1")).0,
        400
    );
}

#[test]
fn generation_counts_spec_changes_not_metadata_or_status() {
    let fake = FakeApiServer::start(kinds());
    let (_, r) = post(&fake, ROUTES, route("r", json!({})));
    let gen = |v: &Value| v["metadata"]["generation"].as_u64().unwrap();
    assert_eq!(gen(&r), 1);
    let patch = |body: Value, sub: &str| {
        call(
            &fake,
            "PATCH",
            &format!("{ROUTES}/r{sub}"),
            "application/merge-patch+json",
            &body.to_string(),
        )
        .1
    };
    let r = patch(json!({"metadata": {"labels": {"x": "1"}}}), "");
    assert_eq!(gen(&r), 1);
    let r = patch(json!({"status": {"parents": []}}), "/status");
    assert_eq!(gen(&r), 1);
    assert_eq!(r["status"], json!({"parents": []}));
    let r = patch(
        json!({"spec": {"hostnames": ["b.example"]}, "status": {"ignored": true}}),
        "",
    );
    assert_eq!(gen(&r), 2);
    assert_eq!(
        r["status"],
        json!({"parents": []}),
        "the object's own patch never changes status"
    );
    let rv = r["metadata"]["resourceVersion"].clone();
    let r = patch(json!({"spec": {"hostnames": ["b.example"]}}), "");
    assert_eq!(
        r["metadata"]["resourceVersion"], rv,
        "a patch that changes nothing writes nothing"
    );
}

#[test]
fn server_side_apply_scopes_conflicts_and_required_parameters() {
    let fake = FakeApiServer::start(kinds());
    let apply =
        |path: &str, body: &str| call(&fake, "PATCH", path, "application/apply-patch+yaml", body);
    let doc = "apiVersion: tollgate.dev/v1alpha1\nkind: TollgateNode\nmetadata:\n  name: n1\n  labels:\n    node: n1\nspec:\n  nodeName: n1\nstatus:\n  revision: abc\n";
    let (code, body) = apply(&format!("{NODES}/n1"), doc);
    assert_eq!(
        (code, body["reason"].as_str()),
        (422, Some("Invalid")),
        "fieldManager is required: {body}"
    );
    let (code, created) = apply(&format!("{NODES}/n1?fieldManager=tollgate-agent"), doc);
    assert_eq!(code, 201, "{created}");
    assert!(
        created.get("status").is_none(),
        "object apply never sets status: {created}"
    );
    let (code, with_status) = apply(
        &format!("{NODES}/n1/status?fieldManager=tollgate-agent&force=true"),
        doc,
    );
    assert_eq!(code, 200, "{with_status}");
    assert_eq!(with_status["status"]["revision"], "abc");
    assert_eq!(with_status["metadata"]["generation"], 1);
    let status_entry = with_status["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subresource"] == "status")
        .expect("a status entry");
    assert_eq!(status_entry["manager"], "tollgate-agent");
    assert_eq!(status_entry["operation"], "Apply");
    assert_eq!(
        status_entry["fieldsV1"],
        json!({"f:status": {"f:revision": {}}})
    );
    // Identical again: nothing written.
    let (_, again) = apply(
        &format!("{NODES}/n1/status?fieldManager=tollgate-agent&force=true"),
        doc,
    );
    assert_eq!(
        again["metadata"]["resourceVersion"],
        with_status["metadata"]["resourceVersion"]
    );
    // Another manager changing an owned field conflicts, unless forced.
    let other = "{\"apiVersion\":\"tollgate.dev/v1alpha1\",\"kind\":\"TollgateNode\",\"metadata\":{\"name\":\"n1\"},\"status\":{\"revision\":\"zzz\"}}";
    let (code, body) = apply(&format!("{NODES}/n1/status?fieldManager=intruder"), other);
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("Conflict")),
        "{body}"
    );
    assert_eq!(body["details"]["causes"][0]["type"], "FieldManagerConflict");
    assert_eq!(body["details"]["causes"][0]["field"], ".status.revision");
    let (code, body) = apply(
        &format!("{NODES}/n1/status?fieldManager=intruder&force=true"),
        other,
    );
    assert_eq!((code, &body["status"]["revision"]), (200, &json!("zzz")));
    // force only goes with apply; other patch types are 415 for custom kinds when strategic.
    let (code, _) = call(
        &fake,
        "PATCH",
        &format!("{NODES}/n1?force=true"),
        "application/merge-patch+json",
        "{}",
    );
    assert_eq!(code, 422);
    let (code, body) = call(
        &fake,
        "PATCH",
        &format!("{NODES}/n1"),
        "application/strategic-merge-patch+json",
        "{}",
    );
    assert_eq!(
        (code, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let (code, _) = apply(&format!("{NODES}/missing/status?fieldManager=m"), "{\"apiVersion\":\"tollgate.dev/v1alpha1\",\"kind\":\"TollgateNode\",\"metadata\":{\"name\":\"missing\"}}");
    assert_eq!(code, 404, "status apply never creates");
}

#[test]
fn json_patch_and_dry_run() {
    let fake = FakeApiServer::start(kinds());
    post(&fake, ROUTES, route("r", json!({})));
    let rv = fake.resource_version();
    let (code, body) = call(
        &fake,
        "PATCH",
        &format!("{ROUTES}/r?dryRun=All"),
        "application/json-patch+json",
        r#"[{"op":"add","path":"/spec/hostnames/-","value":"c.example"}]"#,
    );
    assert_eq!(code, 200);
    assert_eq!(body["spec"]["hostnames"], json!(["a.example", "c.example"]));
    assert_eq!(fake.resource_version(), rv, "dry run writes nothing");
    let (code, body) = call(
        &fake,
        "PATCH",
        &format!("{ROUTES}/r"),
        "application/json-patch+json",
        r#"[{"op":"test","path":"/spec/hostnames/0","value":"zzz"}]"#,
    );
    assert_eq!(code, 422, "{body}");
}

#[test]
fn finalizers_hold_deletion_until_the_last_one_goes() {
    let fake = FakeApiServer::start(kinds());
    let mut r = route("r", json!({}));
    r["metadata"]["finalizers"] = json!(["tollgate.dev/cleanup"]);
    post(&fake, ROUTES, r);
    let (code, marked) = call(
        &fake,
        "DELETE",
        &format!("{ROUTES}/r"),
        "application/json",
        "",
    );
    assert_eq!(code, 202);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(marked["metadata"]["generation"], 2);
    let (code, _) = call(
        &fake,
        "PATCH",
        &format!("{ROUTES}/r"),
        "application/merge-patch+json",
        r#"{"metadata":{"finalizers":null}}"#,
    );
    assert_eq!(code, 200);
    assert_eq!(get(&fake, &format!("{ROUTES}/r")).0, 404);
    // Preconditions.
    post(&fake, ROUTES, route("p", json!({})));
    let (code, body) = call(
        &fake,
        "DELETE",
        &format!("{ROUTES}/p"),
        "application/json",
        r#"{"preconditions":{"resourceVersion":"1"}}"#,
    );
    assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")));
}

#[test]
fn watch_replays_history_and_streams_changes_with_selector_transitions() {
    let fake = FakeApiServer::builder(kinds())
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .unwrap();
    post(&fake, ROUTES, route("a", json!({"app": "web"})));
    let from = fake.resource_version();
    post(&fake, ROUTES, route("b", json!({"app": "web"})));
    let (code, mut w) = WatchReader::start(&fake, &format!("{ROUTES}?watch=true&resourceVersion={from}&labelSelector=app%3Dweb&allowWatchBookmarks=true&timeoutSeconds=2"));
    assert_eq!(code, 200);
    // Leaves the selector (DELETED), comes back (ADDED), changes (MODIFIED), goes (DELETED).
    let patch = |labels: Value| {
        call(
            &fake,
            "PATCH",
            &format!("{ROUTES}/a"),
            "application/merge-patch+json",
            &json!({"metadata": {"labels": labels}}).to_string(),
        )
    };
    patch(json!({"app": "db"}));
    patch(json!({"app": "web"}));
    patch(json!({"app": "web", "x": "y"}));
    fake.delete(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        Some("ns1"),
        "a",
    )
    .unwrap();
    let events = w.all();
    let seen: Vec<String> = types(&events)
        .into_iter()
        .filter(|t| !t.starts_with("BOOKMARK"))
        .collect();
    assert_eq!(
        seen,
        ["ADDED b", "DELETED a", "ADDED a", "MODIFIED a", "DELETED a"]
    );
    let last = events.last().unwrap();
    assert_eq!(
        last["type"], "BOOKMARK",
        "the timeout ends with a bookmark: {last}"
    );
    assert_eq!(
        last["object"]["metadata"]["resourceVersion"],
        fake.resource_version().to_string()
    );
    assert!(
        events.iter().filter(|e| e["type"] == "BOOKMARK").count() >= 2,
        "periodic bookmarks too"
    );
}

#[test]
fn watch_from_a_compacted_version_gets_an_in_stream_410() {
    let fake = FakeApiServer::start(kinds());
    post(&fake, ROUTES, route("a", json!({})));
    let old = fake.resource_version();
    post(&fake, ROUTES, route("b", json!({})));
    let (code, mut live) = WatchReader::start(
        &fake,
        &format!(
            "{ROUTES}?watch=1&resourceVersion={}",
            fake.resource_version()
        ),
    );
    assert_eq!(code, 200);
    wait_until("the watch is registered", || fake.open_watch_count() == 1);
    fake.compact();
    // Open watches end with the error, as when etcd compacts under them.
    let events = live.all();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
    let (code, mut w) =
        WatchReader::start(&fake, &format!("{ROUTES}?watch=1&resourceVersion={old}"));
    assert_eq!(
        code, 200,
        "the real server answers 200 and puts the 410 in the stream"
    );
    let events = w.all();
    assert_eq!(events.len(), 1);
    assert!(events[0]["object"]["message"]
        .as_str()
        .unwrap()
        .starts_with("too old resource version"));
    wait_until("both watches are gone", || fake.open_watch_count() == 0);
}

#[test]
fn streaming_list_sends_current_objects_then_the_initial_events_end_bookmark() {
    let fake = FakeApiServer::start(kinds());
    post(&fake, ROUTES, route("a", json!({})));
    post(&fake, ROUTES, route("b", json!({})));
    let (code, body) = get(
        &fake,
        &format!("{ROUTES}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"),
    );
    assert_eq!(
        (code, body["reason"].as_str()),
        (422, Some("Invalid")),
        "bookmarks are required"
    );
    let (_, mut w) = WatchReader::start(&fake, &format!("{ROUTES}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=0&timeoutSeconds=1"));
    let events = w.all();
    assert_eq!(types(&events)[..3], ["ADDED a", "ADDED b", "BOOKMARK -"]);
    assert_eq!(
        events[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(
        events[2]["object"]["metadata"]["resourceVersion"],
        fake.resource_version().to_string()
    );
}

#[test]
fn a_client_that_goes_away_closes_its_watch() {
    let fake = FakeApiServer::start(kinds());
    let (_, w) = WatchReader::start(&fake, &format!("{ROUTES}?watch=1"));
    let (_, w2) = WatchReader::start(&fake, &format!("{LEASES}?watch=1"));
    wait_until("two watches are open", || fake.open_watch_count() == 2);
    assert_eq!(
        fake.open_watches()
            .get("httproutes.gateway.networking.k8s.io"),
        Some(&1)
    );
    assert_eq!(
        fake.open_watches().get("leases.coordination.k8s.io"),
        Some(&1)
    );
    drop(w);
    wait_until("the dropped watch is gone", || fake.open_watch_count() == 1);
    drop(w2);
    wait_until("no watch is open", || fake.open_watch_count() == 0);
    assert_eq!(fake.peak_open_watches(), 2);
}

#[test]
fn injected_faults_hit_matching_requests_only_and_run_out() {
    let fake = FakeApiServer::start(kinds());
    fake.inject(
        Fault::status(503)
            .path_contains("/leases")
            .method("GET")
            .times(2),
    );
    fake.inject(Fault::reset().watches(true));
    assert_eq!(get(&fake, LEASES).0, 503);
    assert_eq!(get(&fake, ROUTES).0, 200);
    assert_eq!(get(&fake, LEASES).0, 503);
    assert_eq!(get(&fake, LEASES).0, 200, "used up");
    let mut reader = BufReader::new(open(
        &fake,
        "GET",
        &format!("{ROUTES}?watch=1"),
        "application/json",
        "",
    ));
    let mut line = String::new();
    assert_eq!(
        reader.read_line(&mut line).unwrap_or(0),
        0,
        "reset without an answer: {line}"
    );
    fake.clear_faults();
    fake.inject(Fault::delay(Duration::from_millis(300)));
    let t = Instant::now();
    assert_eq!(get(&fake, ROUTES).0, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let log = fake.requests();
    // The reset watch is logged with status 0 (no answer).
    assert_eq!(
        log.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 200, 503, 200, 0, 200]
    );
    assert!(log[4].watch);
    assert!(log.iter().all(|r| !r.is_write()));
}

#[test]
fn the_kubeconfig_names_the_server_token_and_namespace() {
    let fake = FakeApiServer::start(kinds());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    fake.write_kubeconfig_for_namespace(&path, "tollgate-system")
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(doc["clusters"][0]["cluster"]["server"], fake.url());
    assert_eq!(doc["users"][0]["user"]["token"], fake.token().unwrap());
    assert_eq!(
        doc["contexts"][0]["context"]["namespace"],
        "tollgate-system"
    );
}

#[test]
fn apply_yaml_seeds_objects_with_status_and_updates_them_in_place() {
    let fake = FakeApiServer::start(kinds());
    let stored = fake
        .apply_yaml("apiVersion: tollgate.dev/v1alpha1\nkind: TollgateNode\nmetadata:\n  name: n1\nspec:\n  a: 1\nstatus:\n  ok: true\n---\napiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: l\n  namespace: ns1\nspec: {}\n")
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0]["status"]["ok"], true);
    let again = fake.apply_yaml("apiVersion: tollgate.dev/v1alpha1\nkind: TollgateNode\nmetadata:\n  name: n1\nspec:\n  a: 2\n").unwrap();
    assert_eq!(again[0]["metadata"]["generation"], 2);
    assert_eq!(
        again[0]["status"]["ok"], true,
        "status kept when the document has none"
    );
    assert_eq!(again[0]["metadata"]["uid"], stored[0]["metadata"]["uid"]);
    assert!(fake
        .apply_yaml("apiVersion: v9\nkind: Nope\nmetadata:\n  name: x\n")
        .is_err());
    assert_eq!(fake.list("coordination.k8s.io/v1", "Lease").len(), 1);
    assert!(fake
        .get("coordination.k8s.io/v1", "Lease", Some("ns1"), "l")
        .is_some());
}

#[test]
fn legacy_watch_paths_stream_and_a_namespace_named_watch_still_lists() {
    let fake = FakeApiServer::start(kinds());
    let watch_ns = "/apis/gateway.networking.k8s.io/v1/namespaces/watch/httproutes";
    let mut r = route("w", json!({}));
    r["metadata"]["namespace"] = json!("watch");
    assert_eq!(post(&fake, watch_ns, r).0, 201);
    let (code, list) = get(&fake, watch_ns);
    assert_eq!((code, list["kind"].as_str()), (200, Some("HTTPRouteList")));
    post(&fake, ROUTES, route("a", json!({})));
    let (code, mut w) = WatchReader::start(
        &fake,
        "/apis/gateway.networking.k8s.io/v1/watch/namespaces/ns1/httproutes/a?timeoutSeconds=1",
    );
    assert_eq!(code, 200);
    assert_eq!(types(&w.all()), ["ADDED a"]);
    let log = fake.requests();
    assert_eq!(
        log.iter().map(|r| r.watch).collect::<Vec<_>>(),
        [false, false, false, true]
    );
}
