//! The data plane: loads the eBPF programs, pins them, attaches them (XDP native -> XDP
//! generic -> TC), and keeps the kernel maps equal to the applied snapshot.
//!
//! # Pin layout (`--pin-dir`, default `/sys/fs/bpf/tollgate`)
//!
//! ```text
//! maps/<MAP>              every map (the program's `#[map]` statics), reused by a restarted agent;
//!                         maps/BANS_V4, BANS_V6, BAN_STATE, BAN_COUNTERS are the blocklist ([`bans`])
//! progs/tollgate_xdp      the XDP program, progs/tollgate_tc the TC program
//! links/<mode>/<iface>    one link per interface; mode is xdp-native, xdp-generic or tcx
//!                         (bpffs refuses '.' in names: a '.' in an interface name is pinned as '~')
//! ```
//!
//! A restarted agent loads the programs again with the pinned maps (their contents untouched,
//! so the node keeps enforcing the last revision), then swaps its program into the pinned links
//! with `bpf_link_update`: the interface never runs without a filter. A pinned link whose
//! interface was deleted meanwhile is defunct: it is unpinned and replaced ([`attach`], which
//! also reads every attachment back from the kernel and reconciles interfaces that come and
//! go).
//!
//! # Atomic updates
//!
//! See `gateway-common`: policy maps are keyed by generation; [`Dataplane::apply`] writes the
//! inactive generation (only what differs from what it already holds), flips the one-word
//! `CONFIG.active_gen`, waits for an RCU grace period (every packet that read the old generation
//! has finished: XDP and TC programs run inside RCU read-side sections), and then brings the old
//! generation up to date too, so that the next revision's diff is again only its own change.
pub mod attach;
pub mod bans;
pub mod bpffs;
#[cfg(test)]
mod bucket_tests;
pub mod clock;
pub mod counters;
pub mod dir;
mod drift;
pub mod exact;
use drift::{drifted_entries, read_tables};
pub use drift::{DriftProbe, DriftRepair};
#[cfg(test)]
mod dir_tests;
#[cfg(test)]
mod exact6_tests;
#[cfg(test)]
mod failsafe_tests;
pub mod ids;
#[cfg(test)]
mod iface_tests;
pub mod netlink;
pub mod offenders;
pub mod tables;
#[cfg(feature = "testrun")]
pub mod testrun;
mod write;
#[cfg(test)]
mod xdp_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};
use gateway_common::{
    Config, DirBlock, Exact4Set, Exact6Set, IfaceConfig, IfaceKey, LimitConfig, PortKey,
    RuleCounters, Src6Lens, SrcV4, SrcV6, SrcValue, Verdict,
};
use tracing::warn;

use attach::ProgIds;
pub use attach::{AttachMode, Attached, ChangeCause, IfaceChange, IfaceState};
use ids::Ids;
use tables::{Tables, TablesError};
use tollgate_compile::l4::L4Snapshot;

/// The compiled eBPF object (built by build.rs; empty when built with AYA_BUILD_SKIP=1).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf"));

/// Name of the XDP program in the object.
pub const XDP_PROGRAM: &str = "tollgate_xdp";
/// Name of the TC program in the object.
pub const TC_PROGRAM: &str = "tollgate_tc";

/// Default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tollgate";

