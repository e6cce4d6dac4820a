//! The node status writer against kube's mock service: every request checked (method, URL
//! with fieldManager and force, body), in order, and the absence of requests when nothing
//! changed (a paused clock: the mock waits as long as it takes for a request that never comes).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::client::Body;
use serde_json::{json, Value};
use tollgate_model::node::{KindCount, RefusedObject};

use super::*;
use crate::events::{self, Change, Events, BURST, REFILL};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NODE_URL: &str = "/apis/tollgate.dev/v1alpha1/tollgatenodes/node-a";
const APPLY_QUERY: &str = "?&force=true&fieldManager=tollgate-agent";
const EVENTS_URL: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
/// This node's core `Node`, the owner of its `TollgateNode`.
const KUBE_NODE_URL: &str = "/api/v1/nodes/node-a";
const NODE_UID: &str = "node-uid-1";

fn mock() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Counts what the writer reports, by family and result.
#[derive(Default)]
struct Counts(Mutex<Vec<(&'static str, &'static str)>>);

impl Counts {
    fn of(&self, family: &str, result: &str) -> usize {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|(f, r)| *f == family && *r == result)
            .count()
    }
}

impl ReportMetrics for Counts {
    fn status_write(&self, result: &'static str) {
        self.0.lock().unwrap().push(("status", result));
    }
    fn event(&self, result: &'static str) {
        self.0.lock().unwrap().push(("event", result));
    }
}

fn writer() -> (NodeStatusWriter, Handle, Arc<Counts>) {
    let (client, handle) = mock();
    let counts = Arc::new(Counts::default());
    let w = NodeStatusWriter::with_client(client, "node-a", counts.clone(), FIRST_BACKOFF);
    (w, handle, counts)
}

/// The next request: its method and URL must be these; it is answered `code` with `answer`.
/// Returns its body as JSON (`null` when empty) and its Content-Type.
async fn expect(
    handle: &mut Handle,
    method: &str,
    uri: &str,
    code: u16,
    answer: Value,
) -> (Value, String) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(3600), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request came; expected {method} {uri}"))
        .expect("the client is gone");
    assert_eq!(request.method().as_str(), method, "{}", request.uri());
    assert_eq!(request.uri().to_string(), uri);
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    (body, content_type)
}

/// No request comes, however long the writer is given (the clock is paused: the timeout
/// fires only once every task is idle).
async fn no_request(handle: &mut Handle) {
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_secs(3600), handle.next_request()).await
    {
        panic!("unexpected request: {} {}", request.method(), request.uri());
    }
}

/// The next request must be the metadata-only read of this node's `Node`; it is answered
/// `code` with `answer`.
async fn expect_node_read(handle: &mut Handle, code: u16, answer: Value) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(3600), handle.next_request())
        .await
        .expect("no request came; expected the Node's read")
        .expect("the client is gone");
    assert_eq!(request.method().as_str(), "GET", "{}", request.uri());
    assert_eq!(request.uri().to_string(), KUBE_NODE_URL);
    let accept = request
        .headers()
        .get(http::header::ACCEPT)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        accept.contains("as=PartialObjectMetadata;g=meta.k8s.io;v=v1"),
        "metadata only: {accept}"
    );
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
}

/// The Node, as a metadata-only read answers it.
fn kube_node(uid: &str) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": "node-a", "uid": uid, "resourceVersion": "3"}})
}

/// The Node is there, with uid [`NODE_UID`].
async fn node_is_there(handle: &mut Handle) {
    expect_node_read(handle, 200, kube_node(NODE_UID)).await;
}

/// The ownerReference to the Node of `uid`, exactly as the agent must write it: no
/// `controller`, no `blockOwnerDeletion`.
fn owner(uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": uid})
}

/// The apply that creates the object or sets its owner: the empty spec, the ownerReference
/// when `uid` is given, never a status.
fn object_apply(uid: Option<&str>) -> Value {
    let mut body = json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "TollgateNode",
        "metadata": {"name": "node-a"}, "spec": {}});
    if let Some(uid) = uid {
        body["metadata"]["ownerReferences"] = json!([owner(uid)]);
    }
    body
}

fn api_status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": reason, "code": code, "message": format!("{reason} (test)")})
}

/// The object as the API server holds it, owned by the Node of uid [`NODE_UID`].
fn node_object(status: Option<&TollgateNodeStatus>) -> Value {
    node_object_owned_by(status, Some(NODE_UID))
}

