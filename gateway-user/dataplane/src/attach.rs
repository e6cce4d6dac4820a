//! Attaching the programs to the configured interfaces, and keeping them attached.
//!
//! Nothing is reported attached until the kernel says so: after every attach the agent reads
//! back, over netlink (`IFLA_XDP`: the program id per XDP mode) or with a TCX query, that its
//! own program runs on that interface in that mode ([`Dataplane::interface_state`]).
//!
//! Interfaces come and go (bonds and VLANs reconfigured, drivers reloaded, NICs hot-plugged,
//! CNI veths): a deleted interface takes its XDP or TCX attachment with it, and the link
//! pinned for it stays behind, defunct (its `bpf_link_info` names interface 0). A re-created
//! interface has a new index and no program. [`Dataplane::reconcile_interfaces`] looks at every
//! configured interface (on every link event and every drift check), moves its rule set to its
//! current index, replaces a defunct or foreign pinned link with a new one, and says what it
//! changed.
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::xdp::XdpLink;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type};
use tracing::{info, warn};

use crate::netlink::{self, LinkState};
use crate::{
    chain, io_err, other, prog_err, repin_program, Dataplane, DataplaneError, TC_PROGRAM,
    XDP_PROGRAM,
};

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AttachMode {
    /// XDP in driver mode, else generic XDP, else TC.
    Auto,
    /// XDP in driver mode only.
    Native,
    /// Generic (skb) XDP only.
    Generic,
    /// TC ingress (TCX link) only.
    Tc,
}

impl AttachMode {
    /// Every mode, as written on the command line.
    pub const NAMES: [&'static str; 4] = ["auto", "native", "generic", "tc"];

    /// The mode as written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
            AttachMode::Tc => "tc",
        }
    }

    /// The attachments to try, in order.
    fn order(self) -> &'static [Attached] {
        match self {
            AttachMode::Auto => &[Attached::XdpNative, Attached::XdpGeneric, Attached::Tcx],
            AttachMode::Native => &[Attached::XdpNative],
            AttachMode::Generic => &[Attached::XdpGeneric],
            AttachMode::Tc => &[Attached::Tcx],
        }
    }
}

impl std::str::FromStr for AttachMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AttachMode::Auto),
            "native" => Ok(AttachMode::Native),
            "generic" => Ok(AttachMode::Generic),
            "tc" => Ok(AttachMode::Tc),
            _ => Err(format!(
                "\"{s}\" is not an attach mode ({})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// How an interface ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Attached {
    /// XDP, driver mode.
    XdpNative,
    /// XDP, generic mode.
    XdpGeneric,
    /// TC ingress via a TCX link.
    Tcx,
}

impl Attached {
    const ALL: [Attached; 3] = [Attached::XdpNative, Attached::XdpGeneric, Attached::Tcx];

    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Attached::XdpNative => "xdp-native",
            Attached::XdpGeneric => "xdp-generic",
            Attached::Tcx => "tcx",
        }
    }

    /// Short name for logs and status (`native`, `generic`, `tc`).
    pub fn as_str(self) -> &'static str {
        match self {
            Attached::XdpNative => "native",
            Attached::XdpGeneric => "generic",
            Attached::Tcx => "tc",
        }
    }

    /// The kernel's link type for this attachment.
    fn link_type(self) -> u32 {
        match self {
            Attached::XdpNative | Attached::XdpGeneric => bpf_link_type::BPF_LINK_TYPE_XDP as u32,
            Attached::Tcx => bpf_link_type::BPF_LINK_TYPE_TCX as u32,
        }
    }

    /// Whether `--attach-mode` allows this attachment.
    fn allowed_by(self, mode: AttachMode) -> bool {
        mode.order().contains(&self)
    }
}

/// Whether a configured interface runs the program, as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceState {
    /// The program is attached (the kernel shows its id on the interface, in this mode).
    Enforced {
        /// The interface's index.
        ifindex: u32,
        /// How.
        mode: Attached,
    },
    /// There is no interface of this name.
    Absent,
    /// The interface exists and the program is not attached to it.
    NotAttached {
        /// The interface's index (0 when even that could not be read).
        ifindex: u32,
        /// Why (what the kernel shows, or why attaching failed).
        reason: String,
    },
}

impl IfaceState {
    /// True when the program runs on the interface.
    pub fn is_enforced(&self) -> bool {
        matches!(self, IfaceState::Enforced { .. })
    }

