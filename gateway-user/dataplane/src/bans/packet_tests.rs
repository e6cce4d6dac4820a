//! The blocklist (`banOnAbuse`, `tollgate bans`) in the real program: bans drop until they
//! expire, a full blocklist makes room, IPv6 bans are prefixes. Crafted packets run by the
//! kernel (`BPF_PROG_TEST_RUN`); needs root. Apart from the policy's program tests
//! (`xdp_tests.rs`) because the blocklist is not policy.
use std::time::Duration;

use crate::counters;
use crate::testrun::{frame, FrameOptions, TestRig, TEST_RUN_INTERFACE, XDP_DROP, XDP_PASS};
use crate::xdp_tests::{policy, rule};
use tollgate_compile::l4::compile;
use tollgate_compile::l4::packet::{Packet, L4};
use tollgate_compile::l4::policy::{Action, Mode};

/// A TCP 443 packet from `src`.
pub(crate) fn from_src(src: &str) -> Vec<u8> {
    frame(
        &Packet {
            src: src.parse().unwrap(),
            protocol: 6,
            l4: L4::Port(443),
        },
        FrameOptions::default(),
    )
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn banned_sources_are_dropped_until_their_ban_expires_v4_and_v6() {
    use super::{self as bans, BanKind, BanMaps};
    use gateway_common::{SLOT_AUDIT, SLOT_DROP};
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let allow_all = |mode: Mode| {
        let mut p = policy("p", Action::Allow, vec![]);
        p.mode = mode;
        compile(&[p], &[TEST_RUN_INTERFACE.into()]).unwrap()
    };
    let mut maps = BanMaps::open(&rig.pin_dir()).unwrap();
    let long = Duration::from_secs(600);
    // Before any revision (an interface with no L4 rule set): bans apply all the same.
    maps.ban("192.0.2.1".parse().unwrap(), long, BanKind::Auth, "ns/p")
        .unwrap();
    assert_eq!(
        rig.run(&from_src("192.0.2.1")).unwrap(),
        XDP_DROP,
        "unconfigured"
    );
    assert_eq!(
        rig.run(&from_src("192.0.2.9")).unwrap(),
        XDP_PASS,
        "unconfigured"
    );
    rig.apply(&allow_all(Mode::Enforce)).unwrap();
    for (a, kind) in [
        ("192.0.2.1", BanKind::Auth),
        ("2001:db8::1", BanKind::Ratelimit),
    ] {
        maps.ban(a.parse().unwrap(), long, kind, "ns/p").unwrap();
    }
    // Expired bans: left in the maps as by a dead agent.
    maps.ban(
        "192.0.2.2".parse().unwrap(),
        Duration::ZERO,
        BanKind::Auth,
        "ns/p",
    )
    .unwrap();
    maps.ban(
        "2001:db8::2".parse().unwrap(),
        Duration::ZERO,
        BanKind::Auth,
        "ns/p",
    )
    .unwrap();
    // Expired by more than the program's clock lags (it reads ban expiry from the coarse
    // clock: two ticks behind at most).
    let tick = crate::clock::coarse_tick_ns().expect("CLOCK_MONOTONIC_COARSE");
    std::thread::sleep(Duration::from_nanos(2 * tick + 1_000_000));
    // A short one, to watch expire.
    maps.ban(
        "192.0.2.3".parse().unwrap(),
        Duration::from_millis(300),
        BanKind::Manual,
        "manual",
    )
    .unwrap();
    let cases = [
        ("192.0.2.1", XDP_DROP, "banned v4"),
        ("2001:db8::1", XDP_DROP, "banned v6"),
        ("192.0.2.2", XDP_PASS, "expired v4"),
        ("2001:db8::2", XDP_PASS, "expired v6"),
        ("192.0.2.3", XDP_DROP, "short ban, in force"),
        ("192.0.2.9", XDP_PASS, "not banned v4"),
        ("2001:db8::9", XDP_PASS, "not banned v6"),
    ];
    for (src, want, what) in cases {
        assert_eq!(rig.run(&from_src(src)).unwrap(), want, "{what} ({src})");
    }
    // Counted per kind, with reason blocklist.
    let counted = bans::counters(&rig.pin_dir()).unwrap();
    let len = from_src("192.0.2.1").len() as u64;
    assert!(
        counted.contains(&(BanKind::Auth, SLOT_DROP, 2, 2 * len)),
        "{counted:?}"
    );
    assert!(
        counted
            .iter()
            .any(|c| c.0 == BanKind::Ratelimit && c.2 == 1),
        "{counted:?}"
    );
    let report = counters::read(&rig.pin_dir(), &rig.state_dir()).unwrap();
    assert!(
        report
            .rules
            .iter()
            .any(|r| r.policy == "banOnAbuse" && r.rule == "auth" && r.reason == "blocklist"),
        "{:?}",
        report.rules
    );
    // A new revision touches no ban; the drift check ignores the blocklist.
    rig.apply(
        &compile(
            &[policy("q", Action::Allow, vec![rule("x", Action::Allow)])],
            &[TEST_RUN_INTERFACE.into()],
        )
        .unwrap(),
    )
    .unwrap();
    assert!(rig.dataplane().repair_drift().unwrap().is_empty());
    assert_eq!(rig.run(&from_src("192.0.2.1")).unwrap(), XDP_DROP);
    // Expiry without anyone removing the entry.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        rig.run(&from_src("192.0.2.3")).unwrap(),
        XDP_PASS,
        "expired"
    );
    // The sweep removes the expired ones only; a lift takes effect at once.
    let swept = maps.sweep().unwrap();
    assert_eq!(swept.expired.len(), 3, "{swept:?}");
    assert_eq!(swept.active.len(), 2, "{swept:?}");
    let active: Vec<String> = maps
        .active()
        .unwrap()
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(active, ["192.0.2.1", "2001:db8::1"]);
    assert_eq!(maps.lift("192.0.2.1".parse().unwrap()).unwrap().len(), 1);
    assert!(
        maps.lift("192.0.2.1".parse().unwrap()).unwrap().is_empty(),
        "lifted once"
    );
    assert_eq!(rig.run(&from_src("192.0.2.1")).unwrap(), XDP_PASS);
    // Audit mode: counted as audit, passed.
    rig.apply(&allow_all(Mode::Audit)).unwrap();
    assert_eq!(
        rig.run(&from_src("2001:db8::1")).unwrap(),
        XDP_PASS,
        "audit"
    );
    assert!(bans::counters(&rig.pin_dir())
        .unwrap()
        .iter()
        .any(|c| c.0 == BanKind::Ratelimit && c.1 == SLOT_AUDIT && c.2 == 1),);
}

