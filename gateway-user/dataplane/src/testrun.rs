//! Running the real XDP program on crafted packets with `BPF_PROG_TEST_RUN` (tests and
//! benchmarks). Needs root. Each [`TestRig`] mounts its own bpffs under /run so that rigs in
//! parallel tests never share maps, and unmounts it when dropped.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use aya::programs::{TestRun, TestRunOptions, Xdp};

use super::{Dataplane, DataplaneError};
use tollgate_compile::l4::packet::{Packet, L4};
use tollgate_compile::l4::L4Snapshot;

/// The benchmark reference programs (`bench_pass`, `bench_drop`, `bench_tx`).
pub static BENCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench"));

/// The interface test-run packets arrive on: without a context, `BPF_PROG_TEST_RUN` gives XDP
/// packets the loopback device of the caller's namespace. Nothing is attached to it.
pub const TEST_RUN_INTERFACE: &str = "lo";

/// XDP return codes.
pub const XDP_DROP: u32 = 1;
/// XDP return codes.
pub const XDP_PASS: u32 = 2;

/// How to wrap a packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameOptions {
    /// Add one 802.1Q tag with this VLAN id.
    pub vlan: Option<u16>,
    /// IPv4 options bytes to add (multiple of 4, at most 40).
    pub ipv4_options: usize,
    /// IPv6 destination-options extension headers to put before the L4 header.
    pub ipv6_ext_headers: usize,
    /// Cut the frame to this many bytes.
    pub truncate: Option<usize>,
    /// Mark it as the first fragment of several (MF set, offset 0).
    pub first_fragment: bool,
    /// TCP/UDP source port (default 50000).
    pub src_port: Option<u16>,
}

/// Builds an Ethernet frame for `p` (destination 198.18.0.1 or 2001:db8::1; checksums are not
/// computed: the program does not read them).
pub fn frame(p: &Packet, opts: FrameOptions) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    if let Some(vid) = opts.vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    let l4 = l4_bytes(p, opts.src_port.unwrap_or(50000));
    match p.src {
        std::net::IpAddr::V4(src) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let ihl = 20 + opts.ipv4_options;
            let total = (ihl + l4.len()) as u16;
            let frag: u16 = match (p.l4, opts.first_fragment) {
                (L4::Fragment, _) => 185, // offset 1480 bytes
                (_, true) => 0x2000,      // MF, offset 0
                _ => 0x4000,              // DF
            };
            f.push(0x40 | (ihl / 4) as u8);
            f.push(0);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0x12, 0x34]);
            f.extend_from_slice(&frag.to_be_bytes());
            f.push(64);
            f.push(p.protocol);
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&src.octets());
            f.extend_from_slice(&[198, 18, 0, 1]);
            // NOP options then end-of-list.
            f.extend(std::iter::repeat_n(1u8, opts.ipv4_options));
        }
        std::net::IpAddr::V6(src) => {
            f.extend_from_slice(&[0x86, 0xdd]);
            let mut ext = Vec::new();
            let mut next = p.protocol;
            if p.l4 == L4::Fragment {
                // Fragment header with offset 185 * 8.
                ext.splice(0..0, [next, 0, 0x05, 0xc8, 0, 0, 0, 1]);
                next = 44;
            } else if opts.first_fragment {
                ext.splice(0..0, [next, 0, 0x00, 0x01, 0, 0, 0, 1]);
                next = 44;
            }
            for _ in 0..opts.ipv6_ext_headers {
                // Destination options, 8 bytes (PadN).
                ext.splice(0..0, [next, 0, 1, 4, 0, 0, 0, 0]);
                next = 60;
            }
            let payload = (ext.len() + l4.len()) as u16;
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&payload.to_be_bytes());
            f.push(next);
            f.push(64);
            f.extend_from_slice(&src.octets());
            f.extend_from_slice(
                &"2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .expect("address")
                    .octets(),
            );
            f.extend_from_slice(&ext);
        }
    }
    f.extend_from_slice(&l4);
    if let Some(n) = opts.truncate {
        f.truncate(n);
    }
    f
}