    /// `native`, `generic` or `tc` when enforced; `absent`, or `detached` otherwise.
    pub fn mode_str(&self) -> &'static str {
        match self {
            IfaceState::Enforced { mode, .. } => mode.as_str(),
            IfaceState::Absent => "absent",
            IfaceState::NotAttached { .. } => "detached",
        }
    }

    /// The interface's index, when it exists.
    pub fn ifindex(&self) -> Option<u32> {
        match self {
            IfaceState::Enforced { ifindex, .. } => Some(*ifindex),
            IfaceState::NotAttached { ifindex, .. } if *ifindex != 0 => Some(*ifindex),
            _ => None,
        }
    }
}

/// Why [`Dataplane::reconcile_interfaces`] changed (or could not change) an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeCause {
    /// The interface was deleted: nothing is enforced on it until it comes back.
    Gone,
    /// The interface appeared (re-created, under a new index, or for the first time): the
    /// program was attached to it.
    Appeared,
    /// The interface kept its index but its program was detached, or replaced, behind the
    /// agent's back: attached again. This is drift.
    Reattached,
    /// Attaching failed (the reason is in the new state); retried at the next check.
    Failed,
}

/// One interface whose state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceChange {
    /// The interface.
    pub name: String,
    /// Its state before.
    pub before: IfaceState,
    /// Its state now.
    pub after: IfaceState,
    /// What happened.
    pub cause: ChangeCause,
}

/// What changed for one interface: `before` is what the agent last knew, `found` what the
/// kernel showed, `after` the state once repaired. `None` when nothing worth saying happened.
pub fn classify(
    before: &IfaceState,
    found: &IfaceState,
    after: &IfaceState,
) -> Option<ChangeCause> {
    match after {
        IfaceState::Absent => (*before != IfaceState::Absent).then_some(ChangeCause::Gone),
        IfaceState::NotAttached { .. } => (after != before).then_some(ChangeCause::Failed),
        IfaceState::Enforced { ifindex, .. } => {
            if found == after && before == after {
                return None;
            }
            match before {
                // Same interface, same index, it was enforced: the program was taken away.
                IfaceState::Enforced { ifindex: was, .. } if was == ifindex => {
                    Some(ChangeCause::Reattached)
                }
                _ => Some(ChangeCause::Appeared),
            }
        }
    }
}

/// What the kernel says about a pinned link (its `bpf_link_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedLinkFacts {
    /// `bpf_link_type`.
    pub link_type: u32,
    /// The interface it is attached to; 0 once that interface is gone (or the link was
    /// detached with `BPF_LINK_DETACH`).
    pub ifindex: u32,
}

/// What to do with a link pinned for an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinnedLinkFate {
    /// Attached to the interface as it is now: adopt it (swap our program in).
    Live,
    /// Attached to no interface (its interface is gone, or it was detached with
    /// `BPF_LINK_DETACH`): unpin it and attach anew.
    Defunct,
    /// Attached to another interface (an earlier one of that name): unpin it.
    OtherInterface(u32),
    /// Not the kind of link this pin path is for: unpin it.
    WrongKind,
}

impl PinnedLinkFacts {
    /// The fate of this link, pinned as an attachment `how` of the interface now at `ifindex`.
    pub fn fate(&self, how: Attached, ifindex: u32) -> PinnedLinkFate {
        if self.link_type != how.link_type() {
            PinnedLinkFate::WrongKind
        } else if self.ifindex == 0 {
            PinnedLinkFate::Defunct
        } else if self.ifindex != ifindex {
            PinnedLinkFate::OtherInterface(self.ifindex)
        } else {
            PinnedLinkFate::Live
        }
    }
}

