//! Unit tests of `attach.rs`: what a pinned link's facts say about it.
use super::*;

const XDP: u32 = bpf_link_type::BPF_LINK_TYPE_XDP as u32;
const TCX: u32 = bpf_link_type::BPF_LINK_TYPE_TCX as u32;

fn facts(link_type: u32, ifindex: u32) -> PinnedLinkFacts {
    PinnedLinkFacts { link_type, ifindex }
}

#[test]
fn a_pinned_link_whose_interface_is_gone_is_defunct() {
    assert_eq!(
        facts(XDP, 0).fate(Attached::XdpNative, 12),
        PinnedLinkFate::Defunct
    );
    assert_eq!(
        facts(TCX, 0).fate(Attached::Tcx, 12),
        PinnedLinkFate::Defunct
    );
}

#[test]
fn a_pinned_link_on_the_interface_as_it_is_now_is_adopted() {
    assert_eq!(
        facts(XDP, 12).fate(Attached::XdpGeneric, 12),
        PinnedLinkFate::Live
    );
    assert_eq!(facts(TCX, 12).fate(Attached::Tcx, 12), PinnedLinkFate::Live);
}

#[test]
fn a_pinned_link_on_an_earlier_interface_of_that_name_is_not_adopted() {
    assert_eq!(
        facts(XDP, 9).fate(Attached::XdpNative, 12),
        PinnedLinkFate::OtherInterface(9)
    );
}

#[test]
fn a_pinned_link_of_another_kind_is_not_adopted() {
    assert_eq!(
        facts(TCX, 12).fate(Attached::XdpNative, 12),
        PinnedLinkFate::WrongKind
    );
    assert_eq!(
        facts(XDP, 12).fate(Attached::Tcx, 12),
        PinnedLinkFate::WrongKind
    );
}

fn enforced(ifindex: u32) -> IfaceState {
    IfaceState::Enforced {
        ifindex,
        mode: Attached::XdpNative,
    }
}

fn detached(ifindex: u32) -> IfaceState {
    IfaceState::NotAttached {
        ifindex,
        reason: "the program is not attached".into(),
    }
}

#[test]
fn an_interface_that_stays_enforced_is_no_change() {
    assert_eq!(classify(&enforced(3), &enforced(3), &enforced(3)), None);
    assert_eq!(
        classify(
            &IfaceState::Absent,
            &IfaceState::Absent,
            &IfaceState::Absent
        ),
        None
    );
}

#[test]
fn a_program_detached_from_the_same_interface_is_drift() {
    assert_eq!(
        classify(&enforced(3), &detached(3), &enforced(3)),
        Some(ChangeCause::Reattached)
    );
}

#[test]
fn an_interface_back_under_a_new_index_appeared() {
    assert_eq!(
        classify(&enforced(3), &detached(9), &enforced(9)),
        Some(ChangeCause::Appeared)
    );
    assert_eq!(
        classify(&IfaceState::Absent, &detached(9), &enforced(9)),
        Some(ChangeCause::Appeared)
    );
}

#[test]
fn a_deleted_interface_is_gone_once() {
    assert_eq!(
        classify(&enforced(3), &IfaceState::Absent, &IfaceState::Absent),
        Some(ChangeCause::Gone)
    );
}

#[test]
fn a_failed_attach_is_reported_when_it_changes() {
    let failed = IfaceState::NotAttached {
        ifindex: 9,
        reason: "EBUSY".into(),
    };
    assert_eq!(
        classify(&IfaceState::Absent, &detached(9), &failed),
        Some(ChangeCause::Failed)
    );
    assert_eq!(classify(&failed, &detached(9), &failed), None);
}

#[test]
fn only_an_enforced_interface_counts_as_enforced() {
    assert!(enforced(1).is_enforced());
    assert!(!IfaceState::Absent.is_enforced());
    assert!(!detached(1).is_enforced());
    assert_eq!(IfaceState::Absent.mode_str(), "absent");
    assert_eq!(detached(1).mode_str(), "detached");
    assert_eq!(enforced(1).mode_str(), "native");
}