/// Errors of the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The binary was built without the eBPF programs.
    #[error("this tollgate binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild it normally")]
    NoObject,
    /// Loading failed (the verifier log is in the source error).
    #[error("loading the eBPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program operation failed.
    #[error("{what}: {source}")]
    Program {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: aya::maps::MapError,
    },
    /// Building the tables failed.
    #[error(transparent)]
    Tables(#[from] TablesError),
    /// A file system operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The pinned maps were made by a build with another map layout.
    #[error(
        "the maps pinned under {pin_dir} were created by another version of tollgate (map {map}: type {found_type} / key {found_key} / value {found_value} bytes / {found_entries} entries; this version needs {map_type} / {key} / {value} / {entries}). They keep enforcing the revision they hold. To switch versions run `tollgate detach --pin-dir {pin_dir}` first (filtering stops until this agent attaches)"
    )]
    IncompatiblePins {
        /// The pin directory.
        pin_dir: String,
        /// The map that differs.
        map: String,
        /// Pinned map type (`BPF_MAP_TYPE_*` number).
        found_type: u32,
        /// Pinned key size.
        found_key: u32,
        /// Pinned value size.
        found_value: u32,
        /// Pinned capacity.
        found_entries: u32,
        /// Map type this build needs.
        map_type: u32,
        /// Key size this build needs.
        key: u32,
        /// Value size this build needs.
        value: u32,
        /// Capacity this build needs.
        entries: u32,
    },
    /// The kernel does not show the program on the interface after an attach.
    #[error("attached to {iface} in {mode} mode, but the kernel does not show the program there ({found})")]
    NotAttached {
        /// Interface.
        iface: String,
        /// The attach mode.
        mode: &'static str,
        /// What the kernel shows.
        found: String,
    },
    /// No attach mode worked.
    #[error("could not attach to {iface}: {reasons}")]
    Attach {
        /// Interface.
        iface: String,
        /// Every mode tried, with its error.
        reasons: String,
    },
}

/// An error and its sources on one line (aya's errors keep the OS error in `source()`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn other(e: impl std::error::Error) -> std::io::Error {
    std::io::Error::other(chain(&e))
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Io { what, source }
}

fn map_err(what: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Map { what, source }
}

fn prog_err(what: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> DataplaneError {
    let what = what.into();
    move |source| DataplaneError::Program { what, source }
}

/// The policy maps, typed.
pub struct PolicyMaps {
    config: Array<MapData, Config>,
    ifaces: BpfHashMap<MapData, IfaceKey, IfaceConfig>,
    iface_table: Array<MapData, IfaceConfig>,
    src_v4: LpmTrie<MapData, SrcV4, SrcValue>,
    src_v6: LpmTrie<MapData, SrcV6, SrcValue>,
    ports: LpmTrie<MapData, PortKey, Verdict>,
    limits: Array<MapData, LimitConfig>,
    counters: PerCpuArray<MapData, RuleCounters>,
    src4_dir: Array<MapData, DirBlock>,
    src4_chunks: Array<MapData, DirBlock>,
    src4_exact: Array<MapData, Exact4Set>,
    src6_exact: Array<MapData, Exact6Set>,
    src6_lens: Array<MapData, Src6Lens>,
    src6_filter: Array<MapData, gateway_common::Filter6Block>,
    src4_leaves: Array<MapData, SrcValue>,
    src4_leaves_hi: Array<MapData, SrcValue>,
    port_dir: Array<MapData, DirBlock>,
    port_verdicts: Array<MapData, Verdict>,
}

impl PolicyMaps {
    /// `SRC4_LEAVES`, or with `hi` `SRC4_LEAVES_HI` (see `tables::for_gen::leaf4`).
    fn leaves(&mut self, hi: bool) -> &mut Array<MapData, SrcValue> {
        if hi {
            &mut self.src4_leaves_hi
        } else {
            &mut self.src4_leaves
        }
    }
}

/// How long the last apply took, and what it wrote.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ApplyStats {
    /// Entries written or deleted before the flip (the inactive generation).
    pub writes: usize,
    /// Entries written or deleted after the flip (bringing the old generation up to date).
    pub writes_after_flip: usize,
    /// Time from start to the flip (the revision is enforced from then on).
    pub to_flip: Duration,
    /// Total time, including the grace period and the old generation's update.
    pub total: Duration,
}