/// Reads the `bpf_link_info` of the link pinned at `path`. (aya's `LinkInfo` does not give
/// the interface index, so this asks the kernel directly, with aya's own type definitions.)
pub fn pinned_link_facts(path: &Path) -> std::io::Result<PinnedLinkFacts> {
    fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<libc::c_long> {
        // SAFETY: `attr` is a valid, initialised bpf_attr of the size given, and outlives the
        // call; whatever pointers it holds point at memory the caller keeps alive.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_int,
                attr as *mut bpf_attr,
                std::mem::size_of::<bpf_attr>() as libc::c_uint,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    }
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: bpf_attr is plain old data; all-zero is its documented initial state.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.__bindgen_anon_4.pathname = c_path.as_ptr() as u64;
    let fd = sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    // SAFETY: as above, plain old data.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_link_info>() as u32;
    attr.info.info = &mut info as *mut bpf_link_info as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let ifindex = if info.type_ == bpf_link_type::BPF_LINK_TYPE_XDP as u32 {
        // SAFETY: the kernel filled the union's `xdp` member for an XDP link.
        unsafe { info.__bindgen_anon_1.xdp.ifindex }
    } else if info.type_ == bpf_link_type::BPF_LINK_TYPE_TCX as u32 {
        // SAFETY: the kernel filled the union's `tcx` member for a TCX link.
        unsafe { info.__bindgen_anon_1.tcx.ifindex }
    } else {
        0
    };
    Ok(PinnedLinkFacts {
        link_type: info.type_,
        ifindex,
    })
}

/// The ids the kernel gave this agent's programs, to recognise them on an interface.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProgIds {
    pub(crate) xdp: u32,
    pub(crate) tc: u32,
}

/// Where the link of attachment `how` of `iface` is pinned.
fn link_pin(links_dir: &Path, how: Attached, iface: &str) -> PathBuf {
    links_dir.join(how.suffix()).join(pin_name(iface))
}

/// File name of an interface's link pin (bpffs refuses '.' in names).
fn pin_name(iface: &str) -> String {
    iface.replace('.', "~")
}

/// What the kernel shows on an interface, for messages.
fn describe(link: &LinkState) -> String {
    let ids = |id: Option<u32>| id.map_or("none".to_owned(), |i| i.to_string());
    format!(
        "interface index {}, XDP driver-mode program {}, generic-mode program {}",
        link.ifindex,
        ids(link.xdp_driver),
        ids(link.xdp_generic)
    )
}

impl Dataplane {
    /// Loads the programs, pins them, and attaches them to every interface, adopting pinned
    /// links without a gap. An interface that does not exist is not an error: it is reported
    /// absent, and attached when it appears ([`Dataplane::reconcile_interfaces`]). One that
    /// exists and cannot be attached in `mode` is.
    pub fn attach_all(
        &mut self,
        interfaces: &[String],
        mode: AttachMode,
    ) -> Result<(), DataplaneError> {
        self.mode = mode;
        self.interfaces = interfaces.to_vec();
        let progs_dir = self.pin_dir.join("progs");
        std::fs::create_dir_all(&progs_dir)
            .map_err(io_err(format!("create {}", progs_dir.display())))?;
        {
            let xdp = self.xdp()?;
            xdp.load().map_err(prog_err("load the XDP program"))?;
            repin_program(|p| xdp.pin(p), &progs_dir.join(XDP_PROGRAM))?;
            self.prog_ids.xdp = xdp
                .info()
                .map_err(prog_err("read the XDP program's id"))?
                .id();
        }
        {
            let tc = self.tc()?;
            tc.load().map_err(prog_err("load the TC program"))?;
            repin_program(|p| tc.pin(p), &progs_dir.join(TC_PROGRAM))?;
            self.prog_ids.tc = tc
                .info()
                .map_err(prog_err("read the TC program's id"))?
                .id();
        }
        for iface in interfaces {
            let link = netlink::link(iface).map_err(io_err(format!(
                "read interface {iface} from the link table"
            )))?;
            let state = match link {
                None => {
                    warn!(
                        interface = %iface,
                        "the interface does not exist: nothing is enforced on it until it appears"
                    );
                    IfaceState::Absent
                }
                Some(link) => IfaceState::Enforced {
                    ifindex: link.ifindex,
                    mode: self.bring_up(iface, link.ifindex)?,
                },
            };
            self.states.insert(iface.clone(), state);
        }
        Ok(())
    }

    /// How each interface is attached (the enforced ones).
    pub fn attached(&self) -> BTreeMap<String, Attached> {
        self.states
            .iter()
            .filter_map(|(name, s)| match s {
                IfaceState::Enforced { mode, .. } => Some((name.clone(), *mode)),
                _ => None,
            })
            .collect()
    }

    /// Every configured interface and its state as last seen, in the configured order.
    pub fn interface_states(&self) -> Vec<(String, IfaceState)> {
        self.interfaces
            .iter()
            .map(|name| {
                let state = self.states.get(name).cloned().unwrap_or(IfaceState::Absent);
                (name.clone(), state)
            })
            .collect()
    }

