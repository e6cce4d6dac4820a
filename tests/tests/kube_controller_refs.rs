//! `tollgate controller` (the real binary) against the fake API server: the statuses that
//! depend on other objects of the cluster (Secrets a listener or a policy names, Services as
//! backends) and GRPCRoutes. No root needed. Helpers: `tollgate_tests::kube_controller`.
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_tests::kube_controller::*;
use tollgate_tests::kube_fake::FakeApiServer;

/// A Gateway `tls` of namespace `apps` with an HTTP listener and an HTTPS one serving Secret
/// `apps/site-cert`, a route on it, and an AuthPolicy on the route whose API keys are Secret
/// `apps/api-keys`; a ready node serving both listeners.
const TLS_GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: tls, namespace: apps }\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - { name: http, port: 8081, protocol: HTTP }\n    - name: https\n      port: 8443\n      protocol: HTTPS\n      tls: { certificateRefs: [{ name: site-cert }] }\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: guarded, namespace: apps }\nspec:\n  parentRefs: [{ name: tls }]\n  rules:\n    - backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }]\n---\napiVersion: tollgate.dev/v1alpha1\nkind: AuthPolicy\nmetadata: { name: keyed, namespace: apps }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: guarded }]\n  apiKey: { header: x-api-key, credentialRefs: [{ name: api-keys }] }\n---\napiVersion: tollgate.dev/v1alpha1\nkind: TollgateNode\nmetadata: { name: node-tls }\nspec: {}\nstatus:\n  conditions:\n    - { type: Ready, status: 'True', reason: Enforced, message: enforced, lastTransitionTime: '2026-01-01T00:00:00Z' }\n  listeners:\n    - { address: '0.0.0.0:8081', protocol: HTTP, gatewayListeners: [apps/tls/http] }\n    - { address: '0.0.0.0:8443', protocol: HTTPS, gatewayListeners: [apps/tls/https] }\n";

fn secret(name: &str, type_: &str, data: &[(&str, &str)]) -> Value {
    use base64::Engine as _;
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let v = base64::engine::general_purpose::STANDARD.encode(tollgate_tests::pem_of(k, v));
            (k.to_string(), Value::String(v))
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "apps"}, "type": type_, "data": data})
}

/// One listener's entry in a Gateway's status.
fn listener(gateway: &Value, name: &str) -> Value {
    gateway["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no listener {name} in {gateway}"))
}