/// The loaded programs and their maps.
pub struct Dataplane {
    ebpf: Ebpf,
    maps: PolicyMaps,
    pin_dir: PathBuf,
    state_dir: PathBuf,
    ids: Ids,
    /// What each generation holds (without generation bits), as far as this agent knows.
    held: [Arc<Tables>; 2],
    /// The ids of the last applied revision, by position (see [`tables::PrevAssignment`]).
    prev: Option<tables::PrevAssignment>,
    active_gen: u32,
    /// `CONFIG.bucket_seed`, written back unchanged with every flip.
    bucket_seed: u32,
    /// The rule set (IFACES value) of every interface the last applied revision configures,
    /// by name, whether it exists or not: written under an interface's index when it appears.
    /// `None` before the first apply of this run.
    iface_rules: Option<BTreeMap<String, IfaceConfig>>,
    /// `--attach-mode`.
    mode: AttachMode,
    /// The configured interfaces, in order.
    interfaces: Vec<String>,
    /// What each configured interface was last seen as.
    states: BTreeMap<String, IfaceState>,
    /// How each interface was last attached (what to look for on it).
    attached_as: BTreeMap<String, Attached>,
    /// The kernel's ids of this agent's programs.
    prog_ids: ProgIds,
}

impl Dataplane {
    /// Loads the programs with the maps pinned under `pin_dir` (reusing them if they exist: a
    /// restarted agent adopts the state in force) and reads what the maps hold.
    pub fn load(pin_dir: &Path, state_dir: &Path) -> Result<Self, DataplaneError> {
        if EBPF_OBJECT.is_empty() {
            return Err(DataplaneError::NoObject);
        }
        let maps_dir = pin_dir.join("maps");
        std::fs::create_dir_all(&maps_dir)
            .map_err(io_err(format!("create {}", maps_dir.display())))?;
        check_pinned_layout(pin_dir, &maps_dir)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .load(EBPF_OBJECT)?;
        // Before any program of this build runs: the blocklist flags say what the pinned
        // blocklist holds (maps pinned by a build before the flags have bans and no flags).
        bans::BanMaps::open(pin_dir)?.refresh_flags()?;
        let maps = PolicyMaps {
            config: take(&mut ebpf, "CONFIG")?,
            ifaces: take(&mut ebpf, "IFACES")?,
            iface_table: take(&mut ebpf, "IFACE_TABLE")?,
            src_v4: take(&mut ebpf, "SRC_V4")?,
            src_v6: take(&mut ebpf, "SRC_V6")?,
            ports: take(&mut ebpf, "PORTS")?,
            limits: take(&mut ebpf, "LIMITS")?,
            counters: take(&mut ebpf, "RULE_COUNTERS")?,
            src4_dir: take(&mut ebpf, "SRC4_DIR")?,
            src4_chunks: take(&mut ebpf, "SRC4_CHUNKS")?,
            src4_exact: take(&mut ebpf, "SRC4_EXACT")?,
            src6_exact: take(&mut ebpf, "SRC6_EXACT")?,
            src6_lens: take(&mut ebpf, "SRC6_LENS")?,
            src6_filter: take(&mut ebpf, "SRC6_FILTER")?,
            src4_leaves: take(&mut ebpf, "SRC4_LEAVES")?,
            src4_leaves_hi: take(&mut ebpf, "SRC4_LEAVES_HI")?,
            port_dir: take(&mut ebpf, "PORT_DIR")?,
            port_verdicts: take(&mut ebpf, "PORT_VERDICTS")?,
        };
        let ids = match Ids::load(state_dir) {
            Ok(Some(ids)) => ids,
            Ok(None) => Ids::default(),
            Err(e) => {
                warn!(error = %e, dir = %state_dir.display(), "unreadable id table; starting a new one");
                Ids::default()
            }
        };
        let mut dp = Dataplane {
            ebpf,
            maps,
            pin_dir: pin_dir.to_owned(),
            state_dir: state_dir.to_owned(),
            ids,
            held: Default::default(),
            prev: None,
            active_gen: 0,
            bucket_seed: 0,
            iface_rules: None,
            mode: AttachMode::Auto,
            interfaces: Vec::new(),
            states: BTreeMap::new(),
            attached_as: BTreeMap::new(),
            prog_ids: ProgIds::default(),
        };
        dp.read_back()?;
        Ok(dp)
    }

