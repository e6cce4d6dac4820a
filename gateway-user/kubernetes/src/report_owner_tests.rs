//! The node's `TollgateNode` owned by its `Node`: the ownerReference set at creation, added
//! to an object without it, and never holding up the status when the Node cannot be read or
//! the reference is refused. Apart from `report_tests.rs` for its length.
use super::*;

#[tokio::test(start_paused = true)]
async fn an_object_without_the_owner_reference_gets_it_by_one_apply_of_the_object() {
    let (w, mut handle, counts) = writer();
    let held = status("k8s:aaaa@12", 1_000);
    // Made by an older agent: no ownerReferences; its status is already the one to write.
    w.publish(status("k8s:aaaa@12", 5_000));
    expect(
        &mut handle,
        "GET",
        NODE_URL,
        200,
        node_object_owned_by(Some(&held), None),
    )
    .await;
    node_is_there(&mut handle).await;
    let (body, content_type) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}{APPLY_QUERY}"),
        200,
        node_object(Some(&held)),
    )
    .await;
    assert_eq!(content_type, "application/apply-patch+yaml");
    // The object itself (not /status), everything the agent's manager owns there (the empty
    // spec, else an apply would remove it), and no status.
    assert_eq!(body, object_apply(Some(NODE_UID)));
    // Once: the status is the same, nothing else is written.
    no_request(&mut handle).await;
    assert_eq!(counts.of("status", "ok"), 1);

    // A new revision is a status write as ever (the reference is not applied again).
    let next = status("k8s:bbbb@13", 6_000);
    w.publish(next.clone());
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}/status{APPLY_QUERY}"),
        200,
        node_object(Some(&next)),
    )
    .await;
    assert!(
        body.pointer("/metadata/ownerReferences").is_none(),
        "{body}"
    );
    expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    no_request(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn an_object_owned_by_a_node_of_the_same_name_since_recreated_gets_the_new_uid() {
    let (w, mut handle, _counts) = writer();
    let held = status("k8s:aaaa@12", 1_000);
    w.publish(held.clone());
    expect(
        &mut handle,
        "GET",
        NODE_URL,
        200,
        node_object_owned_by(Some(&held), Some("node-uid-0")),
    )
    .await;
    node_is_there(&mut handle).await;
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}{APPLY_QUERY}"),
        200,
        node_object(Some(&held)),
    )
    .await;
    assert_eq!(
        body["metadata"]["ownerReferences"],
        json!([owner(NODE_UID)]),
        "{body}"
    );
    no_request(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn without_a_node_the_object_is_created_unowned_and_owned_at_its_next_creation() {
    let (w, mut handle, counts) = writer();
    let first = status("k8s:aaaa@12", 1_000);
    w.publish(first.clone());
    expect(
        &mut handle,
        "GET",
        NODE_URL,
        404,
        api_status(404, "NotFound"),
    )
    .await;
    // A host without a Node of this name.
    expect_node_read(&mut handle, 404, api_status(404, "NotFound")).await;
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}{APPLY_QUERY}"),
        201,
        node_object_owned_by(None, None),
    )
    .await;
    assert_eq!(
        body,
        object_apply(None),
        "created without an ownerReference"
    );
    // The status is written all the same.
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}/status{APPLY_QUERY}"),
        200,
        node_object_owned_by(Some(&first), None),
    )
    .await;
    assert_eq!(body["status"]["revision"], "k8s:aaaa@12");
    expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    assert_eq!(counts.of("status", "ok"), 2);
    // Tried again on its own: 30 s later (still no Node), then 60 s after that (there now),
    // by one apply of the object; then nothing more.
    let since = tokio::time::Instant::now();
    expect_node_read(&mut handle, 404, api_status(404, "NotFound")).await;
    assert_eq!(since.elapsed(), OWNER_RETRY_FIRST);
    let since = tokio::time::Instant::now();
    node_is_there(&mut handle).await;
    assert_eq!(since.elapsed(), 2 * OWNER_RETRY_FIRST);
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}{APPLY_QUERY}"),
        200,
        node_object_owned_by(Some(&first), Some(NODE_UID)),
    )
    .await;
    assert_eq!(body, object_apply(Some(NODE_UID)));
    no_request(&mut handle).await;
    assert_eq!(counts.of("status", "ok"), 3);

    // Deleted behind the agent's back, and the Node is there now: created owned by it.
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
    expect(
        &mut handle,
        "PATCH",
        &status_url,
        200,
        node_object(Some(&second)),
    )
    .await;
    expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    no_request(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_node_that_cannot_be_read_leaves_an_existing_object_as_it_is() {
    let (w, mut handle, counts) = writer();
    let held = status("k8s:aaaa@12", 1_000);
    let next = status("k8s:bbbb@13", 2_000);
    w.publish(next.clone());
    expect(
        &mut handle,
        "GET",
        NODE_URL,
        200,
        node_object_owned_by(Some(&held), None),
    )
    .await;
    expect_node_read(&mut handle, 403, api_status(403, "Forbidden")).await;
    // No apply of the object: straight to the status.
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}/status{APPLY_QUERY}"),
        200,
        node_object_owned_by(Some(&next), None),
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
    assert_eq!(counts.of("status", "ok"), 1);
    assert_eq!(
        counts.of("status", "forbidden"),
        0,
        "the Node's read is no write"
    );
    // RBAC still propagating at install: the Node is read again 30 s later, and once it can
    // be, the object gets its reference, the status untouched.
    let since = tokio::time::Instant::now();
    expect_node_read(&mut handle, 403, api_status(403, "Forbidden")).await;
    assert_eq!(since.elapsed(), OWNER_RETRY_FIRST);
    node_is_there(&mut handle).await;
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}{APPLY_QUERY}"),
        200,
        node_object_owned_by(Some(&next), Some(NODE_UID)),
    )
    .await;
    assert_eq!(body, object_apply(Some(NODE_UID)));
    no_request(&mut handle).await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_owner_reference_never_holds_up_the_object_or_its_status() {
    // At creation (an admission plugin that wants `delete` to set an ownerReference): created
    // again at once, without it.
    let (w, mut handle, counts) = writer();
    let first = status("k8s:aaaa@12", 1_000);
    w.publish(first.clone());
    expect(
        &mut handle,
        "GET",
        NODE_URL,
        404,
        api_status(404, "NotFound"),
    )
    .await;
    node_is_there(&mut handle).await;
    let create_url = format!("{NODE_URL}{APPLY_QUERY}");
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &create_url,
        403,
        api_status(403, "Forbidden"),
    )
    .await;
    assert_eq!(body, object_apply(Some(NODE_UID)));
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &create_url,
        201,
        node_object_owned_by(None, None),
    )
    .await;
    assert_eq!(body, object_apply(None));
    let before = tokio::time::Instant::now();
    expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}/status{APPLY_QUERY}"),
        200,
        node_object_owned_by(Some(&first), None),
    )
    .await;
    assert_eq!(before.elapsed(), Duration::ZERO, "no backoff");
    expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    assert_eq!(counts.of("status", "forbidden"), 1);
    assert_eq!(counts.of("status", "ok"), 2);
    // Tried again later, refused again: the wait doubles.
    let since = tokio::time::Instant::now();
    node_is_there(&mut handle).await;
    assert_eq!(since.elapsed(), OWNER_RETRY_FIRST);
    expect(
        &mut handle,
        "PATCH",
        &create_url,
        403,
        api_status(403, "Forbidden"),
    )
    .await;
    let since = tokio::time::Instant::now();
    node_is_there(&mut handle).await;
    assert_eq!(since.elapsed(), 2 * OWNER_RETRY_FIRST);
    drop(w);

    // On an existing object: the status goes on, the reference is tried again later.
    let (w, mut handle, counts) = writer();
    let held = status("k8s:aaaa@12", 1_000);
    let next = status("k8s:bbbb@13", 2_000);
    w.publish(next.clone());
    expect(
        &mut handle,
        "GET",
        NODE_URL,
        200,
        node_object_owned_by(Some(&held), None),
    )
    .await;
    node_is_there(&mut handle).await;
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &create_url,
        500,
        api_status(500, "InternalError"),
    )
    .await;
    assert_eq!(body, object_apply(Some(NODE_UID)));
    let before = tokio::time::Instant::now();
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}/status{APPLY_QUERY}"),
        200,
        node_object_owned_by(Some(&next), None),
    )
    .await;
    assert_eq!(before.elapsed(), Duration::ZERO, "no backoff");
    assert_eq!(body["status"]["revision"], "k8s:bbbb@13");
    expect(
        &mut handle,
        "POST",
        &format!("{EVENTS_URL}?"),
        201,
        json!({}),
    )
    .await;
    assert_eq!(counts.of("status", "error"), 1);
    assert_eq!(counts.of("status", "ok"), 1);
    node_is_there(&mut handle).await;
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &create_url,
        200,
        node_object_owned_by(Some(&next), Some(NODE_UID)),
    )
    .await;
    assert_eq!(body, object_apply(Some(NODE_UID)));
    no_request(&mut handle).await;
    assert_eq!(counts.of("status", "ok"), 2);
}

