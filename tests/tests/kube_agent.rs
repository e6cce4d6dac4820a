//! The real agent with `--source kubernetes`, against the fake API server (in this process, on
//! 127.0.0.1 of the root namespace, where the agent runs): objects applied through the API are
//! enforced (L4 packets dropped, HTTP routes and GRPCRoutes served), and so are their changes
//! and deletions;
//! and a deny-all L4Policy does not cut the agent off its API server (lock-out protection).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer};
use tollgate_tests::l7::{
    backend_object, curl, documents, gateway, route_object, start_agent, to, Backend,
};
use tollgate_tests::{
    http_get, l4_policy, metric_value, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED,
};

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const L4_ADMIN: u16 = 18330;
const PROXY: u16 = 18331;
const L7_ADMIN: u16 = 18332;
const APP: u16 = 18333;
const V2: u16 = 18334;
const FAILSAFE_API: u16 = 18337;
const FAILSAFE_ADMIN: u16 = 18338;
const NODE_ADMIN: u16 = 18339;
const GRPC_PROXY: u16 = 18381;
const GRPC_ADMIN: u16 = 18382;
const GRPC_V1: u16 = 18383;
const GRPC_V2: u16 = 18384;

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
    // One watch per kind (Namespaces only on demand: no Gateway here selects namespaces by
    // label), one each for Services and EndpointSlices, the Secrets' and ConfigMaps', and this
    // node's Node (--node-name): the budget of 15.
    let always = tollgate_kubernetes::watched_kinds()
        .iter()
        .filter(|k| !k.on_demand)
        .count();
    assert_eq!(always + 2 + tollgate_kubernetes::secrets::WATCHES + 1, 15);
    assert_eq!(
        fake.open_watch_count(),
        always + 2 + tollgate_kubernetes::secrets::WATCHES + 1,
        "{:?}",
        fake.open_watches()
    );
}

