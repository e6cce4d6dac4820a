//! `tollgate controller` (the real binary) against the fake API server: the status it writes,
//! leader election between two processes, and the writes it does not make. No root needed.
//! What it makes of Secrets, Services and GRPCRoutes: `kube_controller_refs.rs`.
//!
//! Run with `TOLLGATE_BIN=... cargo test -p tollgate-tests --test kube_controller`. Set
//! `TOLLGATE_QUIET_SECONDS` to watch a longer quiet period (the figure in docs/kubernetes.md
//! was measured with 60).
use std::time::{Duration, Instant};

use tollgate_tests::admin;
use tollgate_tests::kube_controller::*;
use tollgate_tests::kube_fake::Fault;

#[test]
fn routes_and_gateways_get_their_status_and_a_quiet_cluster_gets_no_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, kubeconfig) = start_fake(dir.path());
    // The route `ok` already has an entry of another controller: it must stay.
    let other = with_other_parent(route("ok", "app", "/ok"));
    let l4 = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: edge }\nspec:\n  defaultAction: allow\n  rules: []\n";
    let limit = "apiVersion: tollgate.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: { name: slow, namespace: apps }\nspec:\n  targetRefs: [{ group: gateway.networking.k8s.io, kind: HTTPRoute, name: ok }]\n  limits:\n    - { key: clientIP, requests: 3, per: 1m }\n";
    // A Backend the compiler leaves out (port 0), next to the valid `app`.
    let bad_backend = BACKEND
        .replace("name: app", "name: bad")
        .replace("port: 9000", "port: 0");
    let docs = [
        GATEWAY,
        BACKEND,
        &bad_backend,
        NODE,
        l4,
        limit,
        &other,
        &route("broken", "missing", "/broken"),
    ];
    fake.apply_yaml(&docs.join("---\n")).unwrap();
    let controller = Controller::start(&kubeconfig, "solo", dir.path());

    let ok = wait_for(Duration::from_secs(20), "the status of route ok", || {
        our_parent(&fake, "ok")
    });
    let g = generation(&fake, "HTTPRoute", "ok");
    assert_eq!(ok["parentRef"]["name"], "edge", "{ok}");
    assert_eq!(ok["parentRef"]["namespace"], "apps", "{ok}");
    for type_ in ["Accepted", "ResolvedRefs"] {
        let c = condition(&ok["conditions"], type_);
        assert_eq!(c["status"], "True", "{c}");
        assert_eq!(c["observedGeneration"], g, "{c}");
        assert!(c["lastTransitionTime"].is_string(), "{c}");
    }
    assert_other_parent_kept(&fake, "HTTPRoute", "ok");
    let broken = wait_for(
        Duration::from_secs(10),
        "the status of route broken",
        || our_parent(&fake, "broken"),
    );
    assert_eq!(
        condition(&broken["conditions"], "Accepted")["status"],
        "True"
    );
    let resolved = condition(&broken["conditions"], "ResolvedRefs");
    assert_eq!(
        (&resolved["status"], &resolved["reason"]),
        (&"False".into(), &"BackendNotFound".into()),
        "{resolved}"
    );

    let gw = gateway_status(&fake, "edge", Duration::from_secs(10));
    let programmed = condition(&gw["conditions"], "Programmed");
    assert_eq!(
        (&programmed["status"], &programmed["message"]),
        (&"True".into(), &"1/1 nodes programmed".into()),
        "{gw}"
    );
    assert_eq!(condition(&gw["conditions"], "Accepted")["status"], "True");
    assert_eq!(gw["listeners"][0]["name"], "http");
    assert_eq!(gw["listeners"][0]["attachedRoutes"], 2, "{gw}");
    // An L4Policy (cluster-scoped): enforced by the one ready node.
    let l4 = l4_policy_status(&fake, "edge", Duration::from_secs(10));
    assert_eq!(l4["nodesEnforcing"], 1, "{l4}");
    assert_eq!(l4["observedGeneration"], 1, "{l4}");
    assert_eq!(
        condition(&l4["conditions"], "Programmed")["message"],
        "1/1 nodes enforce it"
    );
    // A RateLimitPolicy: its ancestor is the Gateway of the route it targets.
    let slow = wait_for(
        Duration::from_secs(10),
        "the RateLimitPolicy's status",
        || {
            let s = fake.get(
                "tollgate.dev/v1alpha1",
                "RateLimitPolicy",
                Some("apps"),
                "slow",
            )?["status"]
                .clone();
            s["ancestors"].is_array().then_some(s)
        },
    );
    assert_eq!(
        slow["ancestors"][0]["ancestorRef"]["name"], "edge",
        "{slow}"
    );
    assert_eq!(slow["ancestors"][0]["controllerName"], CONTROLLER);
    assert_eq!(
        condition(&slow["ancestors"][0]["conditions"], "Accepted")["status"],
        "True"
    );
    let class = fake.get(GW, "GatewayClass", None, "tollgate").unwrap()["status"].clone();
    assert_eq!(
        condition(&class["conditions"], "Accepted")["status"],
        "True",
        "{class}"
    );
    // The Backends: `app` accepted, `bad` left out with its problem, each with its generation.
    let backend_status = |name: &str| {
        wait_for(
            Duration::from_secs(10),
            &format!("the status of Backend {name}"),
            || {
                let o = fake.get("tollgate.dev/v1alpha1", "Backend", Some("apps"), name)?;
                let s = o["status"].clone();
                s["conditions"]
                    .is_array()
                    .then(|| (s, o["metadata"]["generation"].clone()))
            },
        )
    };
    let (app, g_app) = backend_status("app");
    let accepted = condition(&app["conditions"], "Accepted");
    assert_eq!(
        (&accepted["status"], &accepted["reason"]),
        (&"True".into(), &"Accepted".into()),
        "{app}"
    );
    assert_eq!(accepted["observedGeneration"], g_app, "{app}");
    assert!(accepted["lastTransitionTime"].is_string(), "{app}");
    let (bad, g_bad) = backend_status("bad");
    let refused = condition(&bad["conditions"], "Accepted");
    assert_eq!(
        (&refused["status"], &refused["reason"]),
        (&"False".into(), &"Invalid".into()),
        "{bad}"
    );
    assert_eq!(refused["observedGeneration"], g_bad, "{bad}");
    assert!(
        condition_message(&bad["conditions"], "Accepted").contains("spec.endpoints[0].ip.port"),
        "{bad}"
    );
    // Every write went to /status with the controller's field manager.
    for r in fake
        .requests()
        .iter()
        .filter(|r| r.is_write() && !r.path.contains("/leases"))
    {
        assert!(r.path.ends_with("/status"), "{} {}", r.method, r.path);
        assert_eq!(
            r.field_manager.as_deref(),
            Some("tollgate-controller"),
            "{r:?}"
        );
    }

    // Three new generations of `ok` in a burst (within the 10 s since its first write): one
    // write of its status, carrying the last generation, at the end of the pacing interval;
    // the transition times stay (the statuses did not change).
    let before = condition(&ok["conditions"], "Accepted")["lastTransitionTime"].clone();
    fake.clear_requests();
    for path in ["/ok-v2", "/ok-v3", "/ok-v4"] {
        fake.apply_yaml(&route("ok", "app", path)).unwrap();
    }
    let g2 = generation(&fake, "HTTPRoute", "ok");
    assert_eq!(g2, g + 3);
    let ok2 = wait_for(
        Duration::from_secs(15),
        "the new generation in the status",
        || {
            our_parent(&fake, "ok")
                .filter(|p| condition(&p["conditions"], "Accepted")["observedGeneration"] == g2)
        },
    );
    assert_eq!(
        condition(&ok2["conditions"], "Accepted")["lastTransitionTime"],
        before
    );
    std::thread::sleep(Duration::from_secs(2));
    let requests = fake.requests();
    let writes = status_writes(&requests);
    let of_ok = writes
        .iter()
        .filter(|r| r.path.ends_with("/httproutes/ok/status"))
        .count();
    eprintln!("measured: {} status writes after three changed generations of one route ({of_ok} of that route): {:?}",
        writes.len(), writes.iter().map(|r| r.path.as_str()).collect::<Vec<_>>());
    // One when the burst came within the interval (as it does here, unless the machine is
    // very slow: then the first change is written at once and the rest coalesced).
    assert!(
        (1..=2).contains(&of_ok),
        "{of_ok} writes of route ok for one burst of three generations"
    );
    assert_eq!(writes.len(), of_ok, "only the changed route is written");

    // Nothing changes: no status write at all (the lease is still renewed).
    let quiet: u64 = std::env::var("TOLLGATE_QUIET_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    fake.clear_requests();
    std::thread::sleep(Duration::from_secs(quiet));
    let requests = fake.requests();
    let writes = status_writes(&requests);
    let lease_writes = requests
        .iter()
        .filter(|r| r.is_write() && r.path.contains("/leases/"))
        .count();
    eprintln!(
        "measured: over {quiet} quiet seconds, {} status writes, {lease_writes} lease writes, {} requests in all",
        writes.len(),
        requests.len()
    );
    assert!(
        writes.is_empty(),
        "status writes in a quiet cluster: {writes:?}\n{}",
        controller.log()
    );
    assert!(lease_writes > 0, "the leader renews its lease");

    // An L4Policy for other nodes: node-a reports it not selected (`notForThisNode`), so it
    // selects no node and none enforces it; `edge` still selects the one node.
    let gpu = "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata: { name: gpu }\nspec:\n  nodeSelector: { matchLabels: { gpu: 'yes' } }\n  defaultAction: allow\n  rules: []\n";
    let node_a = format!("{NODE}  notForThisNode: [gpu]\n");
    fake.apply_yaml(&[gpu, node_a.as_str()].join("---\n"))
        .unwrap();
    let gpu = l4_policy_status(&fake, "gpu", Duration::from_secs(15));
    assert_eq!(gpu["nodesSelected"], 0, "{gpu}");
    assert_eq!(gpu["nodesEnforcing"], 0, "{gpu}");
    assert_eq!(
        condition(&gpu["conditions"], "Programmed")["message"],
        "0/0 nodes enforce it (1 of 1 nodes are not selected by its nodeSelector)"
    );
    let edge = fake
        .get("tollgate.dev/v1alpha1", "L4Policy", None, "edge")
        .unwrap()["status"]
        .clone();
    assert_eq!(edge["nodesSelected"], 1, "{edge}");
    assert_eq!(edge["nodesEnforcing"], 1, "{edge}");
}