    /// Reads both generations from the kernel maps (adoption after a restart).
    fn read_back(&mut self) -> Result<(), DataplaneError> {
        let config = self
            .maps
            .config
            .get(&0, 0)
            .map_err(map_err("read CONFIG"))?;
        self.active_gen = config.active_gen & 1;
        self.bucket_seed = config.bucket_seed;
        if self.bucket_seed == 0 {
            // New maps (or maps of a build before the bucket table): choose the secret that
            // spreads sources over the bucket table's sets, once. It stays with the pinned maps.
            let mut seed = 0u32;
            while seed == 0 {
                // SAFETY: the buffer is the 4 bytes of `seed`.
                let n = unsafe { libc::getrandom((&raw mut seed).cast(), 4, 0) };
                if n != 4 {
                    return Err(DataplaneError::Io {
                        what: "choose the bucket table's seed (getrandom)".into(),
                        source: std::io::Error::last_os_error(),
                    });
                }
            }
            self.bucket_seed = seed;
            self.maps
                .config
                .set(
                    0,
                    Config {
                        active_gen: self.active_gen,
                        bucket_seed: self.bucket_seed,
                    },
                    0,
                )
                .map_err(map_err("write CONFIG.bucket_seed"))?;
        }
        let [h0, h1] = self.read_tables(true)?;
        self.held = [Arc::new(h0), Arc::new(h1)];
        Ok(())
    }

    /// How full the exact tables of the generation in force are (see [`exact::FastPath`]).
    pub fn fast_path(&self) -> exact::FastPath {
        exact::fast_path(&self.held[self.active_gen as usize])
    }

    /// What both generations of the kernel maps hold, without generation bits.
    fn read_tables(&self, every_limit_slot: bool) -> Result<[Tables; 2], DataplaneError> {
        read_tables(&self.maps, &self.limit_slots(every_limit_slot))
    }

    /// The LIMITS slots to read, per generation. A drift check reads only the slots the
    /// applied revision fills, those of its rate-limited rules: packets read a slot only when a
    /// verdict names its rule as a limit, and only rate-limited rules are named so, so a value
    /// written into any other slot is harmless. (With 100,000 rules, reading every rule's two
    /// slots was 200,000 system calls per drift check.) At adoption nothing is held yet: then
    /// every known rule's slots are read.
    fn limit_slots(&self, every_limit_slot: bool) -> [Vec<u32>; 2] {
        [0usize, 1].map(|gen| {
            if every_limit_slot {
                self.ids.rules.iter().map(|(_, _, id)| id).collect()
            } else {
                self.held[gen].limits.keys().copied().collect()
            }
        })
    }

