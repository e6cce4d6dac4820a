//! Lock-out protection in the real XDP program (`BPF_PROG_TEST_RUN`): the API server's TCP
//! replies pass a deny-all policy, nothing else from it does, and a change of the failsafe
//! port flips atomically with the revision. Needs root (CI runs as root).
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::testrun::{frame, FrameOptions, TestRig, TEST_RUN_INTERFACE, XDP_DROP, XDP_PASS};
use super::{counters, XDP_PROGRAM};
use tollgate_compile::l4::failsafe::Failsafe;
use tollgate_compile::l4::packet::{Packet, L4};
use tollgate_compile::l4::policy::{Action, Mode, Policy, Rule};
use tollgate_compile::l4::{compile, compile_with_failsafe, L4Snapshot};

const API4: &str = "10.96.0.10";
const API6: &str = "fd00:96::10";

/// `defaultAction: deny`, and a deny rule naming the API server's addresses: without lock-out
/// protection nothing from them passes.
fn deny_all() -> Vec<Policy> {
    let mut deny = Rule::new("no-api", Action::Deny);
    deny.from = Some(vec![
        format!("{API4}/32").parse().unwrap(),
        format!("{API6}/128").parse().unwrap(),
    ]);
    vec![Policy {
        name: "lockdown".into(),
        file: "lockdown.yaml".into(),
        mode: Mode::Enforce,
        default_action: Action::Deny,
        interfaces: None,
        rules: vec![deny],
    }]
}

fn failsafe(port4: u16, port6: u16) -> Vec<Failsafe> {
    vec![
        Failsafe::new(API4.parse().unwrap(), port4, "test"),
        Failsafe::new(API6.parse().unwrap(), port6, "test"),
    ]
}

fn packet(src: &str, protocol: u8, dport: u16) -> Packet {
    Packet {
        src: src.parse::<IpAddr>().unwrap(),
        protocol,
        l4: L4::Port(dport),
    }
}

fn sent_from(p: &Packet, sport: u16) -> Vec<u8> {
    frame(
        p,
        FrameOptions {
            src_port: Some(sport),
            ..Default::default()
        },
    )
}

fn compiled(failsafe: &[Failsafe]) -> L4Snapshot {
    compile_with_failsafe(&deny_all(), &[TEST_RUN_INTERFACE.into()], failsafe)
        .unwrap_or_else(|e| panic!("compile: {e}"))
}

/// (policy, rule, action, reason) -> packets.
fn rule_counters(rig: &TestRig) -> BTreeMap<(String, String, &'static str), u64> {
    counters::read(&rig.pin_dir(), &rig.state_dir())
        .unwrap_or_else(|e| panic!("counters: {e}"))
        .rules
        .into_iter()
        .map(|r| ((r.policy, r.rule, r.action), r.packets))
        .collect()
}