/// Bans `n` targets made by `target(i)`, the i-th ending `i` ms after the first.
fn fill(maps: &mut super::BanMaps, n: u32, target: impl Fn(u32) -> super::BanTarget) {
    use super::{BanKind, BanOutcome};
    for i in 0..n {
        let d = Duration::from_secs(600) + Duration::from_millis(u64::from(i));
        match maps.ban(target(i), d, BanKind::Auth, "ns/p") {
            Ok(BanOutcome::Banned { evicted, .. }) if evicted.is_empty() => {}
            other => panic!("ban {i}: {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn a_full_blocklist_evicts_the_ban_nearest_to_its_end_for_a_new_abuser() {
    use super::{BanKind, BanOutcome, BanTarget};
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    rig.apply(
        &compile(
            &[policy("p", Action::Allow, vec![])],
            &[TEST_RUN_INTERFACE.into()],
        )
        .unwrap(),
    )
    .unwrap();
    let mut maps = super::BanMaps::open(&rig.pin_dir()).unwrap();
    let v4 = |i: u32| BanTarget::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
    let v6 = |i: u32| {
        let a = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) | (u128::from(i) << 64));
        BanTarget::containing(a.into(), 64)
    };
    let started = std::time::Instant::now();
    fill(&mut maps, gateway_common::MAX_BANS, v4);
    fill(&mut maps, gateway_common::MAX_BANS, v6);
    eprintln!(
        "filled 2 x {} bans in {:?}",
        gateway_common::MAX_BANS,
        started.elapsed()
    );
    assert_eq!(
        maps.entries().unwrap().len(),
        2 * gateway_common::MAX_BANS as usize
    );
    for (abuser, first, src, first_src, second_src) in [
        ("192.0.2.1", v4(0), "192.0.2.1", "10.0.0.0", "10.0.0.1"),
        (
            "2001:db8:ffff:1::/64",
            v6(0),
            "2001:db8:ffff:1::77",
            "2001:db8::1",
            "2001:db8:0:1::1",
        ),
    ] {
        assert_eq!(rig.run(&from_src(src)).unwrap(), XDP_PASS, "{src} before");
        assert_eq!(
            rig.run(&from_src(first_src)).unwrap(),
            XDP_DROP,
            "{first_src} before"
        );
        let r = maps.ban(
            abuser.parse().unwrap(),
            Duration::from_secs(60),
            BanKind::Ratelimit,
            "ns/q",
        );
        let Ok(BanOutcome::Banned { evicted, .. }) = r else {
            panic!("{abuser}: {r:?}")
        };
        let evicted: Vec<BanTarget> = evicted.iter().map(|e| e.address).collect();
        assert_eq!(evicted, [first], "the ban nearest to its end goes");
        assert_eq!(
            rig.run(&from_src(src)).unwrap(),
            XDP_DROP,
            "the new abuser ({src})"
        );
        assert_eq!(
            rig.run(&from_src(first_src)).unwrap(),
            XDP_PASS,
            "evicted ({first_src})"
        );
        assert_eq!(
            rig.run(&from_src(second_src)).unwrap(),
            XDP_DROP,
            "kept ({second_src})"
        );
    }
    // Replacing an existing ban of a full map evicts nothing.
    let r = maps.ban(v4(5), Duration::from_secs(900), BanKind::Manual, "manual");
    assert!(
        matches!(&r, Ok(BanOutcome::Banned { evicted, .. }) if evicted.is_empty()),
        "{r:?}"
    );
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn an_ipv6_prefix_ban_drops_every_address_inside_it_and_nothing_else() {
    use super::{BanKind, BanMaps};
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    rig.apply(
        &compile(
            &[policy("p", Action::Allow, vec![])],
            &[TEST_RUN_INTERFACE.into()],
        )
        .unwrap(),
    )
    .unwrap();
    let mut maps = BanMaps::open(&rig.pin_dir()).unwrap();
    maps.ban(
        "2001:db8:1:2::/64".parse().unwrap(),
        Duration::from_secs(600),
        BanKind::Auth,
        "ns/p",
    )
    .unwrap();
    for (src, want) in [
        ("2001:db8:1:2::", XDP_DROP),
        ("2001:db8:1:2::1", XDP_DROP),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", XDP_DROP),
        ("2001:db8:1:2:1234:5678:9abc:def0", XDP_DROP),
        ("2001:db8:1:3::1", XDP_PASS),
        ("2001:db8:1:1:ffff:ffff:ffff:ffff", XDP_PASS),
        ("192.0.2.1", XDP_PASS),
    ] {
        assert_eq!(rig.run(&from_src(src)).unwrap(), want, "{src}");
    }
    let listed: Vec<String> = maps
        .active()
        .unwrap()
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(listed, ["2001:db8:1:2::/64"]);
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn nested_ipv6_bans_never_hide_a_longer_lasting_one() {
    use super::{BanKind, BanMaps, BanOutcome};
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    rig.apply(
        &compile(
            &[policy("p", Action::Allow, vec![])],
            &[TEST_RUN_INTERFACE.into()],
        )
        .unwrap(),
    )
    .unwrap();
    let mut maps = BanMaps::open(&rig.pin_dir()).unwrap();
    let long = Duration::from_secs(600);
    // A short ban of one address, then a long ban of its /64: the /64 takes its place (the
    // program sees the longest prefix: an expired /128 would otherwise let the address in).
    maps.ban(
        "2001:db8:1:2::7".parse().unwrap(),
        Duration::from_millis(200),
        BanKind::Manual,
        "manual",
    )
    .unwrap();
    let r = maps
        .ban(
            "2001:db8:1:2::/64".parse().unwrap(),
            long,
            BanKind::Auth,
            "ns/p",
        )
        .unwrap();
    let BanOutcome::Banned { replaced, .. } = &r else {
        panic!("{r:?}")
    };
    assert_eq!(replaced.len(), 1, "{r:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rig.run(&from_src("2001:db8:1:2::7")).unwrap(),
        XDP_DROP,
        "still inside the /64"
    );
    // A shorter ban inside it is not written; a longer one is.
    let r = maps
        .ban(
            "2001:db8:1:2::8".parse().unwrap(),
            Duration::from_secs(1),
            BanKind::Manual,
            "manual",
        )
        .unwrap();
    assert!(
        matches!(&r, BanOutcome::Covered(c) if c.address.to_string() == "2001:db8:1:2::/64"),
        "{r:?}"
    );
    let r = maps
        .ban(
            "2001:db8:1:2::9".parse().unwrap(),
            Duration::from_secs(3600),
            BanKind::Manual,
            "manual",
        )
        .unwrap();
    assert!(matches!(r, BanOutcome::Banned { .. }), "{r:?}");
    // Lifting an address without a ban of its own lifts the prefix that holds it.
    let lifted: Vec<String> = maps
        .lift("2001:db8:1:2::1".parse().unwrap())
        .unwrap()
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(lifted, ["2001:db8:1:2::/64"]);
    assert_eq!(rig.run(&from_src("2001:db8:1:2::7")).unwrap(), XDP_PASS);
    assert_eq!(
        rig.run(&from_src("2001:db8:1:2::9")).unwrap(),
        XDP_DROP,
        "its own ban"
    );
}