/// The object, owned by the Node of uid `owner_uid` (`None`: no ownerReferences).
fn node_object_owned_by(status: Option<&TollgateNodeStatus>, owner_uid: Option<&str>) -> Value {
    let mut o = json!({
        "apiVersion": "tollgate.dev/v1alpha1",
        "kind": "TollgateNode",
        "metadata": {"name": "node-a", "uid": "uid-1", "resourceVersion": "7"},
        "spec": {},
    });
    if let Some(uid) = owner_uid {
        o["metadata"]["ownerReferences"] = json!([owner(uid)]);
    }
    if let Some(s) = status {
        o["status"] = serde_json::to_value(s).unwrap();
    }
    o
}

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, since: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: at(since),
        observed_generation: None,
    }
}

/// A status as the binary makes it: enforcedAt and the conditions' times are "now" (`when`).
fn status(revision: &str, when: i64) -> TollgateNodeStatus {
    TollgateNodeStatus {
        revision: Some(revision.into()),
        enforced_at: Some(at(when)),
        time_to_enforce_millis: Some(when % 1000),
        objects: vec![KindCount {
            kind: "L4Policy".into(),
            count: 1,
        }],
        conditions: vec![
            condition("Ready", "True", "RevisionEnforced", "", when),
            condition("Degraded", "False", "AsIntended", "", when),
        ],
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_status_creates_the_object_then_applies_the_status_then_one_event() {
    let (w, mut handle, counts) = writer();
    let first = status("k8s:aaaa@12", 1_000);
    w.publish(first.clone());
    let (body, _) = expect(
        &mut handle,
        "GET",
        NODE_URL,
        404,
        api_status(404, "NotFound"),
    )
    .await;
    assert_eq!(body, Value::Null);
    node_is_there(&mut handle).await;
    let (body, content_type) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}{APPLY_QUERY}"),
        201,
        node_object(None),
    )
    .await;
    assert_eq!(content_type, "application/apply-patch+yaml");
    // Created owned by the Node (its uid), so that it goes with it.
    assert_eq!(
        body,
        json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "TollgateNode",
            "metadata": {"name": "node-a", "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "node-uid-1"}]},
            "spec": {}})
    );
    let (body, content_type) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}/status{APPLY_QUERY}"),
        200,
        node_object(Some(&first)),
    )
    .await;
    assert_eq!(content_type, "application/apply-patch+yaml");
    assert_eq!(
        body,
        json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "TollgateNode",
            "metadata": {"name": "node-a"}, "status": serde_json::to_value(&first).unwrap()})
    );
    assert!(
        body.pointer("/spec").is_none(),
        "a status apply carries no spec"
    );
    let (event, _) = expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reason"], "RevisionApplied");
    assert_eq!(event["reportingController"], "tollgate.dev/agent");
    assert_eq!(event["reportingInstance"], "node-a");
    assert_eq!(
        event["regarding"],
        json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "TollgateNode", "name": "node-a", "uid": "uid-1"})
    );
    assert_eq!(event["metadata"]["namespace"], "default");
    assert!(
        event["note"].as_str().unwrap().contains("k8s:aaaa@12"),
        "{event}"
    );
    assert!(event["eventTime"].is_string(), "{event}");

    // The same revision again, made later (new "now" times): nothing is written.
    w.publish(status("k8s:aaaa@12", 2_000));
    no_request(&mut handle).await;
    assert_eq!(counts.of("status", "ok"), 2);
    assert_eq!(counts.of("event", "ok"), 1);

    // A new revision: one status write, one event.
    let second = status("k8s:bbbb@13", 3_000);
    w.publish(second.clone());
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}/status{APPLY_QUERY}"),
        200,
        node_object(Some(&second)),
    )
    .await;
    assert_eq!(body["status"]["revision"], "k8s:bbbb@13");
    assert_eq!(body["status"]["enforcedAt"], "1970-01-01T00:50:00Z");
    // The conditions kept their status: their transition time stays the first one's.
    assert_eq!(
        body["status"]["conditions"][0]["lastTransitionTime"],
        "1970-01-01T00:16:40Z"
    );
    let (event, _) = expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    assert_eq!(event["reason"], "RevisionApplied");
    no_request(&mut handle).await;
    assert_eq!(counts.of("status", "ok"), 3);
}

