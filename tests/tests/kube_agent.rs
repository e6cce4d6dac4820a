//! The real agent with `--source kubernetes`, against the fake API server (in this process, on
//! 127.0.0.1 of the root namespace, where the agent runs): objects applied through the API are
//! enforced (L4 packets dropped, HTTP routes served), and so are their changes and deletions.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer};
use tollgate_tests::l7::{
    backend_object, curl, documents, gateway, route_object, start_agent, to, Backend,
};
use tollgate_tests::{l4_policy, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const L4_ADMIN: u16 = 18330;
const PROXY: u16 = 18331;
const L7_ADMIN: u16 = 18332;
const APP: u16 = 18333;
const V2: u16 = 18334;

/// The fake, and a kubeconfig for it in the lab's directory.
fn api_server(lab: &Lab) -> (FakeApiServer, PathBuf) {
    let fake = FakeApiServer::start(tollgate_kinds());
    let path = lab.config.base_dir.join("kubeconfig");
    fake.write_kubeconfig(&path)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    (fake, path)
}

fn pings(lab: &Lab, from: Ipv4Addr) -> u64 {
    lab.ping(from, 3, Duration::from_millis(50), Duration::from_secs(1))
        .received
}

#[test]
fn an_l4policy_applied_through_the_api_is_enforced_and_so_are_its_changes() {
    require_root!();
    let lab = Lab::new("k8sl4", &[SCANNER]);
    let (fake, kubeconfig) = api_server(&lab);
    let deny = |cidr: &str| {
        l4_policy(
            "edge",
            "allow",
            &format!("- name: block\n  action: deny\n  from: [{cidr}]\n"),
        )
    };
    fake.apply_yaml(&deny("203.0.113.0/24")).unwrap();
    let admin = format!("127.0.0.1:{L4_ADMIN}");
    let mut agent = lab.start_agent(&[
        "--source",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-name",
        "node-a",
        "--admin",
        &admin,
    ]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = agent.log();
    assert!(log.contains("revision=k8s:"), "{log}");
    assert!(log.contains("node-a"), "the node name is logged: {log}");
    assert_eq!(pings(&lab, SCANNER), 0, "the denied source got through");
    assert_eq!(pings(&lab, lab.ns_ip()), 3, "an allowed source was dropped");

    // A change: another CIDR is denied, the scanner passes.
    fake.apply_yaml(&deny("198.51.100.0/24")).unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pings(&lab, SCANNER), 3, "the old rule is still enforced");

    // Denied again, then the policy is deleted: nothing is denied any more.
    fake.apply_yaml(&deny("203.0.113.0/24")).unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 3, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pings(&lab, SCANNER), 0);
    fake.delete("tollgate.dev/v1alpha1", "L4Policy", None, "edge")
        .unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 4, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        pings(&lab, SCANNER),
        3,
        "a deleted policy is still enforced"
    );

    // A status-only write is no new revision.
    let applies = agent.log_count(POLICY_APPLIED);
    fake.apply_yaml(&deny("192.0.2.0/24")).unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, applies + 1, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut with_status = fake
        .get("tollgate.dev/v1alpha1", "L4Policy", None, "edge")
        .unwrap();
    with_status["status"] = serde_json::json!({"nodes": 1});
    fake.put(with_status).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        agent.log_count(POLICY_APPLIED),
        applies + 1,
        "{}",
        agent.log()
    );
    // One watch per kind, one each for Services and EndpointSlices, and the Secrets' and
    // ConfigMaps'.
    assert_eq!(
        fake.open_watch_count(),
        tollgate_kubernetes::watched_kinds().len() + 2 + tollgate_kubernetes::secrets::WATCHES,
        "{:?}",
        fake.open_watches()
    );
}

#[test]
fn routes_applied_through_the_api_are_served_and_so_are_their_changes() {
    require_root!();
    let lab = Lab::new("k8sl7", &[]);
    let _app = Backend::start("app", APP);
    let _v2 = Backend::start("v2", V2);
    let (fake, kubeconfig) = api_server(&lab);
    let route = |backend: &str| {
        route_object(
            "app",
            &format!("  rules:\n    - backendRefs: [{}]\n", to(backend)),
        )
    };
    fake.apply_yaml(&documents(&[
        &gateway(&[("http", PROXY, None)]),
        &backend_object("app", &[APP], ""),
        &backend_object("v2", &[V2], ""),
        &route("app"),
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
    let url = format!("http://127.0.0.1:{PROXY}/hello");
    let r = curl(&["--http1.1", &url]);
    assert_eq!((r.status, r.backend()), (200, "app".into()), "{r:?}");

    // The route moves to v2.
    fake.apply_yaml(&route("v2")).unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let r = curl(&["--http1.1", &url]);
    assert_eq!((r.status, r.backend()), (200, "v2".into()), "{r:?}");

    // The route is deleted: no route, 404.
    fake.delete(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        Some("default"),
        "app",
    )
    .unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 3, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let r = curl(&["--http1.1", &url]);
    assert_eq!(r.status, 404, "{r:?}");
}