/// An L4Policy whose nodeSelector names another node's label is not enforced here (the
/// denied source passes, `/status` lists it); relabelling this node's Node makes it enforced,
/// and a heartbeat (a status write) is no new revision.
#[test]
fn an_l4policy_for_other_nodes_is_enforced_once_the_node_is_relabelled() {
    require_root!();
    let lab = Lab::new("k8snsel", &[SCANNER]);
    let (fake, kubeconfig) = api_server(&lab);
    let node = |labels: serde_json::Value, ready: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-a", "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        })
    };
    fake.put(node(serde_json::json!({"role": "worker"}), "True"))
        .unwrap();
    // Another node of the cluster: two agents share cluster rate limits (the Node count).
    fake.put(serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-b"},
    }))
    .unwrap();
    let mut policy = l4_policy(
        "edge",
        "allow",
        "- name: block\n  action: deny\n  from: [203.0.113.0/24]\n",
    );
    policy.push_str("  nodeSelector:\n    matchLabels: { role: edge }\n");
    fake.apply_yaml(&policy).unwrap();
    let admin = format!("127.0.0.1:{NODE_ADMIN}");
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
    assert_eq!(
        pings(&lab, SCANNER),
        3,
        "a policy for role=edge is enforced on a worker: {}",
        agent.log()
    );
    let (code, body) = http_get(NODE_ADMIN, "/status", "").expect("/status answers");
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
    assert_eq!(
        status["l4_not_for_this_node"],
        serde_json::json!(["edge"]),
        "{body}"
    );
    // The agent count of cluster rate limits: the cluster's two Nodes, without
    // --ratelimit-agents (counted at start, then every minute).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let backend = loop {
        let (_, body) = http_get(NODE_ADMIN, "/status", "").expect("/status answers");
        let status: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
        let backend = status["ratelimit_backend"].clone();
        if backend["agents_from"] == "kubernetes_nodes" || std::time::Instant::now() > deadline {
            break backend;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(backend["agents_from"], "kubernetes_nodes", "{backend}");
    assert_eq!(backend["agents"], 2, "{backend}");
    assert!(
        backend["agents_counted_seconds_ago"].is_number(),
        "{backend}"
    );

    // Heartbeats: no new revision.
    let applies = agent.log_count(POLICY_APPLIED);
    for ready in ["False", "True"] {
        fake.put(node(serde_json::json!({"role": "worker"}), ready))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        agent.log_count(POLICY_APPLIED),
        applies,
        "a heartbeat made a new revision: {}",
        agent.log()
    );

    // Relabelled: the policy is for this node now.
    fake.put(node(serde_json::json!({"role": "edge"}), "True"))
        .unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, applies + 1, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pings(&lab, SCANNER), 0, "the denied source got through");
    assert_eq!(pings(&lab, lab.ns_ip()), 3, "an allowed source was dropped");
    let (_, body) = http_get(NODE_ADMIN, "/status", "").expect("/status answers");
    let status: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
    assert_eq!(
        status["l4_not_for_this_node"],
        serde_json::json!([]),
        "{body}"
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

/// Listens on `listen` inside network namespace `netns` and forwards every connection to `to`
/// in this (root) namespace: a socket keeps the namespace it was made in, so one thread enters
/// the namespace for the listener only. The agent's connections to the API server then leave
/// through the enforced interface, and the server's replies arrive on it.
fn forward_from_netns(netns: &str, listen: SocketAddr, to: SocketAddr) {
    use std::os::fd::AsRawFd;
    let (tx, rx) = std::sync::mpsc::channel();
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        let home = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
        let target = std::fs::File::open(format!("/run/netns/{netns}")).expect("lab netns");
        // SAFETY: setns on open namespace files; only this thread changes namespace.
        assert_eq!(
            unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns into {netns}"
        );
        let listener = std::net::TcpListener::bind(listen);
        // SAFETY: as above, back to the namespace this thread started in.
        assert_eq!(
            unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns back"
        );
        let listener = listener.unwrap_or_else(|e| panic!("bind {listen} in {netns}: {e}"));
        tx.send(()).unwrap();
        for client in listener.incoming().flatten() {
            let Ok(server) = std::net::TcpStream::connect(to) else {
                continue;
            };
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c1, mut s1) = (client, server);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c1, &mut s1);
                let _ = s1.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut c2);
                let _ = c2.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the forwarder listens");
}

#[test]
fn a_deny_all_l4policy_does_not_cut_the_agent_off_its_api_server() {
    require_root!();
    let lab = Lab::new("k8sfs", &[SCANNER]);
    let (fake, kubeconfig) = api_server(&lab);
    // The API server, as the agent sees it, is in the lab's namespace: its replies arrive on
    // the interface the agent enforces on.
    let api = SocketAddr::new(lab.ns_ip().into(), FAILSAFE_API);
    forward_from_netns(lab.netns(), api, fake.addr());
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains(&fake.url()), "{text}");
    std::fs::write(
        &kubeconfig,
        text.replace(&fake.url(), &format!("http://{api}")),
    )
    .unwrap();

    fake.apply_yaml(&l4_policy("edge", "allow", "")).unwrap();
    // The `kubernetes` Service's endpoints, as a cluster has them (an address of the
    // documentation range: nothing answers there, the entry is what is checked).
    let api_slice = |ip: &str| {
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        })
    };
    fake.put(api_slice("192.0.2.77")).unwrap();
    let admin = format!("127.0.0.1:{FAILSAFE_ADMIN}");
    let mut agent = lab.start_agent(&[
        "--source",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--admin",
        &admin,
    ]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let log = agent.log();
    assert!(
        log.contains("lock-out protection") && log.contains(&api.to_string()),
        "the endpoint in force is logged: {log}"
    );
    let (code, status) = http_get(FAILSAFE_ADMIN, "/status", "").expect("/status");
    assert_eq!(code, 200, "{status}");
    assert!(status.contains("\"failsafe\""), "{status}");
    assert!(status.contains(&lab.ns_ip().to_string()), "{status}");
    assert!(status.contains("192.0.2.77"), "{status}");

    // The API server moves: the failsafe entry follows its EndpointSlice, without a restart.
    fake.put(api_slice("192.0.2.78")).unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, status) = http_get(FAILSAFE_ADMIN, "/status", "").expect("/status");
    assert!(status.contains("192.0.2.78"), "{status}");
    assert!(!status.contains("192.0.2.77"), "{status}");
    assert!(status.contains(&lab.ns_ip().to_string()), "{status}");
    assert!(
        agent
            .log()
            .contains("lock-out protection no longer covers this endpoint"),
        "{}",
        agent.log()
    );

    // Deny everything: pings from the namespace are dropped...
    fake.apply_yaml(&l4_policy("edge", "deny", "")).unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 3, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pings(&lab, SCANNER), 0, "deny-all let a ping through");
    // ...yet the agent still hears from its API server: the next change is enforced.
    fake.apply_yaml(&l4_policy(
        "edge",
        "deny",
        "- name: ping\n  action: allow\n  protocol: ICMP\n",
    ))
    .unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 4, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("the change after deny-all never arrived: {e}"));
    assert_eq!(
        pings(&lab, SCANNER),
        3,
        "the allow after deny-all is not enforced"
    );
    // And it was lock-out protection that let the replies through.
    let (_, metrics) = http_get(FAILSAFE_ADMIN, "/metrics", "").expect("/metrics");
    let passed = metric_value(
        &metrics,
        "tollgate_l4_unjudged_packets_total{reason=\"failsafe\"}",
    )
    .unwrap_or(0);
    assert!(passed > 0, "no reply counted as failsafe:\n{metrics}");
}