#[test]
fn only_the_leader_writes_and_another_replica_takes_over_when_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, kubeconfig) = start_fake(dir.path());
    fake.apply_yaml(&[GATEWAY, BACKEND, NODE, &route("r", "app", "/")].join("---\n"))
        .unwrap();
    let a = Controller::start(&kubeconfig, "replica-a", dir.path());
    let b = Controller::start(&kubeconfig, "replica-b", dir.path());
    wait_for(Duration::from_secs(20), "the route's status", || {
        our_parent(&fake, "r")
    });
    let holder = wait_for(Duration::from_secs(5), "a lease holder", || {
        lease_holder(&fake)
    });
    let (leader, standby) = if holder == "replica-a" {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(leader.leader(), Some(true));
    assert_eq!(standby.leader(), Some(false));
    assert!(leader.writes() > 0);
    assert_eq!(standby.writes(), 0, "the standby wrote status");

    // SIGTERM: the leader gives the lease up, the standby takes it at once (no lease duration).
    let stopped = Instant::now();
    leader.signal("TERM");
    wait_for(
        Duration::from_secs(lease_seconds()),
        "the standby to lead after a release",
        || {
            (lease_holder(&fake).as_deref()
                == Some(if holder == "replica-a" {
                    "replica-b"
                } else {
                    "replica-a"
                }))
            .then_some(())
        },
    );
    let released = stopped.elapsed();
    eprintln!("measured: takeover after SIGTERM (lease released) in {released:?}");
    drop(leader);
    let c = Controller::start(&kubeconfig, "replica-c", dir.path());
    wait_for(Duration::from_secs(5), "the new leader's metrics", || {
        standby.leader().filter(|l| *l)
    });
    wait_for(Duration::from_secs(10), "replica-c to be up", || c.leader());

    // SIGKILL: no release; replica-c takes over once the lease has gone unrenewed for its
    // duration (as seen on its own clock), and the status stays correct.
    let killed = Instant::now();
    standby.signal("KILL");
    wait_for(
        Duration::from_secs(lease_seconds() * 3),
        "replica-c to take over the lease",
        || (lease_holder(&fake).as_deref() == Some("replica-c")).then_some(()),
    );
    let takeover = killed.elapsed();
    eprintln!(
        "measured: takeover after SIGKILL in {takeover:?} (lease duration {} s)",
        lease_seconds()
    );
    // At most the duration after the last renewal the new leader saw, plus one renewal period
    // of its own to notice, plus slack for a loaded machine.
    assert!(
        takeover <= Duration::from_secs(lease_seconds() + lease_seconds().div_ceil(7) + 2),
        "takeover took {takeover:?}"
    );
    fake.apply_yaml(&route("r", "missing", "/")).unwrap();
    let g = generation(&fake, "HTTPRoute", "r");
    let p = wait_for(Duration::from_secs(20), "the new leader's status", || {
        our_parent(&fake, "r")
            .filter(|p| condition(&p["conditions"], "ResolvedRefs")["observedGeneration"] == g)
    });
    assert_eq!(
        condition(&p["conditions"], "ResolvedRefs")["reason"],
        "BackendNotFound",
        "{p}"
    );
    assert!(c.writes() > 0);
}

