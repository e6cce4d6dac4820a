//! backendRefs to Services (Kubernetes mode): resolution through EndpointSlices, readiness,
//! ports by name, appProtocol, and what does not resolve.
use std::sync::Arc;

use super::*;
use crate::l7::status::{reason, Condition, PARTIALLY_INVALID, RESOLVED_REFS};
use crate::l7::table::BackendProtocol;
use crate::snapshot::{compile_documents, compile_documents_with, Snapshot};
use tollgate_model::cluster::{
    AddressType, Cluster, Endpoint, EndpointSlice, Protocol, Service, ServicePort, ServiceType,
    SlicePort, TargetPort,
};

fn service(ns: &str, name: &str, ports: &[(&str, u16, Option<&str>)]) -> Service {
    Service {
        namespace: ns.into(),
        name: name.into(),
        type_: ServiceType::ClusterIP,
        ports: ports
            .iter()
            .map(|(n, p, app)| ServicePort {
                name: (*n).into(),
                port: *p,
                protocol: Protocol::Tcp,
                app_protocol: app.map(Into::into),
                target_port: TargetPort::Number(*p + 8000),
            })
            .collect(),
    }
}

/// A slice of Service `service` in `ns`, with its ports (name, number) and endpoints
/// (address, `conditions.ready`).
fn slice(
    ns: &str,
    name: &str,
    service: &str,
    ports: &[(&str, u16)],
    endpoints: &[(&str, Option<bool>)],
) -> EndpointSlice {
    let endpoints: Vec<Endpoint> = endpoints
        .iter()
        .map(|(a, ready)| Endpoint {
            address: a.parse().unwrap(),
            ready: *ready,
            serving: *ready,
            terminating: None,
        })
        .collect();
    EndpointSlice {
        namespace: ns.into(),
        name: name.into(),
        service: service.into(),
        address_type: if endpoints.first().is_some_and(|e| e.address.is_ipv6()) {
            AddressType::IPv6
        } else {
            AddressType::IPv4
        },
        ports: ports
            .iter()
            .map(|(n, p)| SlicePort {
                name: (*n).into(),
                port: *p,
                protocol: Protocol::Tcp,
                app_protocol: None,
            })
            .collect(),
        endpoints: endpoints.into(),
    }
}

fn cluster(services: Vec<Service>, slices: Vec<EndpointSlice>) -> Arc<Cluster> {
    Arc::new(Cluster {
        services: services.into_iter().map(Arc::new).collect(),
        slices: slices.into_iter().map(Arc::new).collect(),
        node: None,
        unresolved: Vec::new(),
    })
}

fn docs_in(yaml: &str, cluster: Option<Arc<Cluster>>) -> Documents {
    let mut d = docs(&[("kubernetes:/default/HTTPRoute/r", yaml)]);
    d.cluster = cluster;
    d
}

/// Compiles `yaml` as the agent does, against `cluster`.
fn compiled(yaml: &str, cluster: Arc<Cluster>) -> Snapshot {
    compile_documents(&docs_in(yaml, Some(cluster)), None).unwrap_or_else(|e| panic!("{e}"))
}

fn condition<'a>(s: &'a Snapshot, name: &str, type_: &str) -> &'a Condition {
    let route = s.acceptance.routes.iter().find(|r| r.name == name).unwrap();
    route.parents[0]
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap()
}

/// The endpoints of the backend the `rule`th rule of the first route sends to (its only one).
fn endpoints_of(s: &Snapshot, rule: usize) -> Vec<String> {
    let r = &s.l7.policy.routes[0].rules[rule].rule;
    assert_eq!(r.backends.len(), 1, "{r:?}");
    s.l7.policy.backends[r.backends[0].backend]
        .endpoints
        .clone()
}

fn rules(refs: &[&str]) -> String {
    let mut spec = String::from("  rules:\n");
    for (i, r) in refs.iter().enumerate() {
        spec.push_str(&format!(
            "    - matches: [{{ path: {{ value: /r{i} }} }}]\n      backendRefs: [{r}]\n"
        ));
    }
    route("r", &spec)
}