    /// A read-only view of the pinned policy maps and of what this agent believes they hold,
    /// for a drift check on another thread (reading 200,000 entries takes a while); a probe
    /// that finds drift is followed by [`Dataplane::repair_drift`] on the agent's own task.
    pub fn drift_probe(&self) -> Result<DriftProbe, DataplaneError> {
        let open = |name: &str| open_pinned(&self.pin_dir, name);
        fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
            map: Map,
            name: &str,
        ) -> Result<T, DataplaneError> {
            T::try_from(map).map_err(map_err(format!("map {name}")))
        }
        Ok(DriftProbe {
            maps: PolicyMaps {
                config: typed(open("CONFIG")?, "CONFIG")?,
                ifaces: typed(open("IFACES")?, "IFACES")?,
                iface_table: typed(open("IFACE_TABLE")?, "IFACE_TABLE")?,
                src_v4: typed(open("SRC_V4")?, "SRC_V4")?,
                src_v6: typed(open("SRC_V6")?, "SRC_V6")?,
                ports: typed(open("PORTS")?, "PORTS")?,
                limits: typed(open("LIMITS")?, "LIMITS")?,
                counters: typed(open("RULE_COUNTERS")?, "RULE_COUNTERS")?,
                src4_dir: typed(open("SRC4_DIR")?, "SRC4_DIR")?,
                src4_chunks: typed(open("SRC4_CHUNKS")?, "SRC4_CHUNKS")?,
                src4_exact: typed(open("SRC4_EXACT")?, "SRC4_EXACT")?,
                src6_exact: typed(open("SRC6_EXACT")?, "SRC6_EXACT")?,
                src6_lens: typed(open("SRC6_LENS")?, "SRC6_LENS")?,
                src6_filter: typed(open("SRC6_FILTER")?, "SRC6_FILTER")?,
                src4_leaves: typed(open("SRC4_LEAVES")?, "SRC4_LEAVES")?,
                src4_leaves_hi: typed(open("SRC4_LEAVES_HI")?, "SRC4_LEAVES_HI")?,
                port_dir: typed(open("PORT_DIR")?, "PORT_DIR")?,
                port_verdicts: typed(open("PORT_VERDICTS")?, "PORT_VERDICTS")?,
            },
            expected: self.held.clone(),
            limit_slots: self.limit_slots(false),
        })
    }

    /// Puts back what was changed in the kernel maps behind the agent's back (with bpftool, or
    /// by another program): compares both generations with what they must hold and rewrites
    /// the difference. Returns the number of entries corrected.
    pub fn repair_drift(&mut self) -> Result<DriftRepair, DataplaneError> {
        let actual = self.read_tables(false)?;
        let mut report = DriftRepair::default();
        for (gen, actual) in actual.into_iter().enumerate() {
            let expected = self.held[gen].clone();
            if actual == *expected {
                continue;
            }
            let mut rule_ids = BTreeSet::new();
            drifted_entries(&actual, &expected, &mut report.maps, &mut rule_ids);
            for id in rule_ids {
                match self.ids.rules.iter().find(|(_, _, i)| *i == id) {
                    Some((policy, rule, _)) => report.rules.insert(format!("{policy}/{rule}")),
                    None => report.rules.insert(format!("(unknown rule id {id})")),
                };
            }
            // write_gen writes the diff between what it believes is there and what must be.
            self.held[gen] = Arc::new(actual);
            let result = self.write_gen(gen as u32, &expected);
            self.held[gen] = expected;
            report.corrected += result?;
        }
        Ok(report)
    }

    /// True when the maps already held a revision when this agent started.
    pub fn adopted_state(&self) -> bool {
        !self.held[self.active_gen as usize].ifaces.is_empty()
    }

    fn program_mut(&mut self, name: &str) -> Result<&mut aya::programs::Program, DataplaneError> {
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| DataplaneError::Io {
                what: format!("program {name}"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not in the eBPF object"),
            })
    }

    /// Makes the kernel enforce `snapshot`, atomically. On error nothing that packets see has
    /// changed (the flip is the last step before success).
    ///
    /// Cost: one pass over the snapshot to look up ids and build the tables (no allocation per
    /// name), one diff against what the inactive generation holds, and writes only for what
    /// differs; the id table is saved and the old generation updated after the flip.
    pub fn apply(&mut self, snapshot: &L4Snapshot) -> Result<ApplyStats, DataplaneError> {
        let start = Instant::now();
        // Where an apply spends its time (TOLLGATE_LOG=debug).
        let mark = |step: &str| {
            tracing::debug!(
                step,
                elapsed_us = start.elapsed().as_micros() as u64,
                "apply"
            )
        };
        let assigned = match &self.prev {
            Some(prev) => tables::assign_ids_after(&mut self.ids, snapshot, prev),
            None => tables::assign_ids(&mut self.ids, snapshot),
        };
        // Until this apply succeeds, the next one must not trust the previous assignment (it
        // is dropped after the flip: freeing 100,000 names takes milliseconds).
        let stale_prev = self.prev.take();
        let assigned = assigned?;
        mark("ids");
        // An interface that does not exist gets no entry; its rule set is kept by name and
        // written under its index when it appears (`attach::place_rules`).
        let indexes: BTreeMap<&str, Option<u32>> = snapshot
            .interfaces
            .keys()
            .map(|name| (name.as_str(), if_index(name)))
            .collect();
        let resolve = |name: &str| indexes.get(name).copied().flatten();
        let held = self.held[self.active_gen as usize].clone();
        let (desired, by_name) = tables::build(snapshot, &assigned, &resolve, &held)?;
        let desired = Arc::new(desired);
        mark("build");
        // Ids handed out afresh may have counted for an earlier rule: zero them first. No
        // packet can count on them yet (no active entry names them).
        if !assigned.fresh_rules.is_empty() {
            let ncpus = aya::util::nr_cpus().map_err(|(what, e)| DataplaneError::Io {
                what: what.into(),
                source: e,
            })?;
            for &id in &assigned.fresh_rules {
                let zero = PerCpuValues::try_from(vec![RuleCounters::default(); ncpus]).map_err(
                    |source| DataplaneError::Io {
                        what: "counter values".into(),
                        source,
                    },
                )?;
                self.maps
                    .counters
                    .set(id, zero, 0)
                    .map_err(map_err(format!("reset counters of rule id {id}")))?;
            }
        }
        let target = 1 - self.active_gen;
        let writes = self.write_gen(target, &desired)?;
        mark("write");
        // The flip: one 4-byte value. From here on, new packets see only `target`.
        self.maps
            .config
            .set(
                0,
                Config {
                    active_gen: target,
                    bucket_seed: self.bucket_seed,
                },
                0,
            )
            .map_err(map_err("flip CONFIG.active_gen"))?;
        let to_flip = start.elapsed();
        let old = self.active_gen;
        self.active_gen = target;
        self.held[target as usize] = desired.clone();
        self.prev = Some(tables::PrevAssignment::new(snapshot, &assigned));
        drop(stale_prev);
        self.iface_rules = Some(by_name);
        self.ids.interfaces = indexes
            .into_iter()
            .filter_map(|(name, index)| Some((name.to_owned(), index?)))
            .collect();
        // Saved after the flip, off the path to enforcement. A crash before the save leaves a
        // table that lacks this revision's new names: the restarted agent then gives them
        // (possibly other) ids and rewrites the entries that name them; only their counters
        // can start again.
        self.ids
            .save(&self.state_dir)
            .map_err(io_err(format!("save ids to {}", self.state_dir.display())))?;
        wait_for_readers();
        // Bring the old generation up to date so the next apply writes only its own change.
        let writes_after_flip = self.write_gen(old, &desired)?;
        self.held[old as usize] = desired;
        Ok(ApplyStats {
            writes,
            writes_after_flip,
            to_flip,
            total: start.elapsed(),
        })
    }

    /// Writes generation `gen` so that it holds `desired` (a diff against what it holds).
    fn write_gen(&mut self, gen: u32, desired: &Tables) -> Result<usize, DataplaneError> {
        write::write_gen(&mut self.maps, &self.held[gen as usize], gen, desired)
    }

    /// The id table (names of the counter slots).
    pub fn ids(&self) -> &Ids {
        &self.ids
    }

    /// The active generation.
    pub fn active_gen(&self) -> u32 {
        self.active_gen
    }

    /// The token-bucket table's hash key (`CONFIG.bucket_seed`).
    pub fn bucket_seed(&self) -> u32 {
        self.bucket_seed
    }

    /// Direct access to the loaded object (tests: BPF_PROG_TEST_RUN).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Loads the XDP program without attaching it (tests and benchmarks).
    pub fn load_xdp_program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        let xdp: &mut Xdp = self
            .program_mut(XDP_PROGRAM)?
            .try_into()
            .map_err(prog_err("xdp program"))?;
        xdp.load().map_err(prog_err("load the XDP program"))?;
        Ok(xdp)
    }
}