#[tokio::test(start_paused = true)]
async fn an_agent_outliving_its_node_does_not_create_its_object_again_until_the_node_returns() {
    let (w, mut handle, counts) = writer();
    let first = status("k8s:aaaa@12", 1_000);
    w.publish(first.clone());
    expect(
        &mut handle,
        "GET",
        NODE_URL,
        200,
        node_object_owned_by(Some(&first), Some(NODE_UID)),
    )
    .await;
    node_is_there(&mut handle).await;
    no_request(&mut handle).await;

    // The Node is deleted, and its TollgateNode with it by the garbage collector; the agent
    // runs on (a node being decommissioned) and has a new status.
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
    // Each try reads the object and the Node, and creates nothing while the Node is gone
    // (the next request is the next try's read, never an apply of the object).
    for _ in 0..3 {
        expect(
            &mut handle,
            "GET",
            NODE_URL,
            404,
            api_status(404, "NotFound"),
        )
        .await;
        expect_node_read(&mut handle, 404, api_status(404, "NotFound")).await;
    }
    // A Node of this name again (a new uid): the object is created, owned by it.
    expect(
        &mut handle,
        "GET",
        NODE_URL,
        404,
        api_status(404, "NotFound"),
    )
    .await;
    expect_node_read(&mut handle, 200, kube_node("node-uid-2")).await;
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &format!("{NODE_URL}{APPLY_QUERY}"),
        201,
        node_object_owned_by(None, Some("node-uid-2")),
    )
    .await;
    assert_eq!(body, object_apply(Some("node-uid-2")));
    let (body, _) = expect(
        &mut handle,
        "PATCH",
        &status_url,
        200,
        node_object_owned_by(Some(&second), Some("node-uid-2")),
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
    // The status write that found the object gone is the one error counted: the tries that
    // created nothing wrote nothing.
    assert_eq!(counts.of("status", "error"), 1);
}