fn l4_bytes(p: &Packet, src_port: u16) -> Vec<u8> {
    match (p.protocol, p.l4) {
        (_, L4::Fragment) => vec![0xab; 16],
        (6, L4::Port(port)) => {
            let mut h = src_port.to_be_bytes().to_vec();
            h.extend_from_slice(&port.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
            h
        }
        (17, L4::Port(port)) => {
            let mut h = src_port.to_be_bytes().to_vec();
            h.extend_from_slice(&port.to_be_bytes());
            h.extend_from_slice(&[0, 16, 0, 0]);
            h.extend_from_slice(&[0x55; 8]);
            h
        }
        (_, L4::IcmpType(t)) => vec![t, 0, 0, 0, 0, 1, 0, 1],
        _ => vec![0x00; 16],
    }
}

/// The real programs, loaded with maps on a private bpffs, ready for `BPF_PROG_TEST_RUN`.
pub struct TestRig {
    dp: Option<Dataplane>,
    mount: PathBuf,
    _state: tempfile::TempDir,
}

static RIGS: AtomicUsize = AtomicUsize::new(0);

impl TestRig {
    /// Mounts a private bpffs, loads the programs (XDP loaded, nothing attached).
    pub fn new() -> Result<Self, DataplaneError> {
        let n = RIGS.fetch_add(1, Ordering::Relaxed);
        let mount = PathBuf::from(format!("/run/tollgate-rig-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&mount)
            .map_err(super::io_err(format!("create {}", mount.display())))?;
        mount_bpffs(&mount)?;
        let state = tempfile::tempdir().map_err(super::io_err("temporary state dir"))?;
        let dp = Dataplane::load(&mount.join("pins"), state.path());
        let mut rig = TestRig {
            dp: None,
            mount,
            _state: state,
        };
        let mut dp = dp?;
        dp.load_xdp_program()?;
        rig.dp = Some(dp);
        Ok(rig)
    }

    /// The data plane.
    pub fn dataplane(&mut self) -> &mut Dataplane {
        self.dp.as_mut().expect("loaded")
    }

    /// Applies a snapshot (compiled for [`TEST_RUN_INTERFACE`]).
    pub fn apply(&mut self, snapshot: &L4Snapshot) -> Result<super::ApplyStats, DataplaneError> {
        self.dataplane().apply(snapshot)
    }

    /// The loaded XDP program.
    pub fn xdp(&mut self) -> &mut Xdp {
        let prog = self
            .dataplane()
            .ebpf_mut()
            .program_mut(super::XDP_PROGRAM)
            .expect("program");
        prog.try_into().expect("xdp")
    }

    /// Runs the program once on `frame`; returns the XDP action.
    pub fn run(&mut self, frame: &[u8]) -> Result<u32, DataplaneError> {
        self.run_repeat(frame, 1).map(|(action, _)| action)
    }

    /// Runs the program `repeat` times on `frame`; returns the action and the kernel's mean
    /// duration per run.
    pub fn run_repeat(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), DataplaneError> {
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat;
        let r = self
            .xdp()
            .test_run(opts)
            .map_err(super::prog_err("BPF_PROG_TEST_RUN"))?;
        Ok((r.return_value, r.duration))
    }

    /// Loads the programs a second time on the same maps: a separate program to run packets
    /// through while this rig applies revisions from another thread.
    pub fn second_loader(&self) -> Result<Dataplane, DataplaneError> {
        let mut dp = Dataplane::load(&self.mount.join("pins"), self._state.path())?;
        dp.load_xdp_program()?;
        Ok(dp)
    }

    /// The state directory of this rig (id table).
    pub fn state_dir(&self) -> PathBuf {
        self._state.path().to_owned()
    }

    /// The pin directory of this rig.
    pub fn pin_dir(&self) -> PathBuf {
        self.mount.join("pins")
    }
}

impl Drop for TestRig {
    fn drop(&mut self) {
        self.dp = None;
        let _ = super::detach(&self.mount.join("pins"));
        umount(&self.mount);
        let _ = std::fs::remove_dir(&self.mount);
    }
}

/// Mounts a bpffs at `dir`.
pub fn mount_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let target = c(&dir.to_string_lossy());
    let r = unsafe {
        libc::mount(
            c("bpf").as_ptr(),
            target.as_ptr(),
            c("bpf").as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(DataplaneError::Io {
            what: format!("mount bpffs at {}", dir.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Unmounts `dir` (lazily, so a busy mount still goes away).
pub fn umount(dir: &Path) {
    if let Ok(target) = std::ffi::CString::new(dir.to_string_lossy().as_bytes()) {
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}
