//! The desired statuses, through the real compiler (the agents' own).
use super::*;
use crate::outcome::compile;
use std::collections::BTreeSet;
use tollgate_model::{Documents, ParseCache};

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: tollgate, generation: 1 }\nspec:\n  controllerName: tollgate.dev/gateway-controller\n";
const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: edge, namespace: ns, generation: 2 }\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - { name: http, port: 8080, protocol: HTTP }\n    - { name: bad, port: 8081, protocol: UDP }\n";
const BACKEND: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: { name: app, namespace: ns }\nspec:\n  endpoints:\n    - ip: { address: 127.0.0.1, port: 9000 }\n";

/// The GatewayClass, the Gateway `edge` and the Backend `app`, then `more`: the cluster most
/// tests start from.
fn with_edge<const N: usize>(more: [String; N]) -> Vec<String> {
    [CLASS.to_owned(), GATEWAY.to_owned(), BACKEND.to_owned()]
        .into_iter()
        .chain(more)
        .collect()
}

fn route(name: &str, backend: &str, generation: i64) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: {name}, namespace: ns, generation: {generation} }}\nspec:\n  parentRefs: [{{ name: edge }}]\n  rules:\n    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: {backend} }}]\n")
}

fn grpc_route(name: &str, backend: &str, generation: i64, extra: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{ name: {name}, namespace: ns, generation: {generation} }}\nspec:\n  parentRefs: [{{ name: edge }}]\n{extra}  rules:\n    - backendRefs: [{{ group: tollgate.dev, kind: Backend, name: {backend} }}]\n")
}

fn limit(name: &str, target: &str) -> String {
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{ name: {name}, namespace: ns, generation: 1 }}\nspec:\n  targetRefs: [{{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: {target} }}]\n  limits:\n    - {{ key: clientIP, requests: 3, per: 1m }}\n")
}

/// Compiles the YAML objects as the controller does and returns every plan by object.
fn run(yaml: &[String], nodes: &[NodeView]) -> BTreeMap<String, Desired> {
    let (objects, outcome) = compiled(yaml);
    by_label(plans(&objects, &outcome, nodes))
}

fn by_label(plans: Vec<Desired>) -> BTreeMap<String, Desired> {
    plans.into_iter().map(|d| (d.key.label(), d)).collect()
}

/// The YAML objects as the controller's cache has them, and what they compile into.
fn compiled(yaml: &[String]) -> (BTreeMap<ObjectKey, ObjectView>, Outcome) {
    let mut files = Vec::new();
    let mut objects = BTreeMap::new();
    for text in yaml {
        let v: Value = serde_saphyr::from_str(text).unwrap();
        let kind = v["kind"].as_str().unwrap().to_owned();
        let ns = v["metadata"]["namespace"].as_str().map(str::to_owned);
        let name = v["metadata"]["name"].as_str().unwrap().to_owned();
        let key = ObjectKey {
            kind,
            namespace: ns,
            name,
        };
        // GatewayClasses too: the agents read them to know which Gateways are theirs.
        files.push((file_of(&key), text.clone()));
        objects.insert(
            key,
            ObjectView {
                generation: v["metadata"]["generation"].as_i64(),
                status_owned: v["metadata"]["annotations"]["test/status-owned"] == "true",
                object: v,
            },
        );
    }
    let inline: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let outcome = compile(&mut ParseCache::default(), &Documents::inline(&inline));
    (objects, outcome)
}

fn shared(d: &Desired) -> &Vec<Value> {
    match &d.plan {
        Plan::Shared { entries, .. } => entries,
        other => panic!("{other:?}"),
    }
}

/// The one entry of the route `key`'s `status.parents`: this controller's, for the Gateway `edge`.
fn only_parent<'a>(plans: &'a BTreeMap<String, Desired>, key: &str) -> &'a Value {
    let parents = shared(&plans[key]);
    assert_eq!(parents.len(), 1);
    let p = &parents[0];
    assert_eq!(p["controllerName"], CONTROLLER_NAME);
    assert_eq!(
        p["parentRef"],
        json!({"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": "ns", "name": "edge"})
    );
    p
}

fn owned(d: &Desired) -> &Map<String, Value> {
    match &d.plan {
        Plan::Owned(fields) => fields,
        other => panic!("{other:?}"),
    }
}