#[test]
fn a_service_port_resolves_to_the_ready_endpoints_of_its_slices_by_port_name() {
    let c = cluster(
        vec![
            service(
                "default",
                "web",
                &[("http", 80, None), ("metrics", 9090, None)],
            ),
            service("default", "other", &[("http", 80, None)]),
        ],
        vec![
            slice(
                "default",
                "web-v4",
                "web",
                &[("http", 8080), ("metrics", 9100)],
                &[
                    ("10.0.0.2", Some(true)),
                    ("10.0.0.1", None),
                    ("10.0.0.3", Some(false)),
                ],
            ),
            slice(
                "default",
                "web-v6",
                "web",
                &[("metrics", 9100), ("http", 8080)],
                &[("2001:db8::1", Some(true))],
            ),
            // The same endpoint in a second slice (as during a slice's rebalancing): once.
            slice(
                "default",
                "web-more",
                "web",
                &[("http", 8080)],
                &[("10.0.0.2", Some(true)), ("10.0.0.4", Some(true))],
            ),
            // Another Service's slice, and a slice of a Service of the same name elsewhere.
            slice(
                "default",
                "other-1",
                "other",
                &[("http", 8080)],
                &[("10.9.9.9", None)],
            ),
            slice(
                "elsewhere",
                "web-1",
                "web",
                &[("http", 8080)],
                &[("10.8.8.8", None)],
            ),
        ],
    );
    let s = compiled(
        &all(&[
            GATEWAY,
            &rules(&["{ name: web, port: 80 }", "{ name: web, port: 9090 }"]),
        ]),
        c,
    );
    assert!(s.acceptance.complete(), "{:?}", s.acceptance.problems());
    assert!(condition(&s, "r", RESOLVED_REFS).is_true());
    assert_eq!(
        endpoints_of(&s, 0),
        [
            "10.0.0.1:8080",
            "10.0.0.2:8080",
            "10.0.0.4:8080",
            "[2001:db8::1]:8080"
        ]
    );
    assert_eq!(
        endpoints_of(&s, 1),
        ["10.0.0.1:9100", "10.0.0.2:9100", "[2001:db8::1]:9100"]
    );
    let b = &s.l7.policy.backends;
    assert_eq!(
        b.iter().map(|b| b.label.as_str()).collect::<Vec<_>>(),
        ["default/web:80", "default/web:9090"]
    );
    assert_eq!(b[0].protocol, BackendProtocol::Http1);
    assert!(b[0].tls.is_none());
}

#[test]
fn a_single_unnamed_port_matches_the_slices_unnamed_port() {
    let c = cluster(
        vec![service("default", "web", &[("", 8000, None)])],
        vec![slice(
            "default",
            "web-1",
            "web",
            &[("", 3000)],
            &[("10.1.0.1", None)],
        )],
    );
    let s = compiled(&all(&[GATEWAY, &rules(&["{ name: web, port: 8000 }"])]), c);
    assert_eq!(endpoints_of(&s, 0), ["10.1.0.1:3000"]);
}