#[test]
fn a_failed_status_write_is_counted_and_retried_until_it_lands() {
    let dir = tempfile::tempdir().unwrap();
    let (fake, kubeconfig) = start_fake(dir.path());
    fake.apply_yaml(&[GATEWAY, BACKEND, NODE, &route("r", "app", "/")].join("---\n"))
        .unwrap();
    // The first two writes of the route's status fail with 500 (kube's client itself retries
    // 429, 503 and 504; a 500 reaches the controller).
    fake.inject(
        Fault::status(500)
            .method("PATCH")
            .path_contains("/httproutes/r/status")
            .times(2),
    );
    let started = Instant::now();
    let controller = Controller::start(&kubeconfig, "solo", dir.path());
    let p = wait_for(
        Duration::from_secs(30),
        "the route's status after the failures",
        || our_parent(&fake, "r"),
    );
    eprintln!(
        "measured: status landed {:?} after start, through two failed writes",
        started.elapsed()
    );
    assert_eq!(condition(&p["conditions"], "Accepted")["status"], "True");
    let failed = tollgate_tests::metric_value(
        &admin::metrics(controller.admin),
        "tollgate_controller_status_write_errors_total{kind=\"HTTPRoute\"}",
    );
    assert_eq!(failed, Some(2));
    let attempts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with("/httproutes/r/status"))
        .count();
    assert_eq!(attempts, 3, "two failures, then the write that landed");
}

