//! The blocklist flags (`BAN_STATE`): the program skips the blocklist look-up only while the
//! family's blocklist is empty, and no sequence of sweeps and loads hides a ban. The real
//! program on crafted packets (`BPF_PROG_TEST_RUN`); needs root.
use std::time::Duration;

use aya::maps::{Array, MapData};
use aya::programs::TestRun as _;
use gateway_common::{BAN_STATE_V4, BAN_STATE_V6};

use super::packet_tests::from_src;
use super::{BanKind, BanMaps};
use crate::open_pinned;
use crate::testrun::{TestRig, XDP_DROP, XDP_PASS};

fn flags(rig: &TestRig) -> (u32, u32) {
    let state: Array<MapData, u32> =
        Array::try_from(open_pinned(&rig.pin_dir(), "BAN_STATE").unwrap()).unwrap();
    (
        state.get(&BAN_STATE_V4, 0).unwrap(),
        state.get(&BAN_STATE_V6, 0).unwrap(),
    )
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn the_blocklist_is_looked_at_exactly_while_it_holds_bans() {
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    assert_eq!(flags(&rig), (0, 0), "an empty blocklist is not looked at");
    let mut maps = BanMaps::open(&rig.pin_dir()).unwrap();
    maps.ban(
        "192.0.2.1".parse().unwrap(),
        Duration::from_millis(300),
        BanKind::Manual,
        "manual",
    )
    .unwrap();
    assert_eq!(
        flags(&rig),
        (1, 0),
        "an IPv4 ban turns on the IPv4 look-up only"
    );
    assert_eq!(rig.run(&from_src("192.0.2.1")).unwrap(), XDP_DROP);
    maps.ban(
        "2001:db8::1".parse().unwrap(),
        Duration::from_secs(600),
        BanKind::Manual,
        "manual",
    )
    .unwrap();
    assert_eq!(flags(&rig), (1, 1));
    assert_eq!(rig.run(&from_src("2001:db8::1")).unwrap(), XDP_DROP);

    // A sweep while the bans are in force changes nothing.
    maps.sweep().unwrap();
    assert_eq!(flags(&rig), (1, 1));
    assert_eq!(rig.run(&from_src("192.0.2.1")).unwrap(), XDP_DROP);
    // The IPv4 ban ends; the sweep that removes it turns off the IPv4 look-up only.
    std::thread::sleep(Duration::from_millis(400));
    maps.sweep().unwrap();
    assert_eq!(flags(&rig), (0, 1));
    assert_eq!(rig.run(&from_src("192.0.2.1")).unwrap(), XDP_PASS);
    assert_eq!(rig.run(&from_src("2001:db8::1")).unwrap(), XDP_DROP);

    // A ban written by another handle (`tollgate bans add` beside the agent) after this
    // handle's sweep read the map: its own flag write makes it count at once, and this
    // handle's next sweep sees the entry and leaves the flag on.
    let mut other = BanMaps::open(&rig.pin_dir()).unwrap();
    other
        .ban(
            "198.51.100.7".parse().unwrap(),
            Duration::from_secs(600),
            BanKind::Manual,
            "manual",
        )
        .unwrap();
    assert_eq!(rig.run(&from_src("198.51.100.7")).unwrap(), XDP_DROP);
    maps.sweep().unwrap();
    assert_eq!(flags(&rig), (1, 1));
    assert_eq!(rig.run(&from_src("198.51.100.7")).unwrap(), XDP_DROP);
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn bans_pinned_without_flags_are_enforced_by_the_next_load() {
    // Pins of a build before the flags: bans in the maps, every flag 0. Loading the programs
    // again (an agent upgrade) must turn the look-up on before the new program runs.
    let rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let mut maps = BanMaps::open(&rig.pin_dir()).unwrap();
    maps.ban(
        "192.0.2.1".parse().unwrap(),
        Duration::from_secs(600),
        BanKind::Auth,
        "ns/p",
    )
    .unwrap();
    let mut state: Array<MapData, u32> =
        Array::try_from(open_pinned(&rig.pin_dir(), "BAN_STATE").unwrap()).unwrap();
    state.set(BAN_STATE_V4, 0, 0).unwrap();
    let mut second = rig.second_loader().unwrap();
    assert_eq!(
        flags(&rig),
        (1, 0),
        "the load set the flag of the family with bans"
    );
    let xdp: &mut aya::programs::Xdp = second
        .ebpf_mut()
        .program_mut(crate::XDP_PROGRAM)
        .unwrap()
        .try_into()
        .unwrap();
    let f = from_src("192.0.2.1");
    let mut out = vec![0u8; f.len() + 256];
    let mut opts = aya::programs::TestRunOptions::new();
    opts.data_in = Some(&f);
    opts.data_out = Some(&mut out);
    assert_eq!(xdp.test_run(opts).unwrap().return_value, XDP_DROP);
}
