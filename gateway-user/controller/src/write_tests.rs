//! The writes against kube's mocked API server (tower-test, ApiServerVerifier style): for each
//! request the URL, method, content type, field manager and body; then the answer.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::{Request, Response};
use kube::api::ApiResource;
use kube::client::Body;
use serde_json::{json, Map, Value};
use tollgate_model::gateway::Gateway;
use tollgate_model::route::HTTPRoute;
use tower_test::mock::Handle;

use super::*;
use crate::desired::{condition, Desired, ObjectKey, Plan};
use crate::CONTROLLER_NAME;

type Mock = Handle<Request<Body>, Response<Body>>;

fn writer() -> (StatusWriter, Mock) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let kinds = vec![
        (ApiResource::erase::<Gateway>(&()), true),
        (ApiResource::erase::<HTTPRoute>(&()), true),
    ];
    (StatusWriter::new(client, kinds, Metrics::default()), handle)
}

/// The next request: method, path and query, content type, body.
async fn next(
    handle: &mut Mock,
) -> (
    String,
    String,
    String,
    Value,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .expect("a request within 5 s")
        .expect("the service is open");
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let content_type = request
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, uri, content_type, body, send)
}

fn answer(send: tower_test::mock::SendResponse<Response<Body>>, code: u16, body: Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn gateway_plan() -> Desired {
    let mut fields = Map::new();
    fields.insert(
        "conditions".into(),
        json!([condition("Accepted", true, "Accepted", "ok", Some(2))]),
    );
    Desired {
        key: ObjectKey::namespaced("Gateway", "ns", "edge"),
        plan: Plan::Owned(fields),
    }
}

fn route_plan(generation: i64) -> Desired {
    Desired {
        key: ObjectKey::namespaced("HTTPRoute", "ns", "r"),
        plan: Plan::Shared {
            list: "parents",
            ref_field: "parentRef",
            entries: vec![json!({
                "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "ns", "name": "edge"},
                "controllerName": CONTROLLER_NAME,
                "conditions": [condition("Accepted", true, "Accepted", "ok", Some(generation))],
            })],
        },
    }
}

fn theirs() -> Value {
    json!({"parentRef": {"name": "other-gw"}, "controllerName": "example.com/other",
           "conditions": [{"type": "Accepted", "status": "True"}]})
}

fn object(kind: &str, rv: &str, status: Value) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": kind,
           "metadata": {"name": if kind == "Gateway" {"edge"} else {"r"}, "namespace": "ns", "resourceVersion": rv},
           "status": status})
}

fn current(
    key: &ObjectKey,
    rv: &str,
    status: Option<Value>,
) -> BTreeMap<ObjectKey, (String, Option<Value>)> {
    [(key.clone(), (rv.to_owned(), status))].into()
}