#[test]
fn the_service_ports_app_protocol_selects_http2_or_is_unsupported() {
    let c = cluster(
        vec![service(
            "default",
            "grpc",
            &[
                ("h2c", 81, Some("kubernetes.io/h2c")),
                ("ws", 82, Some("kubernetes.io/ws")),
                ("wss", 83, Some("kubernetes.io/wss")),
                ("odd", 84, Some("example.com/odd")),
            ],
        )],
        vec![slice(
            "default",
            "grpc-1",
            "grpc",
            &[("h2c", 9001), ("ws", 9002), ("wss", 9003), ("odd", 9004)],
            &[("10.2.0.1", Some(true))],
        )],
    );
    let s = compiled(
        &all(&[
            GATEWAY,
            &rules(&[
                "{ name: grpc, port: 81 }",
                "{ name: grpc, port: 82 }",
                "{ name: grpc, port: 83 }",
                "{ name: grpc, port: 84 }",
            ]),
        ]),
        c,
    );
    let rules = &s.l7.policy.routes[0].rules;
    let protocol = |i: usize| s.l7.policy.backends[rules[i].rule.backends[0].backend].protocol;
    assert_eq!(protocol(0), BackendProtocol::Http2);
    assert_eq!(protocol(1), BackendProtocol::Http1);
    for i in [2, 3] {
        assert_eq!(
            (
                rules[i].rule.backends.len(),
                rules[i].rule.unresolved_weight
            ),
            (0, 1)
        );
    }
    let resolved = condition(&s, "r", RESOLVED_REFS);
    assert_eq!(
        (resolved.status, resolved.reason),
        ("False", reason::UNSUPPORTED_PROTOCOL)
    );
    let problems: Vec<(&str, &str)> = s
        .acceptance
        .partial
        .iter()
        .map(|e| (e.location.field.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, "spec.rules[2].backendRefs[0].port");
    assert!(problems[0].1.contains("needs TLS"), "{problems:?}");
    assert_eq!(problems[1].0, "spec.rules[3].backendRefs[0].port");
    assert!(problems[1].1.contains("example.com/odd"), "{problems:?}");
}

#[test]
fn a_missing_service_or_port_answers_500_for_its_rule_and_the_rest_serves() {
    let mut udp = service("default", "dns", &[("dns", 53, None)]);
    udp.ports = vec![ServicePort {
        protocol: Protocol::Udp,
        ..udp.ports[0].clone()
    }]
    .into();
    let mut external = service("default", "ext", &[("http", 80, None)]);
    external.type_ = ServiceType::ExternalName;
    let c = cluster(
        vec![
            service("default", "web", &[("http", 80, None)]),
            udp,
            external,
        ],
        vec![slice(
            "default",
            "web-1",
            "web",
            &[("http", 8080)],
            &[("10.0.0.1", None)],
        )],
    );
    let s = compiled(
        &all(&[
            GATEWAY,
            &rules(&[
                "{ name: web, port: 80 }",
                "{ name: gone, port: 80 }",
                "{ name: web, port: 81 }",
                "{ name: dns, port: 53 }",
                "{ name: ext, port: 80 }",
                "{ name: web, port: 80, namespace: elsewhere }",
            ]),
        ]),
        c,
    );
    let rules = &s.l7.policy.routes[0].rules;
    assert_eq!(rules.len(), 6, "every rule is served");
    assert_eq!(endpoints_of(&s, 0), ["10.0.0.1:8080"]);
    for (i, rule) in rules.iter().enumerate().skip(1) {
        assert_eq!(
            (rule.rule.backends.len(), rule.rule.unresolved_weight),
            (0, 1),
            "rule {i} answers 500"
        );
        assert_eq!(rule.rule.pick_backend(0), None);
    }
    let resolved = condition(&s, "r", RESOLVED_REFS);
    assert_eq!(
        (resolved.status, resolved.reason),
        ("False", reason::BACKEND_NOT_FOUND)
    );
    let problems: Vec<(&str, &str)> = s
        .acceptance
        .partial
        .iter()
        .map(|e| (e.location.field.as_str(), e.message.as_str()))
        .collect();
    let fields: Vec<&str> = problems.iter().map(|p| p.0).collect();
    assert_eq!(
        fields,
        [
            "spec.rules[1].backendRefs[0].name",
            "spec.rules[2].backendRefs[0].port",
            "spec.rules[3].backendRefs[0].port",
            "spec.rules[4].backendRefs[0].name",
            "spec.rules[5].backendRefs[0].namespace",
        ]
    );
    assert!(
        problems[0].1.contains("no Service default/gone"),
        "{problems:?}"
    );
    assert!(
        problems[1].1.contains("no port 81 (its ports: 80)"),
        "{problems:?}"
    );
    assert!(problems[2].1.contains("UDP"), "{problems:?}");
    assert!(problems[3].1.contains("ExternalName"), "{problems:?}");
    assert!(
        problems[4]
            .1
            .contains("no ReferenceGrant in namespace elsewhere"),
        "{problems:?}"
    );
}

#[test]
fn a_service_without_ready_endpoints_resolves_to_a_backend_without_endpoints() {
    let c = cluster(
        vec![
            service("default", "idle", &[("http", 80, None)]),
            service("default", "down", &[("http", 80, None)]),
        ],
        vec![slice(
            "default",
            "down-1",
            "down",
            &[("http", 8080)],
            &[("10.0.0.1", Some(false)), ("10.0.0.2", Some(false))],
        )],
    );
    let s = compiled(
        &all(&[
            GATEWAY,
            &rules(&["{ name: idle, port: 80 }", "{ name: down, port: 80 }"]),
        ]),
        c,
    );
    // Resolved (the proxy answers 503: no endpoint), not a 500.
    assert!(s.acceptance.complete(), "{:?}", s.acceptance.problems());
    assert!(condition(&s, "r", RESOLVED_REFS).is_true());
    assert!(endpoints_of(&s, 0).is_empty());
    assert!(endpoints_of(&s, 1).is_empty());
}

#[test]
fn rules_naming_the_same_service_port_share_one_backend() {
    let c = cluster(
        vec![service("default", "web", &[("http", 80, None)])],
        vec![slice(
            "default",
            "web-1",
            "web",
            &[("http", 8080)],
            &[("10.0.0.1", None)],
        )],
    );
    let s = compiled(
        &all(&[
            GATEWAY,
            BACKENDS,
            &rules(&[
                "{ name: web, port: 80 }",
                "{ group: tollgate.dev, kind: Backend, name: a }",
                "{ name: web, port: 80, weight: 2 }",
            ]),
        ]),
        c,
    );
    let rules = &s.l7.policy.routes[0].rules;
    let index = |i: usize| rules[i].rule.backends[0].backend;
    assert_eq!(index(0), index(2));
    // After the two Backend objects.
    assert_eq!(index(0), 2);
    assert_eq!(index(1), 0);
    assert_eq!(s.l7.policy.backends.len(), 3);
}

#[test]
fn a_service_ref_needs_a_port() {
    let c = cluster(
        vec![service("default", "web", &[("http", 80, None)])],
        vec![],
    );
    let s = compiled(
        &all(&[
            GATEWAY,
            BACKENDS,
            &rules(&[
                "{ name: web }",
                "{ group: tollgate.dev, kind: Backend, name: a }",
                "{ name: web, port: 70000 }",
            ]),
        ]),
        c,
    );
    // Invalid in itself (the Gateway API's CRD refuses it): the rule is dropped.
    assert_eq!(s.l7.policy.routes[0].rules.len(), 1);
    assert!(condition(&s, "r", PARTIALLY_INVALID).is_true());
    let fields: Vec<&str> = s
        .acceptance
        .partial
        .iter()
        .map(|e| e.location.field.as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.rules[0].backendRefs[0].port",
            "spec.rules[2].backendRefs[0].port"
        ]
    );
}