/// `(status, reason)` of a condition.
fn state(conditions: &Value, type_: &str) -> (String, String) {
    let c = condition(conditions, type_);
    (
        c["status"].as_str().unwrap_or_default().to_owned(),
        c["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

fn pair(status: &str, reason: &str) -> (String, String) {
    (status.to_owned(), reason.to_owned())
}

/// The AuthPolicy's (only) ancestor entry, once written.
fn keyed_ancestor(fake: &FakeApiServer) -> Option<Value> {
    fake.get("tollgate.dev/v1alpha1", "AuthPolicy", Some("apps"), "keyed")?["status"]["ancestors"]
        .as_array()?
        .first()
        .cloned()
}

#[test]
fn a_missing_certificate_or_keys_secret_is_reported_and_its_creation_resolves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, kubeconfig) = start_fake(dir.path());
    fake.apply_yaml(&[GATEWAY, BACKEND, TLS_GATEWAY].join("---\n"))
        .unwrap();
    // A Secret nothing references: it changes nothing.
    fake.put(secret("unrelated", "Opaque", &[("keys", "x")]))
        .unwrap();
    let _controller = Controller::start(&kubeconfig, "solo", dir.path());

    // The HTTPS listener is left out for its certificate: ResolvedRefs=False with the Gateway
    // API's reason, naming the Secret; the HTTP listener and the Gateway are served
    // (Accepted=True, ListenersNotValid: a partially invalid Gateway).
    let gw = gateway_status(&fake, "tls", Duration::from_secs(20));
    let https = listener(&gw, "https");
    assert_eq!(
        state(&https["conditions"], "ResolvedRefs"),
        pair("False", "InvalidCertificateRef"),
        "{gw}"
    );
    let message = condition_message(&https["conditions"], "ResolvedRefs");
    assert!(
        message.contains("Secret apps/site-cert does not exist"),
        "{message}"
    );
    assert_eq!(
        state(&https["conditions"], "Programmed"),
        pair("False", "Invalid"),
        "{gw}"
    );
    assert_eq!(state(&https["conditions"], "Accepted").0, "False", "{gw}");
    let http = listener(&gw, "http");
    assert_eq!(
        state(&http["conditions"], "ResolvedRefs"),
        pair("True", "ResolvedRefs"),
        "{gw}"
    );
    assert_eq!(
        state(&http["conditions"], "Programmed"),
        pair("True", "Programmed"),
        "{gw}"
    );
    assert_eq!(http["attachedRoutes"], 1, "{gw}");
    assert_eq!(
        state(&gw["conditions"], "Accepted"),
        pair("True", "ListenersNotValid"),
        "{gw}"
    );
    assert_eq!(
        state(&gw["conditions"], "Programmed"),
        pair("True", "Programmed"),
        "{gw}"
    );
    // The Gateway without Secrets is untouched by all this.
    let edge = status(&fake, "Gateway", "edge");
    assert_eq!(
        state(&listener(&edge, "http")["conditions"], "ResolvedRefs"),
        pair("True", "ResolvedRefs"),
        "{edge}"
    );

    // The AuthPolicy whose keys Secret is missing: not accepted, naming the Secret, on the
    // Gateway its route is attached to.
    let ancestor = wait_for(Duration::from_secs(10), "the AuthPolicy's status", || {
        keyed_ancestor(&fake)
    });
    assert_eq!(ancestor["ancestorRef"]["name"], "tls", "{ancestor}");
    assert_eq!(ancestor["controllerName"], CONTROLLER, "{ancestor}");
    assert_eq!(
        state(&ancestor["conditions"], "Accepted"),
        pair("False", "Invalid"),
        "{ancestor}"
    );
    let why = condition_message(&ancestor["conditions"], "Accepted");
    assert!(why.contains("Secret apps/api-keys"), "{why}");

    // The certificate arrives: the listener resolves and is served.
    let created = Instant::now();
    fake.put(secret(
        "site-cert",
        "kubernetes.io/tls",
        &[("tls.crt", "CERT"), ("tls.key", "KEY")],
    ))
    .unwrap();
    // The controller writes an object's status at most once per 10 s: the Gateway's first
    // status was written just before.
    let gw = wait_for(
        Duration::from_secs(25),
        "ResolvedRefs=True on the https listener",
        || {
            let s = status(&fake, "Gateway", "tls");
            let l = listener(&s, "https");
            (state(&l["conditions"], "ResolvedRefs").0 == "True").then_some(s)
        },
    );
    eprintln!(
        "measured: the https listener's ResolvedRefs=True written {:?} after its Secret was created (the Gateway's previous write just before: 10 s pace per object)",
        created.elapsed()
    );
    let https = listener(&gw, "https");
    assert_eq!(
        state(&https["conditions"], "ResolvedRefs"),
        pair("True", "ResolvedRefs"),
        "{gw}"
    );
    assert_eq!(
        state(&https["conditions"], "Accepted"),
        pair("True", "Accepted"),
        "{gw}"
    );
    assert_eq!(
        state(&https["conditions"], "Programmed"),
        pair("True", "Programmed"),
        "{gw}"
    );
    assert_eq!(
        state(&gw["conditions"], "Accepted"),
        pair("True", "Accepted"),
        "{gw}"
    );
    // The keys too: the AuthPolicy is accepted.
    fake.put(secret(
        "api-keys",
        "Opaque",
        &[("keys", "app:sha256:00:11")],
    ))
    .unwrap();
    wait_for(Duration::from_secs(25), "the AuthPolicy accepted", || {
        let a = keyed_ancestor(&fake)?;
        (state(&a["conditions"], "Accepted") == pair("True", "Accepted")).then_some(())
    });
}

/// The controller compiles with the cluster's Services, as the agents do: a backendRef to an
/// existing Service port resolves, one to a Service that does not exist is `BackendNotFound`.
#[test]
fn backend_refs_to_services_are_judged_with_the_clusters_services() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, kubeconfig) = start_fake(dir.path());
    let to_service = |name: &str, service: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: {name}, namespace: apps }}\nspec:\n  parentRefs: [{{ name: edge }}]\n  rules:\n    - backendRefs: [{{ name: {service}, port: 80 }}]\n")
    };
    let service = "apiVersion: v1\nkind: Service\nmetadata: { name: web, namespace: apps }\nspec:\n  selector: { app: web }\n  ports: [{ name: http, port: 80, targetPort: 8080 }]\n";
    fake.apply_yaml(
        &[
            GATEWAY,
            NODE,
            service,
            &to_service("to-web", "web"),
            &to_service("to-nothing", "nothing"),
        ]
        .join("---\n"),
    )
    .unwrap();
    let _controller = Controller::start(&kubeconfig, "solo", dir.path());
    let web = wait_for(Duration::from_secs(20), "route to-web's status", || {
        our_parent(&fake, "to-web")
    });
    assert_eq!(
        state(&web["conditions"], "ResolvedRefs"),
        pair("True", "ResolvedRefs"),
        "{web}"
    );
    let nothing = wait_for(Duration::from_secs(10), "route to-nothing's status", || {
        our_parent(&fake, "to-nothing")
    });
    assert_eq!(
        state(&nothing["conditions"], "ResolvedRefs"),
        pair("False", "BackendNotFound"),
        "{nothing}"
    );
}