/// A GRPCRoute applied through the API is served to a real gRPC client (grpcio), and so are
/// its changes and its deletion (then no route: UNIMPLEMENTED).
#[test]
fn a_grpcroute_applied_through_the_api_is_served_and_so_are_its_changes() {
    use tollgate_tests::conformance::grpc::{make_calls, GrpcBackend};
    require_root!();
    let lab = Lab::new("gkgrpc", &[]);
    let _v1 = GrpcBackend::start("default/v1", GRPC_V1);
    let _v2 = GrpcBackend::start("default/v2", GRPC_V2);
    let (fake, kubeconfig) = api_server(&lab);
    let route = |backend: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{ name: echo, namespace: default }}\nspec:\n  parentRefs: [{{ name: edge }}]\n  rules:\n    - matches: [{{ method: {{ service: test.Echo, method: Say }} }}]\n      backendRefs: [{}]\n",
            to(backend)
        )
    };
    fake.apply_yaml(&documents(&[
        &gateway(&[("http", GRPC_PROXY, None)]),
        &backend_object("v1", &[GRPC_V1], ""),
        &backend_object("v2", &[GRPC_V2], ""),
        &route("v1"),
    ]))
    .unwrap();
    let mut agent = start_agent(
        &lab,
        GRPC_ADMIN,
        &[GRPC_PROXY],
        &[
            "--source",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    let say = || {
        let calls =
            [serde_json::json!({"method": "/test.Echo/Say", "metadata": [], "request": "hi"})];
        let results = make_calls(GRPC_PROXY, &calls).unwrap_or_else(|e| panic!("{e}"));
        let r = &results[0];
        (
            r["code"].as_str().unwrap_or_default().to_owned(),
            r["response"].as_str().unwrap_or_default().to_owned(),
        )
    };
    assert_eq!(
        say(),
        (
            "OK".to_owned(),
            "default/v1|/test.Echo/Say|-|-|hi".to_owned()
        )
    );

    // The route moves to v2.
    fake.apply_yaml(&route("v2")).unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(say().1, "default/v2|/test.Echo/Say|-|-|hi");

    // Deleted: no route matches the call.
    fake.delete(
        "gateway.networking.k8s.io/v1",
        "GRPCRoute",
        Some("default"),
        "echo",
    )
    .unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 3, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(say(), ("UNIMPLEMENTED".to_owned(), String::new()));
}