    /// Whether `iface` runs this agent's program, as the kernel says now.
    pub fn interface_state(&self, iface: &str) -> IfaceState {
        let link = match netlink::link(iface) {
            Ok(Some(link)) => link,
            Ok(None) => return IfaceState::Absent,
            Err(e) => {
                return IfaceState::NotAttached {
                    ifindex: 0,
                    reason: format!("could not read the link table: {e}"),
                }
            }
        };
        let Some(&how) = self.attached_as.get(iface) else {
            return IfaceState::NotAttached {
                ifindex: link.ifindex,
                reason: "not attached yet".into(),
            };
        };
        match self.runs_here(iface, &link, how) {
            Ok(true) => IfaceState::Enforced {
                ifindex: link.ifindex,
                mode: how,
            },
            Ok(false) => IfaceState::NotAttached {
                ifindex: link.ifindex,
                reason: format!(
                    "the program is not attached in {} mode ({})",
                    how.as_str(),
                    describe(&link)
                ),
            },
            Err(e) => IfaceState::NotAttached {
                ifindex: link.ifindex,
                reason: chain(&e),
            },
        }
    }

    /// Looks at every configured interface and brings back the program where it is missing:
    /// an interface re-created under a new index, or one whose program was detached behind
    /// the agent's back. Returns what changed.
    pub fn reconcile_interfaces(&mut self) -> Vec<IfaceChange> {
        let mut changes = Vec::new();
        for name in self.interfaces.clone() {
            let before = self
                .states
                .get(&name)
                .cloned()
                .unwrap_or(IfaceState::Absent);
            let found = self.interface_state(&name);
            let after = match &found {
                IfaceState::Enforced { ifindex, .. } => {
                    // Attached, but its rule set may still be written under an older index.
                    if let Err(e) = self.place_rules(&name, *ifindex) {
                        warn!(interface = %name, error = %chain(&e), "could not write the interface's rule set under its index");
                    }
                    found.clone()
                }
                IfaceState::Absent => IfaceState::Absent,
                // The link table could not be read: nothing to attach to; look again later.
                IfaceState::NotAttached { ifindex: 0, .. } => found.clone(),
                IfaceState::NotAttached { ifindex, .. } => match self.bring_up(&name, *ifindex) {
                    Ok(mode) => IfaceState::Enforced {
                        ifindex: *ifindex,
                        mode,
                    },
                    Err(e) => IfaceState::NotAttached {
                        ifindex: *ifindex,
                        reason: chain(&e),
                    },
                },
            };
            if let Some(cause) = classify(&before, &found, &after) {
                changes.push(IfaceChange {
                    name: name.clone(),
                    before,
                    after: after.clone(),
                    cause,
                });
            }
            self.states.insert(name, after);
        }
        changes
    }

    fn xdp(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.program_mut(XDP_PROGRAM)?
            .try_into()
            .map_err(prog_err("xdp program"))
    }

    fn tc(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        self.program_mut(TC_PROGRAM)?
            .try_into()
            .map_err(prog_err("tc program"))
    }

    /// Whether the kernel shows this agent's program on `iface` as attachment `how`.
    fn runs_here(
        &self,
        iface: &str,
        link: &LinkState,
        how: Attached,
    ) -> Result<bool, DataplaneError> {
        Ok(match how {
            Attached::XdpNative => link.xdp_driver == Some(self.prog_ids.xdp),
            Attached::XdpGeneric => link.xdp_generic == Some(self.prog_ids.xdp),
            Attached::Tcx => {
                let (_, programs) = SchedClassifier::query_tcx(iface, TcAttachType::Ingress)
                    .map_err(prog_err(format!("query the TCX programs of {iface}")))?;
                programs.iter().any(|p| p.id() == self.prog_ids.tc)
            }
        })
    }

    /// Reads back that the program runs on `iface` as `how`.
    fn verify(&self, iface: &str, how: Attached) -> Result<(), DataplaneError> {
        let link = netlink::link(iface).map_err(io_err(format!(
            "read interface {iface} from the link table"
        )))?;
        let found = match link {
            None => "the interface is gone".to_owned(),
            Some(link) if self.runs_here(iface, &link, how)? => return Ok(()),
            Some(link) => describe(&link),
        };
        Err(DataplaneError::NotAttached {
            iface: iface.to_owned(),
            mode: how.as_str(),
            found,
        })
    }