#[test]
fn without_a_cluster_a_service_ref_says_to_use_a_backend() {
    let yaml = all(&[GATEWAY, &rules(&["{ name: web, port: 80 }"])]);
    let s = compile_documents(&docs_in(&yaml, None), None).unwrap();
    let resolved = condition(&s, "r", RESOLVED_REFS);
    assert_eq!(
        (resolved.status, resolved.reason),
        ("False", reason::BACKEND_NOT_FOUND)
    );
    assert!(
        resolved
            .message
            .contains("Services are resolved in Kubernetes mode; use a tollgate.dev Backend here"),
        "{resolved:?}"
    );
    assert_eq!(s.l7.policy.routes[0].rules[0].rule.unresolved_weight, 1);
}

/// A Service or EndpointSlice manifest in a directory or Git revision is an unknown kind, as
/// before Kubernetes mode resolved Services: the revision is refused, and says which kinds are
/// read (docs/policy.md).
#[test]
fn service_manifests_in_a_policy_repository_stay_unknown_kinds() {
    let service =
        "apiVersion: v1\nkind: Service\nmetadata: { name: web }\nspec:\n  ports: [{ port: 80 }]\n";
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: { name: web-1 }\naddressType: IPv4\nendpoints: []\n";
    let yaml = all(&[
        GATEWAY,
        &rules(&["{ name: web, port: 80 }"]),
        service,
        slice,
    ]);
    let errors = compile_documents(&docs(&[("policy/web.yaml", &yaml)]), None)
        .expect_err("refused")
        .0;
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages[0].starts_with("unknown kind \"Service\""),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("unknown kind \"EndpointSlice\""),
        "{messages:?}"
    );
}