fn find<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} in {conditions}"))
}

/// The condition `type_` of `conditions`, after checking its status and reason.
fn assert_condition<'a>(
    conditions: &'a Value,
    type_: &str,
    status: &str,
    reason: &str,
) -> &'a Value {
    let c = find(conditions, type_);
    assert_eq!(
        (&c["status"], &c["reason"]),
        (&json!(status), &json!(reason)),
        "{c}"
    );
    c
}

/// Fails unless the message of condition `c` contains `part`.
fn assert_message(c: &Value, part: &str) {
    assert!(c["message"].as_str().unwrap().contains(part), "{c}");
}

fn node(name: &str, ready: bool, listeners: &[&str]) -> NodeView {
    NodeView {
        name: name.into(),
        ready,
        listeners: listeners.iter().map(|l| l.to_string()).collect(),
        refused: BTreeSet::new(),
        not_for_this_node: BTreeSet::new(),
    }
}

#[test]
fn a_route_is_accepted_with_resolved_refs_and_its_generation() {
    let nodes = [node("a", true, &["ns/edge/http"]), node("b", false, &[])];
    let plans = run(&with_edge([route("r", "app", 3)]), &nodes);
    let p = only_parent(&plans, "HTTPRoute/ns/r");
    let accepted = assert_condition(&p["conditions"], "Accepted", "True", "Accepted");
    assert_eq!(accepted["observedGeneration"], 3);
    assert_condition(&p["conditions"], "ResolvedRefs", "True", "ResolvedRefs");

    // The Gateway: accepted with one listener left out, programmed on 1 of 2 nodes.
    let gw = owned(&plans["Gateway/ns/edge"]);
    assert_condition(&gw["conditions"], "Accepted", "True", "ListenersNotValid");
    let programmed = find(&gw["conditions"], "Programmed");
    assert_eq!(programmed["status"], "True");
    assert_eq!(programmed["message"], "1/2 nodes programmed");
    assert_eq!(programmed["observedGeneration"], 2);
    let http = &gw["listeners"][0];
    assert_eq!(http["name"], "http");
    assert_eq!(http["attachedRoutes"], 1);
    assert_eq!(
        http["supportedKinds"],
        json!([{"group": GATEWAY_GROUP, "kind": "HTTPRoute"}, {"group": GATEWAY_GROUP, "kind": "GRPCRoute"}])
    );
    assert_eq!(find(&http["conditions"], "Accepted")["status"], "True");
    let bad = &gw["listeners"][1];
    assert_eq!(bad["attachedRoutes"], 0);
    assert_condition(
        &bad["conditions"],
        "Accepted",
        "False",
        "UnsupportedProtocol",
    );
    assert_eq!(find(&bad["conditions"], "Programmed")["status"], "False");
}

#[test]
fn a_broken_backend_ref_is_resolved_refs_false() {
    let plans = run(&with_edge([route("r", "missing", 1)]), &[]);
    let p = &shared(&plans["HTTPRoute/ns/r"])[0];
    assert_eq!(find(&p["conditions"], "Accepted")["status"], "True");
    let resolved = assert_condition(&p["conditions"], "ResolvedRefs", "False", "BackendNotFound");
    assert_message(resolved, "missing");
    // No node programs the Gateway: Programmed=False, "0/0".
    let gw = owned(&plans["Gateway/ns/edge"]);
    let programmed = find(&gw["conditions"], "Programmed");
    assert_eq!(
        (&programmed["status"], &programmed["message"]),
        (&json!("False"), &json!("0/0 nodes programmed"))
    );
}

#[test]
fn a_policy_names_the_gateways_of_its_routes_as_ancestors() {
    let plans = run(
        &with_edge([
            route("r", "app", 1),
            limit("ok", "r"),
            limit("lost", "nope"),
        ]),
        &[],
    );
    let ok = shared(&plans["RateLimitPolicy/ns/ok"]);
    assert_eq!(ok.len(), 1);
    assert_eq!(
        ok[0]["ancestorRef"],
        json!({"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": "ns", "name": "edge"})
    );
    assert_eq!(ok[0]["controllerName"], CONTROLLER_NAME);
    let accepted = assert_condition(&ok[0]["conditions"], "Accepted", "True", "Accepted");
    assert_eq!(accepted["observedGeneration"], 1);
    let lost = shared(&plans["RateLimitPolicy/ns/lost"]);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0]["ancestorRef"]["kind"], "HTTPRoute");
    assert_eq!(lost[0]["ancestorRef"]["name"], "nope");
    assert_eq!(
        find(&lost[0]["conditions"], "Accepted")["reason"],
        "TargetNotFound"
    );
}