#[tokio::test(start_paused = true)]
async fn an_object_that_already_holds_the_status_is_not_written_again() {
    let (w, mut handle, counts) = writer();
    let held = status("k8s:aaaa@12", 1_000);
    w.publish(status("k8s:aaaa@12", 5_000));
    expect(&mut handle, "GET", NODE_URL, 200, node_object(Some(&held))).await;
    node_is_there(&mut handle).await;
    no_request(&mut handle).await;
    assert_eq!(counts.of("status", "ok"), 0);
}

#[tokio::test(start_paused = true)]
async fn refused_objects_and_a_refused_revision_are_warning_events() {
    let (w, mut handle, _counts) = writer();
    let held = status("k8s:aaaa@12", 1_000);
    let mut partial = status("k8s:bbbb@13", 2_000);
    partial.refused = vec![RefusedObject {
        kind: "HTTPRoute".into(),
        namespace: Some("shop".into()),
        name: "cart".into(),
        field: Some("spec.rules[0].matches[0].path.value".into()),
        reason: "must start with /".into(),
    }];
    partial.refused_count = Some(1);
    w.publish(partial.clone());
    expect(&mut handle, "GET", NODE_URL, 200, node_object(Some(&held))).await;
    node_is_there(&mut handle).await;
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}/status{APPLY_QUERY}"),
        200,
        node_object(Some(&partial)),
    )
    .await;
    assert_eq!(body["status"]["refused"][0]["name"], "cart");
    assert_eq!(body["status"]["refusedCount"], 1);
    let (applied, _) = expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    assert_eq!(
        (applied["type"].as_str(), applied["reason"].as_str()),
        (Some("Normal"), Some("RevisionApplied"))
    );
    let (refused, _) = expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    assert_eq!(
        (refused["type"].as_str(), refused["reason"].as_str()),
        (Some("Warning"), Some("ObjectsRefused"))
    );
    let note = refused["note"].as_str().unwrap();
    assert!(
        note.contains(
            "HTTPRoute shop/cart (spec.rules[0].matches[0].path.value): must start with /"
        ),
        "{note}"
    );
    no_request(&mut handle).await;

    // The next revision is refused whole: the last good one stays, Degraded says why.
    let mut refused_whole = partial.clone();
    refused_whole.conditions[1] = condition(
        "Degraded",
        "True",
        events::REVISION_REFUSED,
        "revision k8s:cccc@14 refused (invalid): L4Policy/edge: spec.rules[0].from: not a CIDR",
        3_000,
    );
    w.publish(refused_whole.clone());
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}/status{APPLY_QUERY}"),
        200,
        node_object(Some(&refused_whole)),
    )
    .await;
    assert_eq!(body["status"]["revision"], "k8s:bbbb@13");
    assert_eq!(body["status"]["conditions"][1]["status"], "True");
    assert_eq!(
        body["status"]["conditions"][1]["lastTransitionTime"],
        "1970-01-01T00:50:00Z"
    );
    let (event, _) = expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("RevisionRefused"))
    );
    assert!(
        event["note"].as_str().unwrap().contains("k8s:cccc@14"),
        "{event}"
    );
    // The same refusal read again: nothing.
    w.publish(refused_whole);
    no_request(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_counted_and_retried_with_backoff_and_the_latest_status_wins() {
    let (w, mut handle, counts) = writer();
    w.publish(status("k8s:aaaa@12", 1_000));
    expect(&mut handle, "GET", NODE_URL, 200, node_object(None)).await;
    node_is_there(&mut handle).await;
    let status_url = format!("{NODE_URL}/status{APPLY_QUERY}");
    expect(
        &mut handle,
        "PATCH",
        &status_url,
        500,
        api_status(500, "InternalError"),
    )
    .await;
    // Two newer statuses while the writer waits: only the last one is sent.
    w.publish(status("k8s:bbbb@13", 2_000));
    w.publish(status("k8s:cccc@14", 3_000));
    let before = tokio::time::Instant::now();
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &status_url,
        403,
        api_status(403, "Forbidden"),
    )
    .await;
    let waited = before.elapsed();
    assert!(
        waited >= FIRST_BACKOFF / 2 && waited <= FIRST_BACKOFF,
        "{waited:?}"
    );
    assert_eq!(body["status"]["revision"], "k8s:cccc@14");
    let before = tokio::time::Instant::now();
    let latest = status("k8s:cccc@14", 3_000);
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &status_url,
        200,
        node_object(Some(&latest)),
    )
    .await;
    let waited = before.elapsed();
    assert!(
        waited >= FIRST_BACKOFF && waited <= FIRST_BACKOFF * 2,
        "the backoff doubles: {waited:?}"
    );
    assert_eq!(body["status"]["revision"], "k8s:cccc@14");
    expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    no_request(&mut handle).await;
    assert_eq!(counts.of("status", "error"), 1);
    assert_eq!(counts.of("status", "forbidden"), 1);
    assert_eq!(counts.of("status", "ok"), 1);

    // After a success the backoff starts over.
    let failing = status("k8s:dddd@15", 4_000);
    w.publish(failing.clone());
    expect(
        &mut handle,
        "PATCH",
        &status_url,
        500,
        api_status(500, "InternalError"),
    )
    .await;
    let before = tokio::time::Instant::now();
    expect(
        &mut handle,
        "PATCH",
        &status_url,
        200,
        node_object(Some(&failing)),
    )
    .await;
    assert!(before.elapsed() <= FIRST_BACKOFF, "{:?}", before.elapsed());
}