/// Refuses pinned maps whose layout differs from this build's: the loader would reuse them as
/// they are, and the programs would read their entries with the wrong layout.
fn check_pinned_layout(pin_dir: &Path, maps_dir: &Path) -> Result<(), DataplaneError> {
    let object = aya_obj::Object::parse(EBPF_OBJECT).map_err(|e| DataplaneError::Io {
        what: "parse the eBPF object".into(),
        source: other(e),
    })?;
    for (name, def) in &object.maps {
        let path = maps_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map_err(map_err(format!("inspect pinned map {}", path.display())))?;
        // The type too: a map can change type and keep its sizes (a hash becoming a trie).
        let found_type = info.map_type().map_or(0, |t| t as u32);
        let found = (
            found_type,
            info.key_size(),
            info.value_size(),
            info.max_entries(),
        );
        let wanted = (
            def.map_type(),
            def.key_size(),
            def.value_size(),
            def.max_entries(),
        );
        if found != wanted {
            return Err(DataplaneError::IncompatiblePins {
                pin_dir: pin_dir.display().to_string(),
                map: name.clone(),
                found_type: found.0,
                found_key: found.1,
                found_value: found.2,
                found_entries: found.3,
                map_type: wanted.0,
                key: wanted.1,
                value: wanted.2,
                entries: wanted.3,
            });
        }
    }
    Ok(())
}