#[tokio::test]
async fn a_gateway_status_is_applied_to_its_status_subresource_by_the_controller() {
    let (mut w, mut handle) = writer();
    let plan = gateway_plan();
    let now = current(&plan.key, "5", None);
    let server = tokio::spawn(async move {
        let (method, uri, content_type, body, send) = next(&mut handle).await;
        assert_eq!(method, "PATCH");
        let (path, query) = uri.split_once('?').unwrap();
        assert_eq!(
            path,
            "/apis/gateway.networking.k8s.io/v1/namespaces/ns/gateways/edge/status"
        );
        assert!(
            query.contains("fieldManager=tollgate-controller"),
            "{query}"
        );
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(content_type, "application/apply-patch+yaml");
        assert_eq!(body["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(body["kind"], "Gateway");
        assert_eq!(body["metadata"], json!({"name": "edge", "namespace": "ns"}));
        let c = &body["status"]["conditions"][0];
        assert_eq!(
            (&c["type"], &c["status"], &c["observedGeneration"]),
            (&json!("Accepted"), &json!("True"), &json!(2))
        );
        assert!(
            c["lastTransitionTime"].as_str().unwrap().ends_with('Z'),
            "{c}"
        );
        answer(send, 200, object("Gateway", "6", body["status"].clone()));
        handle
    });
    let due = w.round(&[plan], &now, &|| true).await;
    assert_eq!(due, None);
    server.await.unwrap();
}

#[tokio::test]
async fn a_backend_status_is_applied_to_its_status_subresource_with_the_written_resources() {
    // The writer as the controller builds it: a resource for every kind it writes.
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let resources = crate::cache::written_resources();
    let mut kinds: Vec<&str> = resources.iter().map(|(r, _)| r.kind.as_str()).collect();
    kinds.sort_unstable();
    let mut written = crate::cache::WRITTEN_KINDS.to_vec();
    written.sort_unstable();
    assert_eq!(kinds, written);
    let mut w = StatusWriter::new(client, resources, Metrics::default());
    let mut fields = Map::new();
    fields.insert(
        "conditions".into(),
        json!([condition("Accepted", true, "Accepted", "ok", Some(3))]),
    );
    let plan = Desired {
        key: ObjectKey::namespaced("Backend", "ns", "app"),
        plan: Plan::Owned(fields),
    };
    let now = current(&plan.key, "5", None);
    let server = tokio::spawn(async move {
        let (method, uri, content_type, body, send) = next(&mut handle).await;
        assert_eq!(method, "PATCH");
        let (path, query) = uri.split_once('?').unwrap();
        assert_eq!(
            path,
            "/apis/tollgate.dev/v1alpha1/namespaces/ns/backends/app/status"
        );
        assert!(
            query.contains("fieldManager=tollgate-controller"),
            "{query}"
        );
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(content_type, "application/apply-patch+yaml");
        assert_eq!(body["apiVersion"], "tollgate.dev/v1alpha1");
        assert_eq!(body["kind"], "Backend");
        assert_eq!(body["metadata"], json!({"name": "app", "namespace": "ns"}));
        let c = &body["status"]["conditions"][0];
        assert_eq!(
            (&c["type"], &c["status"], &c["observedGeneration"]),
            (&json!("Accepted"), &json!("True"), &json!(3))
        );
        let mut answer_body = object("Backend", "6", body["status"].clone());
        answer_body["apiVersion"] = "tollgate.dev/v1alpha1".into();
        answer_body["metadata"]["name"] = "app".into();
        answer(send, 200, answer_body);
        handle
    });
    let due = w.round(&[plan], &now, &|| true).await;
    assert_eq!(due, None);
    server.await.unwrap();
    assert_eq!(
        w.metrics
            .writes
            .get_or_create(&KindLabel {
                kind: "Backend".into()
            })
            .get(),
        1
    );
}

#[tokio::test]
async fn a_route_status_keeps_other_controllers_entries_and_is_merged_again_after_a_conflict() {
    let (mut w, mut handle) = writer();
    let plan = route_plan(3);
    let now = current(&plan.key, "7", Some(json!({"parents": [theirs()]})));
    let server = tokio::spawn(async move {
        let (method, uri, content_type, body, send) = next(&mut handle).await;
        assert_eq!(method, "PATCH");
        let (path, query) = uri.split_once('?').unwrap();
        assert_eq!(
            path,
            "/apis/gateway.networking.k8s.io/v1/namespaces/ns/httproutes/r/status"
        );
        assert!(
            query.contains("fieldManager=tollgate-controller"),
            "{query}"
        );
        assert!(!query.contains("force"), "{query}");
        assert_eq!(content_type, "application/merge-patch+json");
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        let parents = body["status"]["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0], theirs());
        assert_eq!(parents[1]["controllerName"], CONTROLLER_NAME);
        // Someone else wrote in between.
        answer(
            send,
            409,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": "Conflict", "code": 409, "message": "the object has been modified"}),
        );
        let (method, uri, _, _, send) = next(&mut handle).await;
        assert_eq!(
            (method.as_str(), uri.as_str()),
            (
                "GET",
                "/apis/gateway.networking.k8s.io/v1/namespaces/ns/httproutes/r"
            )
        );
        let newer = json!({"parentRef": {"name": "third"}, "controllerName": "example.com/third", "conditions": []});
        answer(
            send,
            200,
            object(
                "HTTPRoute",
                "9",
                json!({"parents": [theirs(), newer.clone()]}),
            ),
        );
        let (method, _, _, body, send) = next(&mut handle).await;
        assert_eq!(method, "PATCH");
        assert_eq!(body["metadata"]["resourceVersion"], "9");
        let parents = body["status"]["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 3, "{body}");
        assert!(parents.contains(&newer) && parents.contains(&theirs()));
        answer(send, 200, object("HTTPRoute", "10", body["status"].clone()));
        handle
    });
    w.round(&[plan], &now, &|| true).await;
    server.await.unwrap();
    assert_eq!(
        w.metrics
            .writes
            .get_or_create(&KindLabel {
                kind: "HTTPRoute".into()
            })
            .get(),
        1
    );
}

#[tokio::test]
async fn an_object_is_written_at_most_once_per_interval_and_never_when_unchanged() {
    let (mut w, mut handle) = writer();
    let first = route_plan(1);
    let now = current(&first.key, "7", None);
    let server = tokio::spawn(async move {
        let (_, _, _, body, send) = next(&mut handle).await;
        answer(send, 200, object("HTTPRoute", "8", body["status"].clone()));
        handle
    });
    w.round(std::slice::from_ref(&first), &now, &|| true).await;
    let handle = server.await.unwrap();
    // The store has not seen our write yet (it still says rv 7, no status): what we wrote
    // counts, so the same plan writes nothing. A request would never be answered: the round
    // would not return.
    let due = tokio::time::timeout(
        Duration::from_secs(2),
        w.round(std::slice::from_ref(&first), &now, &|| true),
    )
    .await
    .expect("no request for an unchanged status");
    assert_eq!(due, None);
    // A new generation within the interval is put off, to be written at the end of it.
    let started = Instant::now();
    let due = tokio::time::timeout(
        Duration::from_secs(2),
        w.round(&[route_plan(2)], &now, &|| true),
    )
    .await
    .expect("no request within the interval")
    .expect("a due time");
    assert!(
        due > started + MIN_INTERVAL - Duration::from_secs(1) && due <= started + MIN_INTERVAL,
        "{:?}",
        due - started
    );
    assert_eq!(w.metrics.deferred.get(), 1);
    drop(handle);
}

#[tokio::test]
async fn a_replica_that_does_not_lead_writes_nothing() {
    let (mut w, _handle) = writer();
    let plan = gateway_plan();
    let now = current(&plan.key, "5", None);
    let due = tokio::time::timeout(Duration::from_secs(2), w.round(&[plan], &now, &|| false))
        .await
        .expect("no request");
    assert_eq!(due, None);
}

#[tokio::test]
async fn a_failed_write_is_counted_and_retried_after_a_backoff() {
    let (mut w, mut handle) = writer();
    let plan = gateway_plan();
    let now = current(&plan.key, "5", None);
    let server = tokio::spawn(async move {
        let (_, _, _, _, send) = next(&mut handle).await;
        answer(
            send,
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "reason": "InternalError", "code": 500, "message": "etcd is sad"}),
        );
        handle
    });
    let started = Instant::now();
    let due = w
        .round(std::slice::from_ref(&plan), &now, &|| true)
        .await
        .expect("a retry time");
    server.await.unwrap();
    assert!(
        due >= started + FIRST_BACKOFF && due < started + FIRST_BACKOFF * 3,
        "{:?}",
        due - started
    );
    assert_eq!(
        w.metrics
            .errors
            .get_or_create(&KindLabel {
                kind: "Gateway".into()
            })
            .get(),
        1
    );
    // Before the backoff is over, nothing is tried.
    tokio::time::timeout(Duration::from_millis(500), w.round(&[plan], &now, &|| true))
        .await
        .expect("no request during the backoff");
}