fn failsafe_passed(rig: &TestRig) -> u64 {
    counters::read(&rig.pin_dir(), &rig.state_dir())
        .unwrap_or_else(|e| panic!("counters: {e}"))
        .stats
        .failsafe
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn the_api_servers_tcp_replies_pass_a_deny_all_policy_and_nothing_else_from_it() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    // Without lock-out protection the server's replies are dropped by the deny rule.
    let reply4 = packet(API4, 6, 41000);
    rig.apply(&compile(&deny_all(), &[TEST_RUN_INTERFACE.into()]).unwrap())
        .unwrap();
    assert_eq!(rig.run(&sent_from(&reply4, 6443)).unwrap(), XDP_DROP);
    assert_eq!(failsafe_passed(&rig), 0);

    let s = compiled(&failsafe(6443, 443));
    rig.apply(&s).unwrap();
    let reply6 = packet(API6, 6, 41000);
    // (packet, TCP/UDP source port, expected action, passed by the failsafe)
    let cases = [
        (reply4, 6443, XDP_PASS, true),
        (reply6, 443, XDP_PASS, true),
        // The same address, another source port: the policy judges (deny rule).
        (reply4, 6444, XDP_DROP, false),
        (reply4, 443, XDP_DROP, false),
        (reply6, 6443, XDP_DROP, false),
        // A connection *to* the node's port 6443 from the server's address is not a reply.
        (packet(API4, 6, 6443), 40000, XDP_DROP, false),
        // UDP from the server's address and port is not the API connection.
        (packet(API4, 17, 41000), 6443, XDP_DROP, false),
        (packet(API6, 17, 41000), 443, XDP_DROP, false),
        // Other addresses, even next door and with the server's port: the default denies.
        (packet("10.96.0.11", 6, 41000), 6443, XDP_DROP, false),
        (packet("fd00:96::11", 6, 41000), 443, XDP_DROP, false),
        (packet("192.0.2.1", 6, 41000), 6443, XDP_DROP, false),
    ];
    let mut expected_failsafe = 0;
    for (p, sport, action, by_failsafe) in cases {
        let got = rig.run(&sent_from(&p, sport)).unwrap();
        assert_eq!(got, action, "{p:?} from port {sport}");
        // The software model (what `explain` reads) agrees with the kernel.
        let model = s.decide_with_source_port(TEST_RUN_INTERFACE, &p, Some(sport));
        assert_eq!(
            model.outcome == tollgate_compile::l4::packet::Outcome::Pass,
            action == XDP_PASS,
            "model {model:?} for {p:?} from port {sport}"
        );
        expected_failsafe += u64::from(by_failsafe);
        assert_eq!(failsafe_passed(&rig), expected_failsafe, "{p:?} {sport}");
    }
    // The drops were the policy's: the deny rule for the server's address, the default for
    // the others; the failsafe passes reached no rule counter.
    let got = rule_counters(&rig);
    let key = |rule: &str, action| ("lockdown".to_string(), rule.to_string(), action);
    assert_eq!(got.get(&key("no-api", "drop")), Some(&7), "{got:?}");
    assert_eq!(got.get(&key("(default)", "drop")), Some(&3), "{got:?}");
    assert_eq!(got.len(), 2, "no other counter moved: {got:?}");
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn a_failsafe_port_change_flips_with_the_revision_under_traffic() {
    // A protects 10.96.0.10:6443, B 10.96.0.10:443. A reply from port 6443 is passed by the
    // failsafe under A and dropped by the deny rule under B: every packet lands on exactly
    // one of the two counters, whatever the flips it races with.
    let (a, b) = (
        compiled(&failsafe(6443, 443)),
        compiled(&failsafe(443, 443)),
    );
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    rig.apply(&a).unwrap();
    let mut runner = rig
        .second_loader()
        .unwrap_or_else(|e| panic!("second program: {e}"));
    let f = sent_from(&packet(API4, 6, 41000), 6443);
    let stop = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicU64::new(0));
    let (stop2, batches2) = (stop.clone(), batches.clone());
    let sender = std::thread::spawn(move || {
        let xdp: &mut aya::programs::Xdp = runner
            .ebpf_mut()
            .program_mut(XDP_PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        let mut sent = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let mut out = vec![0u8; f.len() + 64];
            let mut opts = aya::programs::TestRunOptions::new();
            opts.data_in = Some(&f);
            opts.data_out = Some(&mut out);
            opts.repeat = 1000;
            aya::programs::TestRun::test_run(xdp, opts).unwrap();
            sent += 1000;
            batches2.fetch_add(1, Ordering::Relaxed);
        }
        sent
    });
    let wait_for_batch = || {
        let seen = batches.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while batches.load(Ordering::Relaxed) == seen && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    wait_for_batch();
    for i in 0..60 {
        rig.apply(if i % 2 == 0 { &b } else { &a }).unwrap();
        wait_for_batch();
    }
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    let passed = failsafe_passed(&rig);
    let got = rule_counters(&rig);
    let denied = got
        .get(&("lockdown".into(), "no-api".into(), "drop"))
        .copied()
        .unwrap_or(0);
    assert_eq!(
        passed + denied,
        sent,
        "every packet judged by one whole revision: failsafe {passed}, denied {denied}, {got:?}"
    );
    assert!(
        passed > 0 && denied > 0,
        "both revisions judged packets: {passed} {denied}"
    );
    assert_eq!(got.len(), 1, "no other counter moved: {got:?}");
}