#[test]
fn a_policy_has_one_entry_per_ancestor_and_says_no_false_does_not_exist() {
    // GEP-713: ancestors are a map keyed by (ancestorRef, controllerName). A policy that
    // targets a route on `edge` and `edge` itself (a kind policies do not target) gets one
    // entry for `edge`; a route that exists but is on another class's Gateway gets none of
    // ours (not "does not exist").
    let other_class = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: other }\nspec:\n  controllerName: example.com/other\n".to_owned();
    let foreign = GATEWAY
        .replace("name: edge", "name: foreign")
        .replace("gatewayClassName: tollgate", "gatewayClassName: other")
        .replace("port: 8080", "port: 9080")
        .replace("port: 8081", "port: 9081");
    let both = limit("both", "r").replace(
        "targetRefs: [",
        "targetRefs: [{ group: gateway.networking.k8s.io, kind: Gateway, name: edge }, ",
    );
    let plans = run(
        &with_edge([
            other_class,
            foreign,
            route("r", "app", 1),
            route("elsewhere", "app", 1).replace("[{ name: edge }]", "[{ name: foreign }]"),
            both,
            limit("away", "elsewhere"),
        ]),
        &[],
    );
    let both = shared(&plans["RateLimitPolicy/ns/both"]);
    assert_eq!(both.len(), 1, "{both:#?}");
    assert_eq!(both[0]["ancestorRef"]["kind"], "Gateway");
    // Targeting a Gateway leaves the policy out: its one entry says why, not "does not exist".
    let accepted = find(&both[0]["conditions"], "Accepted");
    assert_eq!(accepted["status"], "False");
    assert!(
        !accepted["message"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{accepted}"
    );
    assert!(shared(&plans["RateLimitPolicy/ns/away"]).is_empty());
}

#[test]
fn an_l4_policy_counts_the_ready_nodes_that_do_not_refuse_it() {
    let edge = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge, generation: 4 }\nspec:\n  defaultAction: allow\n  rules: []\n".to_owned();
    let mut refusing = node("c", true, &[]);
    refusing
        .refused
        .insert(("L4Policy".into(), String::new(), "edge".into()));
    let nodes = [node("a", true, &[]), node("b", false, &[]), refusing];
    let plans = run(&[edge], &nodes);
    let s = owned(&plans["L4Policy/edge"]);
    assert_eq!(s["observedGeneration"], 4);
    assert_eq!(s["nodesSelected"], 3);
    assert_eq!(s["nodesEnforcing"], 1);
    assert_eq!(find(&s["conditions"], "Accepted")["status"], "True");
    let programmed = find(&s["conditions"], "Programmed");
    assert_eq!(
        (&programmed["status"], &programmed["message"]),
        (&json!("False"), &json!("1/3 nodes enforce it"))
    );

    let broken = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge, generation: 5 }\nspec:\n  defaultAction: sometimes\n  rules: []\n".to_owned();
    let plans = run(&[broken], &[]);
    let accepted = assert_condition(
        &owned(&plans["L4Policy/edge"])["conditions"],
        "Accepted",
        "False",
        "Invalid",
    );
    assert_message(accepted, "defaultAction");
}

#[test]
fn an_l4_policy_counts_only_the_nodes_its_node_selector_selects() {
    let edge = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge, generation: 2 }\nspec:\n  nodeSelector: { matchLabels: { zone: a } }\n  defaultAction: allow\n  rules: []\n".to_owned();
    // Nodes b and c report it not selected; a (ready) enforces it.
    let mut nodes = [
        node("a", true, &[]),
        node("b", true, &[]),
        node("c", false, &[]),
    ];
    for n in &mut nodes[1..] {
        n.not_for_this_node.insert("edge".into());
    }
    let plans = run(std::slice::from_ref(&edge), &nodes);
    let s = owned(&plans["L4Policy/edge"]);
    assert_eq!(s["nodesSelected"], 1);
    assert_eq!(s["nodesEnforcing"], 1);
    let programmed = find(&s["conditions"], "Programmed");
    assert_eq!(
        (&programmed["status"], &programmed["message"]),
        (
            &json!("True"),
            &json!("1/1 nodes enforce it (2 of 3 nodes are not selected by its nodeSelector)")
        )
    );
    // A selected node that is not ready yet: pending.
    nodes[0].ready = false;
    let plans = run(&[edge], &nodes);
    let s = owned(&plans["L4Policy/edge"]);
    assert_eq!(
        (&s["nodesSelected"], &s["nodesEnforcing"]),
        (&json!(1), &json!(0))
    );
    assert_eq!(find(&s["conditions"], "Programmed")["status"], "False");
}

