//! The real agent writes its node's `TollgateNode` (server-side apply, field manager
//! `tollgate-agent`) against the fake API server: the revision it enforces, the objects it left
//! out, Warning and Normal events about them; one status write per revision change, and none
//! at all while nothing changes (the requests the fake received are counted).
//!
//! `TOLLGATE_QUIET_SECS` sets the quiet period (default 10 s; docs/kubernetes.md's figure is
//! from a run with 60).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tollgate_tests::kube_fake::{tollgate_kinds, FakeApiServer, RequestRecord};
use tollgate_tests::l7::{backend_object, documents, gateway, route_object, to};
use tollgate_tests::{l4_policy, require_root, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

const ADMIN: u16 = 18340;
const PROXY: u16 = 18341;
const NODE: &str = "node-status-a";
const NODE_PATH: &str = "/apis/tollgate.dev/v1alpha1/tollgatenodes/node-status-a";

fn api_server(lab: &Lab) -> (FakeApiServer, PathBuf) {
    let fake = FakeApiServer::start(tollgate_kinds());
    let path = lab.config.base_dir.join("kubeconfig");
    fake.write_kubeconfig(&path)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    (fake, path)
}

/// The node's object, once `done` holds for it (panics after `APPLY_TIMEOUT`).
fn wait_for_node(fake: &FakeApiServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + APPLY_TIMEOUT;
    loop {
        let node = fake.get("tollgate.dev/v1alpha1", "TollgateNode", None, NODE);
        if let Some(n) = &node {
            if done(n) {
                return n.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the TollgateNode is {node:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Events about the node, by (type, reason).
fn events(fake: &FakeApiServer) -> Vec<(String, String, String)> {
    fake.list("events.k8s.io/v1", "Event")
        .into_iter()
        .filter(|e| e["regarding"]["name"] == NODE)
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["note"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The writes (POST, PUT, PATCH, DELETE) of the node's object and of events.
fn writes(requests: &[RequestRecord]) -> (Vec<&RequestRecord>, Vec<&RequestRecord>) {
    let node = requests
        .iter()
        .filter(|r| r.is_write() && r.path.starts_with(NODE_PATH))
        .collect();
    let events = requests
        .iter()
        .filter(|r| r.is_write() && r.path.contains("/events"))
        .collect();
    (node, events)
}

/// The revision the agent's last "policy applied" line names.
fn logged_revision(log: &str) -> String {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains(POLICY_APPLIED))
        .expect("a policy was applied");
    let start = line.find("revision=").expect("the revision is logged") + "revision=".len();
    line[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

#[test]
fn the_agent_writes_its_node_status_once_per_change_and_never_while_nothing_changes() {
    require_root!();
    let lab = Lab::new("k8snode", &[]);
    let (fake, kubeconfig) = api_server(&lab);
    let deny = |cidr: &str| {
        l4_policy(
            "edge",
            "allow",
            &format!("- name: block\n  action: deny\n  from: [{cidr}]\n"),
        )
    };
    fake.apply_yaml(&documents(&[
        &deny("203.0.113.0/24"),
        &gateway(&[("http", PROXY, None)]),
        &backend_object("app", &[18342], ""),
        &route_object(
            "app",
            &format!("  rules:\n    - backendRefs: [{}]\n", to("app")),
        ),
        // Port 0 is no port: this Backend is left out, the rest is enforced.
        &backend_object("broken", &[0], ""),
    ]))
    .unwrap();
    let admin = format!("127.0.0.1:{ADMIN}");
    let args = [
        "--source",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-name",
        NODE,
        "--admin",
        &admin,
        "--gateway-address",
        "127.0.0.1",
        // Passes and drift checks every 2 s: plenty of chances to write for nothing.
        "--interval",
        "2s",
    ];
    let mut agent = lab.start_agent(&args);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let revision = logged_revision(&agent.log());
    assert!(revision.starts_with("k8s:"), "{revision}");

    // The object appears with the revision enforced, what was left out, and the listener.
    let node = wait_for_node(&fake, "the first revision", |n| {
        n["status"]["revision"] == revision.as_str()
    });
    let status = &node["status"];
    assert_eq!(status["refusedCount"], 1, "{status:#}");
    assert_eq!(status["refused"][0]["kind"], "Backend", "{status:#}");
    assert_eq!(status["refused"][0]["name"], "broken", "{status:#}");
    assert!(status["enforcedAt"].is_string(), "{status:#}");
    assert_eq!(
        status["listeners"][0]["gatewayListeners"][0], "default/edge/http",
        "{status:#}"
    );
    assert_eq!(
        status["listeners"][0]["address"],
        format!("127.0.0.1:{PROXY}")
    );
    assert_eq!(status["interfaces"][0]["name"], lab.iface(), "{status:#}");
    assert!(
        status["interfaces"][0]["attachMode"].is_string(),
        "{status:#}"
    );
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True", "{status:#}");
    let kinds: Vec<(&str, i64)> = status["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kind"].as_str().unwrap(), k["count"].as_i64().unwrap()))
        .collect();
    assert!(kinds.contains(&("Backend", 2)), "{kinds:?}");
    assert!(kinds.contains(&("L4Policy", 1)), "{kinds:?}");
    // Server-side apply, by the agent's field manager, forced; the status through /status.
    let requests = fake.requests();
    let (node_writes, _) = writes(&requests);
    assert!(
        node_writes.iter().all(|r| r.method == "PATCH"
            && r.field_manager.as_deref() == Some("tollgate-agent")
            && r.force == Some(true)
            && r.content_type.as_deref() == Some("application/apply-patch+yaml")),
        "{node_writes:#?}"
    );
    // The first start: the object read (missing), created, its status applied.
    let reads = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path == NODE_PATH)
        .count();
    let paths: Vec<&str> = node_writes.iter().map(|r| r.path.as_str()).collect();
    eprintln!(
        "first start: {reads} read(s) and {} write(s) of the TollgateNode",
        node_writes.len()
    );
    assert_eq!(reads, 1);
    assert_eq!(paths, [NODE_PATH.to_owned(), format!("{NODE_PATH}/status")]);
    let managers = node["metadata"]["managedFields"].to_string();
    assert!(managers.contains("tollgate-agent"), "{managers}");
    // The events: the revision applied, the Backend refused.
    let deadline = Instant::now() + APPLY_TIMEOUT;
    while events(&fake).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = events(&fake);
    assert!(
        seen.iter()
            .any(|(t, r, n)| t == "Normal" && r == "RevisionApplied" && n.contains(&revision)),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|(t, r, n)| t == "Warning"
            && r == "ObjectsRefused"
            && n.contains("Backend default/broken")),
        "{seen:#?}"
    );
    let event = fake
        .list("events.k8s.io/v1", "Event")
        .into_iter()
        .find(|e| e["regarding"]["name"] == NODE)
        .unwrap();
    assert_eq!(event["reportingController"], "tollgate.dev/agent");
    assert_eq!(event["reportingInstance"], NODE);
    assert_eq!(event["regarding"]["uid"], node["metadata"]["uid"]);

    // A change: one more status write, for the new revision.
    fake.clear_requests();
    fake.apply_yaml(&deny("198.51.100.0/24")).unwrap();
    agent
        .wait_for_log_count(POLICY_APPLIED, 2, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let second = logged_revision(&agent.log());
    assert_ne!(second, revision);
    wait_for_node(&fake, "the second revision", |n| {
        n["status"]["revision"] == second.as_str()
    });
    // Settled: the events of the change are sent right after its status.
    std::thread::sleep(Duration::from_millis(500));
    let requests = fake.requests();
    let (node_writes, event_writes) = writes(&requests);
    eprintln!(
        "one revision change: {} write(s) of the TollgateNode, {} event write(s)",
        node_writes.len(),
        event_writes.len()
    );
    assert_eq!(node_writes.len(), 1, "{node_writes:#?}");
    assert!(node_writes[0].path.ends_with("/status"));
    // RevisionApplied, and ObjectsRefused (the Backend is still left out, in a new revision).
    assert_eq!(event_writes.len(), 2, "{event_writes:#?}");

    // An L4Policy that does not compile refuses the whole revision: Degraded, one Warning.
    fake.clear_requests();
    fake.apply_yaml(&deny("not-a-cidr")).unwrap();
    let node = wait_for_node(&fake, "the refused revision", |n| {
        n["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Degraded" && c["status"] == "True")
        })
    });
    assert_eq!(
        node["status"]["revision"],
        second.as_str(),
        "the last good revision stays"
    );
    let deadline = Instant::now() + APPLY_TIMEOUT;
    while !events(&fake).iter().any(|(_, r, _)| r == "RevisionRefused") && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = events(&fake);
    assert!(
        seen.iter()
            .any(|(t, r, n)| t == "Warning" && r == "RevisionRefused" && n.contains("L4Policy")),
        "{seen:#?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let requests = fake.requests();
    let (node_writes, event_writes) = writes(&requests);
    eprintln!(
        "one refused revision: {} write(s) of the TollgateNode, {} event write(s)",
        node_writes.len(),
        event_writes.len()
    );
    assert_eq!(
        (node_writes.len(), event_writes.len()),
        (1, 1),
        "{node_writes:#?} {event_writes:#?}"
    );

    // Quiet: nothing changes, the agent passes and checks every 2 s, nothing is written.
    let quiet: u64 = std::env::var("TOLLGATE_QUIET_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    fake.clear_requests();
    std::thread::sleep(Duration::from_secs(quiet));
    let requests = fake.requests();
    let (node_writes, event_writes) = writes(&requests);
    let all_writes = requests.iter().filter(|r| r.is_write()).count();
    eprintln!(
        "{quiet} quiet seconds: {} write(s) of the TollgateNode, {} event write(s), {all_writes} write(s) in all, {} request(s) in all",
        node_writes.len(),
        event_writes.len(),
        requests.len()
    );
    assert_eq!(all_writes, 0, "{requests:#?}");
    assert!(
        agent.log_count("could not write the TollgateNode") == 0,
        "{}",
        agent.log()
    );

    // A restart that changes nothing (the same refusal, the same last good revision enforced
    // from the state directory) reads the object once and writes nothing.
    agent.sigterm(Duration::from_secs(10));
    fake.clear_requests();
    let mut agent = lab.start_agent(&args);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + APPLY_TIMEOUT;
    while !fake
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path == NODE_PATH)
    {
        assert!(
            Instant::now() < deadline,
            "the agent never read its TollgateNode"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    let requests = fake.requests();
    let (node_writes, event_writes) = writes(&requests);
    eprintln!(
        "restart, nothing changed: {} write(s) of the TollgateNode, {} event write(s)",
        node_writes.len(),
        event_writes.len()
    );
    assert_eq!(
        (node_writes.len(), event_writes.len()),
        (0, 0),
        "{node_writes:#?} {event_writes:#?}\n{}",
        agent.log()
    );
}

/// With a directory source, `--node-name` and a kubeconfig, the agent writes its
/// `TollgateNode` too: the revision is the directory's.
#[test]
fn a_directory_source_with_a_node_name_and_a_kubeconfig_writes_the_node_status_too() {
    require_root!();
    let lab = Lab::new("k8sdirnode", &[]);
    let (fake, kubeconfig) = api_server(&lab);
    // The node's Node: its TollgateNode is owned by it (deleted with it by the garbage
    // collector).
    let owner = fake
        .apply_yaml(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{ name: {NODE} }}\n"
        ))
        .unwrap();
    let owner_uid = owner[0]["metadata"]["uid"].as_str().unwrap().to_owned();
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block\n  action: deny\n  from: [203.0.113.0/24]\n",
        ),
    );
    let admin = format!("127.0.0.1:{}", ADMIN + 3);
    let mut agent = lab.start_agent(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-name",
        NODE,
        "--admin",
        &admin,
    ]);
    agent
        .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let revision = logged_revision(&agent.log());
    assert!(revision.starts_with("dir:"), "{revision}");
    let node = wait_for_node(&fake, "the directory's revision", |n| {
        n["status"]["revision"] == revision.as_str()
    });
    assert_eq!(node["status"]["objects"][0]["kind"], "L4Policy", "{node:#}");
    let owners = &node["metadata"]["ownerReferences"];
    assert_eq!(owners.as_array().map(Vec::len), Some(1), "{node:#}");
    assert_eq!(owners[0]["apiVersion"], "v1", "{node:#}");
    assert_eq!(owners[0]["kind"], "Node", "{node:#}");
    assert_eq!(owners[0]["name"], NODE, "{node:#}");
    assert_eq!(owners[0]["uid"], owner_uid.as_str(), "{node:#}");
    // The agent reads nothing else from the API server: no watches.
    assert_eq!(fake.open_watch_count(), 0, "{:?}", fake.open_watches());

    // The Node is deleted, and its TollgateNode with it (the garbage collector's part, which
    // the fake does not play, done by hand); the agent runs on and applies a new revision. It
    // does not create the object again while the Node is gone, so none is left unowned.
    fake.delete("v1", "Node", None, NODE).unwrap();
    fake.delete("tollgate.dev/v1alpha1", "TollgateNode", None, NODE)
        .unwrap();
    let applied = agent.log_count(POLICY_APPLIED);
    lab.write_policy(
        "edge.yaml",
        &l4_policy(
            "edge",
            "allow",
            "- name: block\n  action: deny\n  from: [198.51.100.0/24]\n",
        ),
    );
    agent.sighup();
    tollgate_tests::kube_controller::wait_for(APPLY_TIMEOUT, "the new revision applied", || {
        (agent.log_count(POLICY_APPLIED) > applied).then_some(())
    });
    agent
        .wait_for_log(
            "was deleted: its TollgateNode is not created again",
            APPLY_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // Two tries after the first (1 and 2 s later, with jitter), each a read of the Node that
    // finds none: neither creates the object.
    let node_path = format!("/api/v1/nodes/{NODE}");
    let node_reads = || {
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path == node_path)
            .count()
    };
    let reads = node_reads();
    tollgate_tests::kube_controller::wait_for(APPLY_TIMEOUT, "two more tries", || {
        (node_reads() >= reads + 2).then_some(())
    });
    assert_eq!(
        fake.get("tollgate.dev/v1alpha1", "TollgateNode", None, NODE),
        None,
        "created again without its Node"
    );
    // A Node of that name again: a new object, owned by the new Node, with the new revision.
    let owner = fake
        .apply_yaml(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{ name: {NODE} }}\n"
        ))
        .unwrap();
    let new_uid = owner[0]["metadata"]["uid"].as_str().unwrap().to_owned();
    assert_ne!(new_uid, owner_uid);
    let revision = logged_revision(&agent.log());
    let node = wait_for_node(&fake, "the object created for the new Node", |n| {
        n["status"]["revision"] == revision.as_str()
    });
    assert_eq!(
        node["metadata"]["ownerReferences"][0]["uid"],
        new_uid.as_str(),
        "{node:#}"
    );
}
