//! The program and the maps beyond one interface's packets: interfaces whose index is past the
//! `IFACE_TABLE` array (judged through the hash map), and pinned maps of another layout
//! (refused). Real veths and pins; needs root. Apart from `xdp_tests.rs`, which judges packets
//! against the reference evaluator.
use super::testrun::{frame, FrameOptions, TestRig, XDP_DROP, XDP_PASS};
use super::{counters, Dataplane};
use crate::xdp_tests::{from, policy, rule};
use tollgate_compile::l4::compile;
use tollgate_compile::l4::packet::{Packet, L4};
use tollgate_compile::l4::policy::Action;

/// A veth pair with a chosen interface index, removed on drop.
struct IndexedVeth(String);

impl IndexedVeth {
    fn new(name: &str, index: u32) -> Self {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", name])
            .output();
        let out = std::process::Command::new("ip")
            .args([
                "link",
                "add",
                "name",
                name,
                "index",
                &index.to_string(),
                "type",
                "veth",
                "peer",
                "name",
                &format!("{name}p"),
            ])
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "create {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::process::Command::new("ip")
            .args(["link", "set", name, "up"])
            .output();
        IndexedVeth(name.to_owned())
    }
}

impl Drop for IndexedVeth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .output();
    }
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn interfaces_with_large_indexes_are_judged_through_the_hash_map() {
    // Above FAST_IFINDEX the program looks the interface up in IFACES instead of IFACE_TABLE.
    let index = gateway_common::FAST_IFINDEX + 904;
    let veth = IndexedVeth::new("tgbigidx0", index);
    let mut rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    let policies = vec![policy(
        "p",
        Action::Allow,
        vec![from(rule("scanners", Action::Deny), &["203.0.113.0/24"])],
    )];
    rig.apply(&compile(&policies, std::slice::from_ref(&veth.0)).unwrap())
        .unwrap();
    let f = frame(
        &Packet {
            src: "203.0.113.9".parse().unwrap(),
            protocol: 17,
            l4: L4::Port(53),
        },
        FrameOptions::default(),
    );
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    // The kernel wants data_end = the frame's length (data = data_meta = 0: no metadata).
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(f.len() as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&index.to_ne_bytes());
    let run_on = |rig: &mut TestRig, ctx: Option<&[u8]>| {
        let mut out = vec![0u8; f.len() + 64];
        let mut opts = aya::programs::TestRunOptions::new();
        opts.data_in = Some(&f);
        opts.data_out = Some(&mut out);
        opts.ctx_in = ctx;
        aya::programs::TestRun::test_run(rig.xdp(), opts)
            .unwrap_or_else(|e| panic!("test run: {e}"))
            .return_value
    };
    assert_eq!(
        run_on(&mut rig, Some(&ctx)),
        XDP_DROP,
        "the policy applies on the interface with index {index}"
    );
    assert_eq!(
        run_on(&mut rig, None),
        XDP_PASS,
        "lo has no policy: unconfigured, passed"
    );
    let state = rig.state_dir();
    let report = counters::read(&rig.pin_dir(), &state).unwrap();
    assert_eq!(report.stats.unconfigured, 1, "{report:?}");
    assert_eq!(report.stats.malformed, 0, "{report:?}");
    assert!(
        report
            .rules
            .iter()
            .any(|r| r.rule == "scanners" && r.packets == 1),
        "{report:?}"
    );
    drop(veth);
}

#[test]
#[ignore = "needs root (BPF_PROG_TEST_RUN); cargo xtask test runs it"]
fn maps_pinned_by_another_layout_are_refused_with_a_clear_error() {
    let rig = TestRig::new().unwrap_or_else(|e| panic!("rig: {e}"));
    // A second pin directory on the rig's bpffs, with a SRC_V4 of the wrong value size.
    let pins = rig.pin_dir().with_file_name("other-version");
    std::fs::create_dir_all(pins.join("maps")).unwrap();
    let out = std::process::Command::new("bpftool")
        .args(["map", "create"])
        .arg(pins.join("maps/SRC_V4"))
        .args([
            "type", "lpm_trie", "key", "12", "value", "4", "entries", "16", "name", "SRC_V4",
            "flags", "1",
        ])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool map create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = tempfile::tempdir().unwrap();
    let err = match Dataplane::load(&pins, state.path()) {
        Ok(_) => panic!("maps of another layout were adopted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("map SRC_V4") && err.contains("tollgate detach"),
        "{err}"
    );
    let _ = std::fs::remove_file(pins.join("maps/SRC_V4"));
}