#[test]
fn a_node_view_reads_not_for_this_node() {
    let n = NodeView::of("a", Some(&json!({"notForThisNode": ["edge", "gpu"]})));
    assert!(!n.selects("edge") && !n.selects("gpu") && n.selects("other"));
}

#[test]
fn only_gateways_of_a_class_naming_this_controller_get_status_and_route_entries() {
    let other_class = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: other }\nspec:\n  controllerName: example.com/other\n";
    let foreign = GATEWAY
        .replace("name: edge", "name: foreign")
        .replace("gatewayClassName: tollgate", "gatewayClassName: other")
        .replace("port: 8080", "port: 9080")
        .replace("port: 8081", "port: 9081");
    let both = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: both, namespace: ns, generation: 1 }\nspec:\n  parentRefs: [{ name: edge }, { name: foreign }]\n  rules:\n    - backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }]\n";
    let plans = run(
        &[
            CLASS.into(),
            other_class.into(),
            GATEWAY.into(),
            foreign,
            BACKEND.into(),
            both.into(),
            limit("l", "both"),
        ],
        &[],
    );
    assert!(plans.contains_key("Gateway/ns/edge"));
    assert!(
        !plans.contains_key("Gateway/ns/foreign"),
        "{:?}",
        plans.keys()
    );
    assert!(!plans.contains_key("GatewayClass/other"));
    let accepted = find(
        &owned(&plans["GatewayClass/tollgate"])["conditions"],
        "Accepted",
    )
    .clone();
    assert_eq!(
        (&accepted["status"], &accepted["observedGeneration"]),
        (&json!("True"), &json!(1))
    );
    let parents = shared(&plans["HTTPRoute/ns/both"]);
    assert_eq!(parents.len(), 1, "{parents:?}");
    assert_eq!(parents[0]["parentRef"]["name"], "edge");
    let ancestors = shared(&plans["RateLimitPolicy/ns/l"]);
    assert_eq!(ancestors.len(), 1, "{ancestors:?}");
    assert_eq!(ancestors[0]["ancestorRef"]["name"], "edge");

    // A route that names only the other class's Gateway (say, moved there) gets a plan with
    // no entry of ours: the one written while it named ours is removed by the merge.
    let moved = both.replace("[{ name: edge }, { name: foreign }]", "[{ name: foreign }]");
    let plans = run(
        &[
            CLASS.into(),
            other_class.into(),
            GATEWAY.into(),
            GATEWAY
                .replace("name: edge", "name: foreign")
                .replace("gatewayClassName: tollgate", "gatewayClassName: other")
                .replace("port: 8080", "port: 9080")
                .replace("port: 8081", "port: 9081"),
            BACKEND.into(),
            moved,
        ],
        &[],
    );
    assert!(shared(&plans["HTTPRoute/ns/both"]).is_empty());
    let stale = json!({"parents": [
        {"parentRef": {"name": "edge"}, "controllerName": crate::CONTROLLER_NAME, "conditions": []},
        {"parentRef": {"name": "foreign"}, "controllerName": "example.com/other", "conditions": []},
    ]});
    let merged = crate::merge::merge(&plans["HTTPRoute/ns/both"].plan, Some(&stale), "now")
        .expect("our stale entry is removed");
    assert_eq!(
        merged["parents"],
        json!([{"parentRef": {"name": "foreign"}, "controllerName": "example.com/other", "conditions": []}])
    );
}