/// What an endpoint change costs the agent with 10,000 routes: the revision is parsed (only
/// the changed files: none here, the endpoints are not files) and compiled again. Timed in a
/// release build: `cargo test --release -p tollgate-compile -- --ignored --nocapture
/// endpoint_change` (docs/kubernetes.md). The test asserts what it compiled and that the
/// parse cache spared the second compile the parse (faster than the first), not a time: the
/// same code took about 0.5 s in a release build (docs/kubernetes.md) and 1.5 s in a debug one
/// on a slower host.
#[test]
#[ignore = "a timing: run in a release build"]
fn an_endpoint_change_among_10000_routes_is_compiled_again_from_the_parse_cache() {
    const ROUTES: usize = 10_000;
    let mut yaml = String::from(GATEWAY);
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..ROUTES {
        yaml.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: r{i} }}\nspec:\n  parentRefs: [{{ name: edge }}]\n  rules:\n    - matches: [{{ path: {{ value: /svc-{i} }} }}]\n      backendRefs: [{{ name: s{i}, port: 80 }}]\n"
        ));
        services.push(service("default", &format!("s{i}"), &[("http", 80, None)]));
        let endpoints: Vec<String> = (0..10)
            .map(|e| format!("10.{}.{}.{e}", i / 256, i % 256))
            .collect();
        let endpoints: Vec<(&str, Option<bool>)> =
            endpoints.iter().map(|e| (e.as_str(), Some(true))).collect();
        slices.push(slice(
            "default",
            &format!("s{i}-1"),
            &format!("s{i}"),
            &[("http", 8080)],
            &endpoints,
        ));
    }
    let mut cache = tollgate_model::ParseCache::default();
    let first = docs_in(&yaml, Some(cluster(services.clone(), slices.clone())));
    let started = std::time::Instant::now();
    let s = compile_documents_with(&mut cache, &first, None).unwrap();
    let cold = started.elapsed();
    assert_eq!(s.l7.policy.routes.len(), ROUTES);
    // One endpoint of one Service becomes not ready.
    let mut changed = slices[ROUTES / 2].clone();
    let mut endpoints = changed.endpoints.to_vec();
    endpoints[0].ready = Some(false);
    changed.endpoints = endpoints.into();
    slices[ROUTES / 2] = changed;
    let second = docs_in(&yaml, Some(cluster(services, slices)));
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        let s = compile_documents_with(&mut cache, &second, None).unwrap();
        times.push(started.elapsed());
        let r = &s
            .l7
            .policy
            .routes
            .iter()
            .find(|r| r.label.ends_with("/r5000"));
        let backend = &s.l7.policy.backends[r.unwrap().rules[0].rule.backends[0].backend];
        assert_eq!(backend.endpoints.len(), 9);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "{ROUTES} routes, each to its own Service (10 endpoints): first compile {cold:?}, after an endpoint change (parse cached) median {median:?} of {times:?}"
    );
    assert!(median < cold, "cached {median:?}, first {cold:?}");
}