#[tokio::test(start_paused = true)]
async fn an_object_deleted_behind_the_agents_back_is_created_again() {
    let (w, mut handle, counts) = writer();
    let first = status("k8s:aaaa@12", 1_000);
    w.publish(first.clone());
    expect(&mut handle, "GET", NODE_URL, 200, node_object(Some(&first))).await;
    node_is_there(&mut handle).await;
    no_request(&mut handle).await;
    let second = status("k8s:bbbb@13", 2_000);
    w.publish(second.clone());
    let status_url = format!("{NODE_URL}/status{APPLY_QUERY}");
    expect(
        &mut handle,
        "PATCH",
        &status_url,
        404,
        api_status(404, "NotFound"),
    )
    .await;
    expect(
        &mut handle,
        "GET",
        NODE_URL,
        404,
        api_status(404, "NotFound"),
    )
    .await;
    node_is_there(&mut handle).await;
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}{APPLY_QUERY}"),
        201,
        node_object(None),
    )
    .await;
    assert_eq!(body, object_apply(Some(NODE_UID)));
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &status_url,
        200,
        node_object(Some(&second)),
    )
    .await;
    assert_eq!(body["status"]["revision"], "k8s:bbbb@13");
    expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    no_request(&mut handle).await;
    assert_eq!(counts.of("status", "error"), 1);
}

#[test]
fn stabilize_keeps_the_enforcement_time_of_the_same_revision_and_transition_times_of_the_same_status(
) {
    let last = status("k8s:aaaa@12", 1_000);
    let again = stabilize(status("k8s:aaaa@12", 2_000), Some(&last));
    assert_eq!(again, last);
    let next = stabilize(status("k8s:bbbb@13", 2_000), Some(&last));
    assert_eq!(next.enforced_at, Some(at(2_000)));
    assert_eq!(next.conditions[0].last_transition_time, at(1_000));
    let mut degraded = status("k8s:aaaa@12", 3_000);
    degraded.conditions[1] = condition("Degraded", "True", "RevisionRefused", "x", 3_000);
    let degraded = stabilize(degraded, Some(&last));
    assert_eq!(degraded.conditions[1].last_transition_time, at(3_000));
    assert_eq!(degraded.conditions[0].last_transition_time, at(1_000));
    assert_eq!(stabilize(last.clone(), None), last);
}

#[test]
fn changes_become_at_most_one_event_per_reason() {
    let a = status("k8s:aaaa@12", 1_000);
    assert!(Change::between(Some(&a), &status("k8s:aaaa@12", 2_000))
        .events
        .is_empty());
    let change = Change::between(None, &a);
    assert_eq!(change.events.len(), 1);
    assert_eq!(change.events[0].reason, "RevisionApplied");
    // A long refusal is cut to the API's limit.
    let mut many = status("k8s:bbbb@13", 2_000);
    many.refused = (0..32)
        .map(|i| RefusedObject {
            kind: "HTTPRoute".into(),
            namespace: Some("ns".into()),
            name: format!("route-{i}"),
            field: None,
            reason: "é".repeat(100),
        })
        .collect();
    many.refused_count = Some(40);
    let change = Change::between(Some(&a), &many);
    assert_eq!(change.events.len(), 2);
    let note = &change.events[1].note;
    assert!(
        note.len() <= 1024 && note.ends_with("..."),
        "{}",
        note.len()
    );
    assert!(note.contains("without 40 object(s)"), "{note}");
    // No status written before and no revision yet: nothing to say.
    assert!(Change::between(None, &TollgateNodeStatus::default())
        .events
        .is_empty());
}