#[test]
fn a_listener_whose_client_ca_cannot_be_read_reports_invalid_ca_certificate_ref() {
    // As the compiler reports a client CA ConfigMap the Kubernetes source could not resolve:
    // on each listener it covers, the frontend field named in the message.
    let problems = vec![(
        String::new(),
        "listener left out, the Gateway's other listeners serve: spec.tls.frontend.default.validation.caCertificateRefs[0]: ConfigMap edge/ca does not exist (it must hold \"ca.crt\"): the listener is not served without the client certificate validation that field names".to_owned(),
    )];
    let c = Value::Array(listener_conditions(
        Some(&problems),
        &[],
        false,
        false,
        "0 of 1 nodes",
        Some(1),
    ));
    assert_condition(&c, "ResolvedRefs", "False", "InvalidCACertificateRef");
    assert_condition(&c, "Accepted", "False", "NoValidCACertificate");
    assert_eq!(find(&c, "Programmed")["status"], json!("False"));
}

#[test]
fn a_grpcroute_gets_its_parents_status_as_an_httproute_does() {
    let plans = run(
        &with_edge([
            grpc_route("g", "app", 4, ""),
            grpc_route("broken", "missing", 2, ""),
            // Left out before the compiler: an unknown field.
            grpc_route(
                "unknown",
                "app",
                7,
                "  sessionPersistence: { type: Cookie }\n",
            ),
        ]),
        &[],
    );
    let p = only_parent(&plans, "GRPCRoute/ns/g");
    for (type_, reason) in [("Accepted", "Accepted"), ("ResolvedRefs", "ResolvedRefs")] {
        let c = assert_condition(&p["conditions"], type_, "True", reason);
        assert_eq!(c["observedGeneration"], 4);
    }
    let p = &shared(&plans["GRPCRoute/ns/broken"])[0];
    assert_eq!(find(&p["conditions"], "Accepted")["status"], "True");
    let resolved = assert_condition(&p["conditions"], "ResolvedRefs", "False", "BackendNotFound");
    assert_eq!(resolved["observedGeneration"], 2);
    let p = &shared(&plans["GRPCRoute/ns/unknown"])[0];
    let accepted = assert_condition(&p["conditions"], "Accepted", "False", "UnsupportedValue");
    assert_message(accepted, "sessionPersistence");
    assert_eq!(accepted["observedGeneration"], 7);
    // The Gateway counts both attached routes on its listener (the left-out one is none).
    let gw = owned(&plans["Gateway/ns/edge"]);
    assert_eq!(gw["listeners"][0]["attachedRoutes"], 2);
}

#[test]
fn an_httproute_and_a_grpcroute_on_one_listener_the_younger_is_conflicted() {
    let stamp = |doc: String, ts: &str| {
        doc.replacen(
            ", generation:",
            &format!(", creationTimestamp: '{ts}', generation:"),
            1,
        )
    };
    let plans = run(
        &with_edge([
            stamp(route("web", "app", 1), "2026-01-02T00:00:00Z"),
            stamp(grpc_route("api", "app", 1, ""), "2026-01-01T00:00:00Z"),
        ]),
        &[],
    );
    let g = &shared(&plans["GRPCRoute/ns/api"])[0];
    assert_eq!(find(&g["conditions"], "Accepted")["status"], "True");
    let h = &shared(&plans["HTTPRoute/ns/web"])[0];
    let accepted = assert_condition(&h["conditions"], "Accepted", "False", "Conflicted");
    assert_message(accepted, "GRPCRoute ns/api");
}

#[test]
fn supported_kinds_follow_allowed_routes_kinds() {
    let only_grpc = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, allowedRoutes: { kinds: [{ kind: GRPCRoute }, { group: gateway.networking.k8s.io, kind: GRPCRoute }] } }",
    );
    let plans = run(
        &[
            CLASS.into(),
            only_grpc,
            BACKEND.into(),
            route("web", "app", 1),
            grpc_route("api", "app", 1, ""),
        ],
        &[],
    );
    let gw = owned(&plans["Gateway/ns/edge"]);
    assert_eq!(
        gw["listeners"][0]["supportedKinds"],
        json!([{"group": GATEWAY_GROUP, "kind": "GRPCRoute"}])
    );
    // The UDP listener takes no route kind.
    assert_eq!(gw["listeners"][1]["supportedKinds"], json!([]));
    assert_eq!(gw["listeners"][0]["attachedRoutes"], 1);
    let h = &shared(&plans["HTTPRoute/ns/web"])[0];
    assert_eq!(
        find(&h["conditions"], "Accepted")["reason"],
        "NotAllowedByListeners"
    );
    let g = &shared(&plans["GRPCRoute/ns/api"])[0];
    assert_eq!(find(&g["conditions"], "Accepted")["status"], "True");
}