/// GRPCRoutes get `status.parents` as HTTPRoutes do (generation, resolved and unresolved
/// backendRefs, another controller's entry kept), the younger of an HTTPRoute and a GRPCRoute
/// whose hostnames meet on one listener is `Accepted=False` / `Conflicted`, and the Gateway's
/// listener counts the routes of both kinds and names both as supported.
#[test]
fn grpcroutes_get_their_status_and_a_conflict_with_an_httproute_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, kubeconfig) = start_fake(dir.path());
    let grpc = |name: &str, backend: &str, host: &str, created: &str| {
        format!("apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{ name: {name}, namespace: apps, creationTimestamp: '{created}' }}\nspec:\n  parentRefs: [{{ name: edge }}]\n  hostnames: [{host}]\n  rules:\n    - matches: [{{ method: {{ service: echo.Echo }} }}]\n      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: {backend} }}]\n")
    };
    let api = with_other_parent(grpc("api", "app", "api.example", "2026-01-01T00:00:00Z"));
    // Younger than `api`, on the same host: it loses the listener.
    let web = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: web, namespace: apps, creationTimestamp: '2026-02-01T00:00:00Z' }\nspec:\n  parentRefs: [{ name: edge }]\n  hostnames: [api.example]\n  rules:\n    - backendRefs: [{ group: tollgate.dev, kind: Backend, name: app }]\n";
    let docs = [
        GATEWAY,
        BACKEND,
        NODE,
        &api,
        &grpc(
            "broken",
            "missing",
            "broken.example",
            "2026-01-01T00:00:00Z",
        ),
        web,
    ];
    fake.apply_yaml(&docs.join("---\n")).unwrap();
    let _controller = Controller::start(&kubeconfig, "solo", dir.path());

    let ok = wait_for(
        Duration::from_secs(20),
        "the status of GRPCRoute api",
        || our_parent_of(&fake, "GRPCRoute", "api"),
    );
    let g = generation(&fake, "GRPCRoute", "api");
    assert_eq!(ok["parentRef"]["name"], "edge", "{ok}");
    assert_eq!(ok["controllerName"], CONTROLLER, "{ok}");
    for (type_, reason) in [("Accepted", "Accepted"), ("ResolvedRefs", "ResolvedRefs")] {
        let c = condition(&ok["conditions"], type_);
        assert_eq!(state(&ok["conditions"], type_), pair("True", reason), "{c}");
        assert_eq!(c["observedGeneration"], g, "{c}");
    }
    assert_other_parent_kept(&fake, "GRPCRoute", "api");
    let broken = wait_for(
        Duration::from_secs(10),
        "the status of GRPCRoute broken",
        || our_parent_of(&fake, "GRPCRoute", "broken"),
    );
    assert_eq!(
        state(&broken["conditions"], "ResolvedRefs"),
        pair("False", "BackendNotFound"),
        "{broken}"
    );
    let web = wait_for(
        Duration::from_secs(10),
        "the status of HTTPRoute web",
        || our_parent(&fake, "web"),
    );
    assert_eq!(
        state(&web["conditions"], "Accepted"),
        pair("False", "Conflicted"),
        "{web}"
    );
    let message = condition_message(&web["conditions"], "Accepted");
    assert!(message.contains("GRPCRoute apps/api"), "{message}");

    let gw = gateway_status(&fake, "edge", Duration::from_secs(10));
    let listener = &gw["listeners"][0];
    // `api` and `broken` (which answers UNAVAILABLE for its unresolved backend) are attached;
    // `web` lost the listener.
    assert_eq!(listener["attachedRoutes"], 2, "{gw}");
    assert_eq!(
        listener["supportedKinds"],
        serde_json::json!([
            {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
            {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"},
        ]),
        "{gw}"
    );

    // A new generation of the GRPCRoute is written with it.
    let mut changed = fake.get(GW, "GRPCRoute", Some("apps"), "api").unwrap();
    changed["spec"]["rules"][0]["matches"][0]["method"]["method"] = "Say".into();
    fake.put(changed).unwrap();
    let g2 = generation(&fake, "GRPCRoute", "api");
    assert!(g2 > g);
    wait_for(
        Duration::from_secs(20),
        "the new generation in the status",
        || {
            let p = our_parent_of(&fake, "GRPCRoute", "api")?;
            (condition(&p["conditions"], "Accepted")["observedGeneration"] == g2).then_some(())
        },
    );
}