#[test]
fn a_gateway_that_leaves_the_class_keeps_no_status_of_tollgates() {
    // The Gateway API: a controller's status is its own to remove. A Gateway moved to another
    // implementation's class used to keep Tollgate's Accepted and Programmed forever.
    let dir = tempfile::tempdir().unwrap();
    let (fake, kubeconfig) = start_fake(dir.path());
    let other_class = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: other }\nspec:\n  controllerName: example.com/other\n";
    fake.apply_yaml(&[GATEWAY, BACKEND, NODE, other_class].join("---\n"))
        .unwrap();
    let controller = Controller::start(&kubeconfig, "solo", dir.path());
    let gw = gateway_status(&fake, "edge", Duration::from_secs(20));
    assert_eq!(condition(&gw["conditions"], "Accepted")["status"], "True");

    let moved = GATEWAY.replace("  gatewayClassName: tollgate", "  gatewayClassName: other");
    assert_ne!(moved, GATEWAY);
    fake.apply_yaml(&moved).unwrap();
    // Within the write interval (10 s) and a round: nothing of Tollgate's is left.
    wait_for(
        Duration::from_secs(25),
        "the Gateway's status without Tollgate's fields",
        || {
            let s = status(&fake, "Gateway", "edge");
            (s["conditions"].is_null() && s["listeners"].is_null()).then_some(())
        },
    );
    // And it stays so: no write for it afterwards.
    let writes = controller.writes();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(controller.writes(), writes, "{}", controller.log());
}