    /// Makes `iface` (now at `ifindex`) run the program: its rule set written under that
    /// index first (so that no packet meets the program without it), then a live pinned link
    /// adopted, or stale ones unpinned and a new link attached, pinned and read back.
    fn bring_up(&mut self, iface: &str, ifindex: u32) -> Result<Attached, DataplaneError> {
        self.place_rules(iface, ifindex)?;
        let links_dir = self.pin_dir.join("links");
        let mut other_modes = Vec::new();
        for how in Attached::ALL {
            let path = link_pin(&links_dir, how, iface);
            if !path.exists() {
                continue;
            }
            let fate = pinned_link_facts(&path).map(|f| f.fate(how, ifindex));
            match fate {
                Ok(PinnedLinkFate::Live) if how.allowed_by(self.mode) => {
                    match self
                        .adopt_link(how, &path)
                        .and_then(|()| self.verify(iface, how))
                    {
                        Ok(()) => {
                            info!(
                                interface = iface,
                                mode = how.as_str(),
                                "attached (adopted pinned link, program replaced atomically)"
                            );
                            self.attached_as.insert(iface.to_owned(), how);
                            return Ok(how);
                        }
                        Err(e) => {
                            // It holds the interface's slot for this mode: it has to go.
                            warn!(interface = iface, error = %chain(&e), "could not adopt the pinned link; attaching anew");
                            unpin(&path)?;
                        }
                    }
                }
                // A working link in a mode not allowed now: removed once the new one is in.
                Ok(PinnedLinkFate::Live) => other_modes.push(path),
                Ok(fate) => {
                    let why = match fate {
                        PinnedLinkFate::Defunct => {
                            "it is attached to no interface (its interface was deleted, or the link was detached)".to_owned()
                        }
                        PinnedLinkFate::OtherInterface(i) => {
                            format!("it is attached to interface index {i}, not {ifindex}")
                        }
                        _ => "it is not a link of that kind".to_owned(),
                    };
                    info!(interface = iface, pin = %path.display(), "unpinning a stale link: {why}");
                    unpin(&path)?;
                }
                Err(e) => {
                    warn!(interface = iface, pin = %path.display(), error = %e, "unpinning a link that cannot be read");
                    unpin(&path)?;
                }
            }
        }
        let how = self.attach_fresh(&links_dir, iface)?;
        for path in other_modes {
            unpin(&path)?;
        }
        self.attached_as.insert(iface.to_owned(), how);
        Ok(how)
    }

    fn adopt_link(&mut self, how: Attached, path: &Path) -> Result<(), DataplaneError> {
        let pinned = PinnedLink::from_pin(path).map_err(|e| DataplaneError::Io {
            what: format!("open pinned link {}", path.display()),
            source: other(e),
        })?;
        let fd_link: FdLink = pinned.into();
        match how {
            Attached::XdpNative | Attached::XdpGeneric => {
                let link = XdpLink::try_from(fd_link).map_err(|e| DataplaneError::Io {
                    what: "pinned link is not an XDP link".into(),
                    source: other(e),
                })?;
                self.xdp()?
                    .attach_to_link(link)
                    .map_err(prog_err("replace the program of the pinned XDP link"))?;
            }
            Attached::Tcx => {
                let link =
                    SchedClassifierLink::try_from(fd_link).map_err(|e| DataplaneError::Io {
                        what: "pinned link is not a TCX link".into(),
                        source: other(e),
                    })?;
                self.tc()?
                    .attach_to_link(link)
                    .map_err(prog_err("replace the program of the pinned TCX link"))?;
            }
        }
        Ok(())
    }