#[tokio::test(start_paused = true)]
async fn identical_events_are_a_series_and_a_burst_is_rate_limited() {
    let (client, mut handle) = mock();
    let counts = Counts::default();
    let mut events = Events::new(client, "node-a");
    let note = |n: usize| events::Note {
        type_: "Warning",
        reason: events::REVISION_REFUSED,
        note: format!("revision {n} refused"),
    };
    let one = |n: usize| Change {
        events: vec![note(n)],
    };
    let served = Arc::new(AtomicU64::new(0));
    let answered = served.clone();
    let server = tokio::spawn(async move {
        let mut bodies = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let line = format!("{} {}", request.method(), request.uri());
            let bytes = request.into_body().collect_bytes().await.unwrap();
            bodies.push((line, serde_json::from_slice::<Value>(&bytes).unwrap()));
            answered.fetch_add(1, Ordering::SeqCst);
            send.send_response(
                Response::builder()
                    .status(201)
                    .body(Body::from(b"{}".to_vec()))
                    .unwrap(),
            );
        }
        bodies
    });
    events.publish(&one(0), Some("uid-1"), &counts).await;
    events.publish(&one(0), Some("uid-1"), &counts).await;
    for n in 1..BURST as usize + 3 {
        events.publish(&one(n), Some("uid-1"), &counts).await;
    }
    assert_eq!(counts.of("event", "ok"), BURST as usize);
    assert_eq!(counts.of("event", "throttled"), 4);
    tokio::time::sleep(REFILL).await;
    events.publish(&one(99), Some("uid-1"), &counts).await;
    assert_eq!(counts.of("event", "ok"), BURST as usize + 1);
    drop(events);
    let bodies = server.await.unwrap();
    assert_eq!(served.load(Ordering::SeqCst) as usize, BURST as usize + 1);
    assert!(
        bodies[0].0.starts_with(&format!("POST {EVENTS_URL}")),
        "{:?}",
        bodies[0]
    );
    // The repeat is a PATCH of the first event's series.
    let first_name = bodies[0].1["metadata"]["name"].as_str().unwrap().to_owned();
    assert!(first_name.starts_with("node-a."), "{first_name}");
    assert_eq!(bodies[1].0, format!("PATCH {EVENTS_URL}/{first_name}?"));
    assert_eq!(bodies[1].1["series"]["count"], 2);
    assert!(bodies[2..]
        .iter()
        .all(|(line, _)| line.starts_with("POST ")));
}

#[tokio::test(start_paused = true)]
async fn an_events_api_that_does_not_answer_never_holds_up_a_status() {
    let (w, mut handle, counts) = writer();
    let held = status("k8s:aaaa@12", 1_000);
    w.publish(status("k8s:bbbb@13", 2_000));
    expect(&mut handle, "GET", NODE_URL, 200, node_object(Some(&held))).await;
    node_is_there(&mut handle).await;
    let status_url = format!("{NODE_URL}/status{APPLY_QUERY}");
    expect(&mut handle, "PATCH", &status_url, 200, node_object(None)).await;
    // The event's request comes, and is left unanswered.
    let (event, pending) = handle.next_request().await.unwrap();
    assert_eq!(event.uri().to_string(), format!("{EVENTS_URL}?"));
    w.publish(status("k8s:cccc@14", 3_000));
    let (body, _) = expect(&mut handle, "PATCH", &status_url, 200, node_object(None)).await;
    assert_eq!(body["status"]["revision"], "k8s:cccc@14");
    // Then the events API answers: the next event goes out.
    pending.send_response(
        Response::builder()
            .status(201)
            .body(Body::from(b"{}".to_vec()))
            .unwrap(),
    );
    let (event, _) = expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    assert!(
        event["note"].as_str().unwrap().contains("k8s:cccc@14"),
        "{event}"
    );
    no_request(&mut handle).await;
    assert_eq!(counts.of("status", "ok"), 2);
    assert_eq!(counts.of("event", "ok"), 2);
}

#[path = "report_owner_tests.rs"]
mod owner;