/// An LPM key as `(prefix length, data)`.
fn tables_lpm<K: aya::Pod>(key: &Key<K>) -> (u32, K) {
    (key.prefix_len(), key.data())
}

fn remove_ok(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn take<T: TryFrom<Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T, DataplaneError> {
    let map = ebpf.take_map(name).ok_or_else(|| DataplaneError::Io {
        what: format!("map {name}"),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "not in the eBPF object"),
    })?;
    T::try_from(map).map_err(map_err(format!("map {name}")))
}

fn repin_program(
    pin: impl FnOnce(&Path) -> Result<(), aya::pin::PinError>,
    path: &Path,
) -> Result<(), DataplaneError> {
    let _ = std::fs::remove_file(path);
    pin(path).map_err(|e| DataplaneError::Io {
        what: format!("pin program {}", path.display()),
        source: other(e),
    })
}

/// The index of an interface, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Waits until every packet that could have read the old generation is done: an RCU grace
/// period. `membarrier(MEMBARRIER_CMD_GLOBAL)` is the one system call that waits for exactly
/// that (it calls `synchronize_rcu()`, see kernel/sched/membarrier.c); XDP and TC programs run
/// in RCU read-side critical sections. If it is unavailable (nohz_full kernels), sleep well past
/// any packet's processing time instead.
fn wait_for_readers() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    let r = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_GLOBAL,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if r != 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes every link, program and map pinned under `pin_dir` (and the directory). The
/// interfaces stop filtering once the last reference to each link is gone.
pub fn detach(pin_dir: &Path) -> Result<Vec<PathBuf>, DataplaneError> {
    fn remove_tree(dir: &Path, removed: &mut Vec<PathBuf>) -> Result<(), DataplaneError> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_tree(&path, removed)?;
                let _ = std::fs::remove_dir(&path);
            } else {
                std::fs::remove_file(&path).map_err(io_err(format!("unpin {}", path.display())))?;
                removed.push(path);
            }
        }
        Ok(())
    }
    let mut removed = Vec::new();
    // Links first: the interfaces stop filtering before the maps go.
    for sub in ["links", "progs", "maps"] {
        let dir = pin_dir.join(sub);
        remove_tree(&dir, &mut removed)?;
        let _ = std::fs::remove_dir(&dir);
    }
    let _ = std::fs::remove_dir(pin_dir);
    Ok(removed)
}

/// Opens a pinned map of a running (or stopped) agent by name.
pub fn open_pinned(pin_dir: &Path, name: &str) -> Result<Map, DataplaneError> {
    let path = pin_dir.join("maps").join(name);
    let data =
        MapData::from_pin(&path).map_err(map_err(format!("open pinned map {}", path.display())))?;
    Map::from_map_data(data).map_err(map_err(format!("map {}", path.display())))
}