    /// Attaches in the first mode of `--attach-mode` that works and that the kernel then
    /// shows.
    fn attach_fresh(&mut self, links_dir: &Path, iface: &str) -> Result<Attached, DataplaneError> {
        let mut reasons = Vec::new();
        for &how in self.mode.order() {
            let attached = self.try_attach(links_dir, iface, how).and_then(|()| {
                match self.verify(iface, how) {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        // Not there after all: drop the link rather than keep a pin that lies.
                        let _ = std::fs::remove_file(link_pin(links_dir, how, iface));
                        Err(e)
                    }
                }
            });
            match attached {
                Ok(()) => {
                    if !reasons.is_empty() {
                        warn!(interface = iface, mode = how.as_str(), fell_back_from = %reasons.join("; "), "attached (fallback)");
                    } else {
                        info!(interface = iface, mode = how.as_str(), "attached");
                    }
                    return Ok(how);
                }
                Err(e) => reasons.push(format!("{}: {}", how.as_str(), chain(&e))),
            }
        }
        Err(DataplaneError::Attach {
            iface: iface.to_owned(),
            reasons: reasons.join("; "),
        })
    }

    fn try_attach(
        &mut self,
        links_dir: &Path,
        iface: &str,
        how: Attached,
    ) -> Result<(), DataplaneError> {
        let path = link_pin(links_dir, how, iface);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        }
        let fd_link: FdLink = match how {
            Attached::XdpNative | Attached::XdpGeneric => {
                let xdp = self.xdp()?;
                let flags = if how == Attached::XdpNative {
                    XdpMode::Driver
                } else {
                    XdpMode::Skb
                };
                let id = xdp
                    .attach(iface, flags)
                    .map_err(prog_err(format!("attach XDP to {iface}")))?;
                let link = xdp.take_link(id).map_err(prog_err("take XDP link"))?;
                match FdLink::try_from(link) {
                    Ok(l) => l,
                    Err(e) => {
                        // A netlink attachment cannot be pinned, so it would not survive us.
                        return Err(DataplaneError::Io {
                            what: format!(
                                "XDP on {iface} is a netlink attachment, which cannot be pinned"
                            ),
                            source: other(e),
                        });
                    }
                }
            }
            Attached::Tcx => {
                let tc = self.tc()?;
                let id = tc
                    .attach_with_options(
                        iface,
                        TcAttachType::Ingress,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(prog_err(format!("attach TC ingress to {iface}")))?;
                let link = tc.take_link(id).map_err(prog_err("take TC link"))?;
                FdLink::try_from(link).map_err(|e| DataplaneError::Io {
                    what: format!("TC on {iface} is not a TCX link and cannot be pinned"),
                    source: other(e),
                })?
            }
        };
        let _ = std::fs::remove_file(&path);
        fd_link.pin(&path).map_err(|e| DataplaneError::Io {
            what: format!("pin link {}", path.display()),
            source: other(e),
        })?;
        Ok(())
    }

    /// Writes the rule set of `iface` under `ifindex` in both generations (and removes it
    /// from the index the interface had before), so that the program finds it there. The
    /// rule set is the last applied revision's, or before the first apply of this run, the
    /// one the pinned maps hold under the index recorded in the state directory. Nothing to
    /// do when no revision has a rule set for it.
    pub(crate) fn place_rules(&mut self, iface: &str, ifindex: u32) -> Result<(), DataplaneError> {
        let active = self.active_gen as usize;
        let old = self.ids.interfaces.get(iface).copied();
        let config = match &self.iface_rules {
            Some(rules) => rules.get(iface).copied(),
            None => old.and_then(|o| self.held[active].ifaces.get(&o).copied()),
        };
        let Some(config) = config else {
            return Ok(());
        };
        let in_place = |t: &crate::tables::Tables| {
            t.ifaces.get(&ifindex) == Some(&config)
                && old.is_none_or(|o| o == ifindex || !t.ifaces.contains_key(&o))
        };
        if old == Some(ifindex) && in_place(&self.held[0]) && in_place(&self.held[1]) {
            return Ok(());
        }
        let mut desired = (*self.held[active]).clone();
        if let Some(o) = old.filter(|&o| o != ifindex) {
            let shared = self
                .ids
                .interfaces
                .iter()
                .any(|(name, &i)| name != iface && i == o);
            if !shared {
                desired.ifaces.remove(&o);
            }
        }
        desired.ifaces.insert(ifindex, config);
        let desired = Arc::new(desired);
        // The inactive generation first, as an apply does; then the active one, which packets
        // on this interface read (nothing else in it changes).
        for gen in [1 - self.active_gen, self.active_gen] {
            self.write_gen(gen, &desired)?;
            self.held[gen as usize] = desired.clone();
        }
        self.ids.interfaces.insert(iface.to_owned(), ifindex);
        self.ids
            .save(&self.state_dir)
            .map_err(io_err(format!("save ids to {}", self.state_dir.display())))?;
        Ok(())
    }
}

/// Removes a link pin (the link goes once nothing else holds it).
fn unpin(path: &Path) -> Result<(), DataplaneError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DataplaneError::Io {
            what: format!("unpin {}", path.display()),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "attach_tests.rs"]
mod tests;