#[test]
fn a_class_with_parameters_is_not_accepted_invalid_parameters() {
    let with_parameters =
        format!("{CLASS}  parametersRef: {{ group: example.com, kind: Config, name: x }}\n");
    let plans = run(&[with_parameters, GATEWAY.into()], &[]);
    let accepted = assert_condition(
        &owned(&plans["GatewayClass/tollgate"])["conditions"],
        "Accepted",
        "False",
        "InvalidParameters",
    );
    assert_message(accepted, "spec.parametersRef");
    assert_eq!(accepted["observedGeneration"], 1);
    // Its Gateways are left out with it.
    let gw = owned(&plans["Gateway/ns/edge"]);
    assert_eq!(find(&gw["conditions"], "Accepted")["status"], "False");
}

#[test]
fn a_certificate_in_another_namespace_without_a_grant_is_ref_not_permitted() {
    let gateway = GATEWAY.replace(
        "{ name: bad, port: 8081, protocol: UDP }",
        "{ name: https, port: 8443, protocol: HTTPS, tls: { certificateRefs: [{ name: cert, namespace: certs }] } }",
    );
    let plans = run(&[CLASS.into(), gateway, BACKEND.into()], &[]);
    let gw = owned(&plans["Gateway/ns/edge"]);
    let https = &gw["listeners"][1];
    assert_eq!(https["name"], "https");
    let resolved = assert_condition(
        &https["conditions"],
        "ResolvedRefs",
        "False",
        "RefNotPermitted",
    );
    assert_message(resolved, "no ReferenceGrant in namespace certs");
    assert_eq!(find(&https["conditions"], "Accepted")["status"], "False");
    assert_eq!(find(&https["conditions"], "Programmed")["status"], "False");
}

#[test]
fn a_listener_with_valid_and_invalid_route_kinds_serves_the_valid_ones() {
    let mixed = GATEWAY.replace(
        "protocol: HTTP }",
        "protocol: HTTP, allowedRoutes: { kinds: [{ kind: HTTPRoute }, { kind: TCPRoute }] } }",
    );
    let nodes = [node("a", true, &["ns/edge/http"])];
    let plans = run(
        &[CLASS.into(), mixed, BACKEND.into(), route("r", "app", 1)],
        &nodes,
    );
    let gw = owned(&plans["Gateway/ns/edge"]);
    let http = &gw["listeners"][0];
    assert_eq!(
        http["supportedKinds"],
        json!([{"group": GATEWAY_GROUP, "kind": "HTTPRoute"}])
    );
    assert_eq!(http["attachedRoutes"], 1);
    assert_condition(&http["conditions"], "Accepted", "True", "Accepted");
    let resolved = assert_condition(
        &http["conditions"],
        "ResolvedRefs",
        "False",
        "InvalidRouteKinds",
    );
    assert_message(resolved, "TCPRoute");
    assert_condition(&http["conditions"], "Programmed", "True", "Programmed");
    // Only the UDP listener is left out.
    assert_condition(&gw["conditions"], "Accepted", "True", "ListenersNotValid");
    assert_message(find(&gw["conditions"], "Accepted"), "1 of 2 listeners");
    let p = only_parent(&plans, "HTTPRoute/ns/r");
    assert_condition(&p["conditions"], "Accepted", "True", "Accepted");
}

/// A Backend with generation `generation` and the endpoints `endpoints` (YAML flow items).
fn backend_with(name: &str, generation: i64, endpoints: &[&str]) -> String {
    let endpoints: String = endpoints.iter().map(|e| format!("    - {e}\n")).collect();
    format!("apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name}, namespace: ns, generation: {generation} }}\nspec:\n  endpoints:\n{endpoints}")
}

#[test]
fn a_backend_is_accepted_unless_the_compiler_leaves_it_out() {
    let yaml = [
        CLASS.to_owned(),
        GATEWAY.to_owned(),
        backend_with("app", 2, &["ip: { address: 127.0.0.1, port: 9000 }"]),
        // Port 0 and an address that is no IP: the compiler leaves this Backend out.
        backend_with(
            "bad",
            5,
            &[
                "ip: { address: 127.0.0.1, port: 0 }",
                "ip: { address: not-an-ip, port: 80 }",
            ],
        ),
        format!(
            "{}  colour: blue\n",
            backend_with("odd", 6, &["ip: { address: 127.0.0.1, port: 9001 }"])
        ),
        route("r", "app", 1),
        route("s", "bad", 1),
        limit("l", "r"),
    ];
    let (objects, outcome) = compiled(&yaml);
    let plans = by_label(plans(&objects, &outcome, &[]));

    let app = owned(&plans["Backend/ns/app"]);
    assert_eq!(app.len(), 1, "{app:?}");
    let accepted = assert_condition(&app["conditions"], "Accepted", "True", "Accepted");
    assert_eq!(accepted["observedGeneration"], 2);
    assert!(accepted.get("lastTransitionTime").is_none(), "{accepted}");

    let bad = owned(&plans["Backend/ns/bad"]);
    assert_eq!(bad["conditions"].as_array().unwrap().len(), 1, "{bad:?}");
    let refused = assert_condition(&bad["conditions"], "Accepted", "False", "Invalid");
    assert_eq!(refused["observedGeneration"], 5);
    assert_message(refused, "left out of the revision: ");
    assert_message(
        refused,
        "spec.endpoints[0].ip.port: port 0 is out of range 1-65535",
    );
    assert_message(refused, "spec.endpoints[1].ip.address");
    // Left out by the parse (a field the kind does not have): the same condition.
    let odd = assert_condition(
        &owned(&plans["Backend/ns/odd"])["conditions"],
        "Accepted",
        "False",
        "Invalid",
    );
    assert_eq!(odd["observedGeneration"], 6);
    assert_message(odd, "colour");

    // The other objects' statuses are what they are without the Backends' (the routes to the
    // left-out Backend are the routes' to report, as before).
    let without: BTreeMap<ObjectKey, ObjectView> = objects
        .iter()
        .filter(|(k, _)| k.kind != "Backend")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let others = by_label(super::plans(&without, &outcome, &[]));
    let backends: Vec<&String> = plans.keys().filter(|k| !others.contains_key(*k)).collect();
    assert_eq!(
        backends,
        ["Backend/ns/app", "Backend/ns/bad", "Backend/ns/odd"]
    );
    for (label, d) in &others {
        assert_eq!(&plans[label], d, "{label}");
    }
    let s = &shared(&plans["HTTPRoute/ns/s"])[0];
    assert_eq!(find(&s["conditions"], "ResolvedRefs")["status"], "False");
}

#[test]
fn a_revision_that_cannot_be_read_leaves_a_backends_status_as_it_is() {
    // An L4Policy that does not parse refuses the whole revision: no L7 status is written.
    let broken = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge }\nspec:\n  defaultAction: sometimes\n  rules: []\n";
    let plans = run(&with_edge([broken.to_owned()]), &[]);
    assert!(plans.contains_key("L4Policy/edge"), "{:?}", plans.keys());
    assert!(!plans.contains_key("Backend/ns/app"), "{:?}", plans.keys());
    assert!(!plans.contains_key("Gateway/ns/edge"), "{:?}", plans.keys());
}

#[test]
fn a_gateway_that_left_the_class_gets_its_status_released_when_ours_is_there() {
    let other_class = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: other }\nspec:\n  controllerName: example.com/other\n";
    let moved = |owned: bool| {
        let annotation = if owned {
            ", annotations: { test/status-owned: 'true' }"
        } else {
            ""
        };
        GATEWAY
            .replace("gatewayClassName: tollgate", "gatewayClassName: other")
            .replace(
                "metadata: { name: edge, namespace: ns",
                &format!("metadata: {{ name: edge, namespace: ns{annotation}"),
            )
    };
    let plans = run(
        &[
            CLASS.into(),
            other_class.into(),
            moved(true),
            BACKEND.into(),
        ],
        &[],
    );
    assert_eq!(plans["Gateway/ns/edge"].plan, Plan::Release);
    // Nothing of ours there: nothing to write.
    let plans = run(
        &[
            CLASS.into(),
            other_class.into(),
            moved(false),
            BACKEND.into(),
        ],
        &[],
    );
    assert!(!plans.contains_key("Gateway/ns/edge"));
}
