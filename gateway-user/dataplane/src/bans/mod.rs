//! The blocklist (`BANS_V4`, `BANS_V6`): sources the L7 tier banned (`banOnAbuse`) or an
//! operator banned by hand (`tollgate bans add`). The XDP and TC programs drop every packet
//! from a banned source before any policy lookup, until the ban's expiry.
//!
//! IPv4 bans are per address (a hash map). IPv6 bans are prefixes (a longest-prefix-match
//! trie): `banOnAbuse` bans the client's /64 by default, since one end site can rotate through
//! the addresses of its /64 at will. The program judges a source by the longest banned prefix
//! that contains it, so nested bans must not hide one another: this module keeps the rule
//! that **a more specific ban never ends before a ban that contains it**. A new ban that a
//! containing one outlasts is not written ([`BanOutcome::Covered`]); a new ban removes the
//! bans inside it that would end no later ([`BanOutcome::Banned::replaced`]); a sweep removes
//! what bans written by another handle (`tollgate bans add` while an agent runs) broke.
//!
//! A full map does not refuse a new ban: the entry of that family nearest to its expiry is
//! removed to make room ([`BanOutcome::Banned::evicted`]); a ban about to end anyway is worth
//! less than a new abuser's.
//!
//! The program looks a source up only while its family's flag in `BAN_STATE` is set (an empty
//! blocklist costs a packet no hash or trie look-up): every insert sets it, and
//! [`BanMaps::refresh_flags`] (each sweep, and each load of the programs) clears it only for a
//! family seen empty, then reads again.
//!
//! The blocklist is not policy: it has no generations, applying a revision never touches it,
//! and the drift check ignores it. Its maps are pinned with the others (`maps/BANS_V4`,
//! `maps/BANS_V6`, `maps/BAN_STATE`, `maps/BAN_COUNTERS`), so bans survive an agent restart, and `tollgate
//! detach` removes them. A ban's expiry is a `CLOCK_MONOTONIC` time (what `bpf_ktime_get_ns`
//! reads): the program ignores an expired entry even when no agent is left to remove it. The
//! program reads that clock coarsely (`CLOCK_MONOTONIC_COARSE`, up to a tick behind, two in a
//! rare case: see `tick_clock` in `gateway-ebpf/src/prog.rs`), so a ban may hold that much past
//! its end, never less.
//!
//! [`BanMaps`] opens the pinned maps by path: the agent's ban task, the CLI and tests each hold
//! their own handle, without going through the [`super::Dataplane`] that applies revisions.
#[cfg(test)]
mod flag_tests;
mod index;
#[cfg(test)]
pub(crate) mod packet_tests;
mod target;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray};
use gateway_common::{
    BanKeyV4, BanKeyV6, BanValue, RuleCounters, BAN_AUTH, BAN_KINDS, BAN_MANUAL, BAN_POLICY_BYTES,
    BAN_RATELIMIT, BAN_STATE_V4, BAN_STATE_V6, MAX_BANS, SLOT_AUDIT, SLOT_DROP,
};
use serde::Serialize;

use super::{map_err, open_pinned, DataplaneError};
use index::Index;

pub use target::{BanTarget, BanTargetError};
pub use tollgate_model::BanKind;

/// The blocklist's code of a kind (`BanValue::kind`, shared with the eBPF programs).
fn code(kind: BanKind) -> u32 {
    match kind {
        BanKind::Auth => BAN_AUTH,
        BanKind::Ratelimit => BAN_RATELIMIT,
        BanKind::Manual => BAN_MANUAL,
    }
}

/// The kind of a blocklist code (an unknown code reads as a ban by hand).
fn from_code(c: u32) -> BanKind {
    match c {
        BAN_AUTH => BanKind::Auth,
        BAN_RATELIMIT => BanKind::Ratelimit,
        _ => BanKind::Manual,
    }
}

/// The `policy` label of the blocklist's packet counters
/// (`tollgate_l4_packets_total{policy="banOnAbuse",rule="auth|ratelimit|manual",reason="blocklist"}`):
/// one series per kind, never one per address or policy.
pub const BAN_COUNTER_POLICY: &str = "banOnAbuse";

/// One entry of the blocklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BanEntry {
    /// The banned source: an address, or an IPv6 prefix.
    pub address: BanTarget,
    /// `namespace/name` of the policy that banned it (`manual` for a ban by hand).
    pub policy: String,
    /// Who banned it.
    pub reason: BanKind,
    /// When (Unix seconds).
    pub banned_at_unix: u64,
    /// When it ends (`CLOCK_MONOTONIC` ns).
    #[serde(skip)]
    pub expires_ns: u64,
}

impl BanEntry {
    /// Time left at monotonic time `now_ns` (zero once expired).
    pub fn remaining(&self, now_ns: u64) -> Duration {
        Duration::from_nanos(self.expires_ns.saturating_sub(now_ns))
    }
}

/// What [`BanMaps::ban`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanOutcome {
    /// The ban is written.
    Banned {
        /// The new entry.
        entry: BanEntry,
        /// Entries removed to make room (the map of the family was full): those nearest to
        /// their expiry, expired ones first.
        evicted: Vec<BanEntry>,
        /// Bans inside the new one that would have ended no later: the new one covers them.
        replaced: Vec<BanEntry>,
    },
    /// Nothing written: a ban that contains the target (this entry) lasts at least as long.
    Covered(BanEntry),
}

/// Why a ban was not written.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    /// The family's map is full and no entry could be removed to make room.
    #[error("the blocklist is full ({MAX_BANS} entries per address family) and no entry could be evicted")]
    Full,
    /// Another map error.
    #[error(transparent)]
    Map(#[from] DataplaneError),
}

/// `CLOCK_MONOTONIC` now, in ns: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The pinned blocklist maps, and what this handle knows of their entries.
pub struct BanMaps {
    v4: BpfHashMap<MapData, BanKeyV4, BanValue>,
    v6: LpmTrie<MapData, BanKeyV6, BanValue>,
    /// `BAN_STATE`: per family, whether the program looks sources up in the blocklist.
    state: Array<MapData, u32>,
    /// The entries as of the last read (the first write, [`BanMaps::sweep`]) and this
    /// handle's writes since. Read when first needed: a handle that only lists (`/status`,
    /// `tollgate bans`) never builds it.
    index: Option<Index>,
}

/// What a sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Expired entries, removed.
    pub expired: Vec<BanEntry>,
    /// Entries a containing ban outlasted (written by another handle meanwhile), removed: the
    /// containing ban still drops their packets.
    pub outlasted: Vec<BanEntry>,
    /// The bans in force, by target.
    pub active: Vec<BanEntry>,
}

fn policy_bytes(policy: &str) -> [u8; BAN_POLICY_BYTES] {
    let mut out = [0u8; BAN_POLICY_BYTES];
    // Cut at a character boundary.
    let mut n = policy.len().min(BAN_POLICY_BYTES);
    while !policy.is_char_boundary(n) {
        n -= 1;
    }
    out[..n].copy_from_slice(&policy.as_bytes()[..n]);
    out
}

fn policy_str(b: &[u8; BAN_POLICY_BYTES]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

/// The trie key of an IPv6 target.
fn v6_key(t: &BanTarget) -> Option<Key<BanKeyV6>> {
    t.v6()
        .map(|a| Key::new(u32::from(t.prefix_len()), BanKeyV6 { addr: a.octets() }))
}

/// True when the kernel said the map is full (E2BIG: hash map; ENOSPC: LPM trie; ENOMEM: no
/// memory for a new element).
fn is_full(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(e)
        if matches!(e.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOSPC | libc::ENOMEM)))
}

/// Removal attempts to make room for one ban before giving up (each removes one entry; more
/// than one is needed only when another handle filled the map meanwhile).
const EVICTION_ATTEMPTS: usize = 8;

impl BanMaps {
    /// Opens the blocklist pinned under `pin_dir` (an agent must have loaded the programs
    /// there once: `tollgate run`).
    pub fn open(pin_dir: &Path) -> Result<BanMaps, DataplaneError> {
        let v4 = BpfHashMap::try_from(open_pinned(pin_dir, "BANS_V4")?)
            .map_err(map_err("map BANS_V4"))?;
        let v6 =
            LpmTrie::try_from(open_pinned(pin_dir, "BANS_V6")?).map_err(map_err("map BANS_V6"))?;
        let state = Array::try_from(open_pinned(pin_dir, "BAN_STATE")?)
            .map_err(map_err("map BAN_STATE"))?;
        Ok(BanMaps {
            v4,
            v6,
            state,
            index: None,
        })
    }

    /// Whether the family's map holds an entry (expired or not), as the kernel has it.
    fn holds_any(&self, family: u32) -> bool {
        if family == BAN_STATE_V4 {
            self.v4.keys().next().is_some()
        } else {
            self.v6.keys().next().is_some()
        }
    }

    fn set_flag(&mut self, family: u32, on: bool) -> Result<(), DataplaneError> {
        self.state
            .set(family, u32::from(on), 0)
            .map_err(map_err("write BAN_STATE"))
    }

    /// Makes the program look sources up in each family's blocklist exactly when it holds
    /// entries. The flag is cleared only after the map was seen empty, and the map is read
    /// again after the clear: a writer sets the flag after its insert, so a ban that arrived
    /// meanwhile either is seen here (and the flag set back) or sets it itself afterwards.
    pub fn refresh_flags(&mut self) -> Result<(), DataplaneError> {
        for family in [BAN_STATE_V4, BAN_STATE_V6] {
            if self.holds_any(family) {
                self.set_flag(family, true)?;
            } else {
                self.set_flag(family, false)?;
                if self.holds_any(family) {
                    self.set_flag(family, true)?;
                }
            }
        }
        Ok(())
    }

    /// The index, read from the maps if this handle has none yet.
    fn index(&mut self) -> Result<&mut Index, DataplaneError> {
        if self.index.is_none() {
            self.index = Some(Index::of(self.entries()?));
        }
        Ok(self.index.get_or_insert_with(Index::default))
    }

    /// Bans `target` for `duration` from now (replacing a ban it already has); makes room by
    /// evicting the entry nearest to its expiry when the family's map is full.
    pub fn ban(
        &mut self,
        target: BanTarget,
        duration: Duration,
        kind: BanKind,
        policy: &str,
    ) -> Result<BanOutcome, BanError> {
        let now = monotonic_ns();
        let value = BanValue {
            expires_ns: now.saturating_add(duration.as_nanos() as u64),
            banned_at_unix: unix_now(),
            kind: code(kind),
            prefix_len: u32::from(target.prefix_len()),
            policy: policy_bytes(policy),
        };
        let new = entry(target, &value);
        // A containing ban that lasts at least as long: this one would only hide it once it
        // expires. The trie answers with the longest containing prefix, which (by the rule
        // above) is the one that lasts longest.
        if let Some(cover) = self.longest_cover(&target)? {
            if cover.expires_ns >= value.expires_ns {
                return Ok(BanOutcome::Covered(cover));
            }
        }
        let mut replaced = Vec::new();
        let inside: Vec<BanTarget> = self
            .index()?
            .inside(&target)
            .into_iter()
            .filter(|e| e.expires_ns <= value.expires_ns)
            .map(|e| e.address)
            .collect();
        for t in inside {
            if let Some(e) = self.remove_entry(&t)? {
                replaced.push(e);
            }
        }
        let mut evicted = Vec::new();
        let mut reread = false;
        loop {
            let r = match (target.v4(), v6_key(&target)) {
                (Some(a), _) => self.v4.insert(BanKeyV4 { addr: a.octets() }, value, 0),
                (None, Some(k)) => self.v6.insert(&k, value, 0),
                (None, None) => unreachable!("a target is IPv4 or IPv6"),
            };
            match r {
                Ok(()) => {
                    // After the insert (see `refresh_flags`): from here on the program looks.
                    let family = if target.is_v6() {
                        BAN_STATE_V6
                    } else {
                        BAN_STATE_V4
                    };
                    self.set_flag(family, true).map_err(BanError::Map)?;
                    break;
                }
                Err(e) if is_full(&e) && evicted.len() < EVICTION_ATTEMPTS => {
                    let victim = match self.index()?.nearest_expiry(&target) {
                        Some(v) => v,
                        None if !reread => {
                            // This handle knows of no entry: another one filled the map.
                            reread = true;
                            self.index = None;
                            continue;
                        }
                        None => return Err(BanError::Full),
                    };
                    if let Some(e) = self.remove_entry(&victim)? {
                        evicted.push(e);
                    }
                }
                Err(e) if is_full(&e) => return Err(BanError::Full),
                Err(e) => {
                    return Err(BanError::Map(DataplaneError::Map {
                        what: format!("ban {target}"),
                        source: e,
                    }))
                }
            }
        }
        self.index()?.insert(new.clone());
        Ok(BanOutcome::Banned {
            entry: new,
            evicted,
            replaced,
        })
    }

    /// The longest ban that strictly contains `target` (IPv6 only), as the kernel has it.
    fn longest_cover(&self, target: &BanTarget) -> Result<Option<BanEntry>, DataplaneError> {
        let (Some(a), Some(len)) = (target.v6(), target.prefix_len().checked_sub(1)) else {
            return Ok(None);
        };
        let key = Key::new(u32::from(len), BanKeyV6 { addr: a.octets() });
        let found = match self.v6.get(&key, 0) {
            Ok(v) => Some(v),
            Err(e) => {
                super::remove_ok(Err(e)).map_err(|e| DataplaneError::Map {
                    what: format!("look up the bans containing {target}"),
                    source: e,
                })?;
                None
            }
        };
        // The value names its own prefix length: the prefix that matched.
        Ok(found.and_then(|v| {
            let t = target.truncated(u8::try_from(v.prefix_len).ok()?)?;
            Some(entry(t, &v))
        }))
    }

    /// The entry of exactly `t`, as the kernel has it.
    fn read(&self, t: &BanTarget) -> Option<BanEntry> {
        let v = match (t.v4(), v6_key(t)) {
            (Some(a), _) => self.v4.get(&BanKeyV4 { addr: a.octets() }, 0).ok(),
            // The trie answers with the longest prefix containing the key: exact only when
            // the lengths agree.
            (None, Some(k)) => self
                .v6
                .get(&k, 0)
                .ok()
                .filter(|v| v.prefix_len == u32::from(t.prefix_len())),
            (None, None) => None,
        }?;
        Some(entry(*t, &v))
    }

    /// Removes the entry of exactly `t`; returns it (None when there was none).
    fn remove_entry(&mut self, t: &BanTarget) -> Result<Option<BanEntry>, DataplaneError> {
        let current = self.read(t);
        if let Some(index) = self.index.as_mut() {
            index.remove(t);
        }
        if current.is_none() {
            // Removing from a trie a key it does not hold exactly is ENOENT anyway; not
            // asking spares the system call.
            return Ok(None);
        }
        let r = match (t.v4(), v6_key(t)) {
            (Some(a), _) => self.v4.remove(&BanKeyV4 { addr: a.octets() }),
            (None, Some(k)) => self.v6.remove(&k),
            (None, None) => Ok(()),
        };
        match super::remove_ok(r) {
            Ok(()) => Ok(current),
            Err(e) => Err(DataplaneError::Map {
                what: format!("lift the ban of {t}"),
                source: e,
            }),
        }
    }

    /// Lifts the ban of `target`: its own entry, or when it has none and `target` is one
    /// address, every ban that contains that address. Returns what was lifted.
    pub fn lift(&mut self, target: BanTarget) -> Result<Vec<BanEntry>, DataplaneError> {
        if let Some(e) = self.remove_entry(&target)? {
            return Ok(vec![e]);
        }
        let mut lifted = Vec::new();
        if target.is_v6() && target.is_host() {
            // Each look-up finds the longest ban left that contains the address; at most one
            // per prefix length.
            while let Some(e) = self.longest_cover_or_self(&target)? {
                if let Some(e) = self.remove_entry(&e.address)? {
                    lifted.push(e);
                } else {
                    break;
                }
            }
        }
        Ok(lifted)
    }

    /// The longest ban containing `probe` (itself included), if any.
    fn longest_cover_or_self(&self, probe: &BanTarget) -> Result<Option<BanEntry>, DataplaneError> {
        if let Some(e) = self.read(probe) {
            return Ok(Some(e));
        }
        self.longest_cover(probe)
    }

    /// Every entry, expired ones included, sorted by target.
    pub fn entries(&self) -> Result<Vec<BanEntry>, DataplaneError> {
        let mut out = Vec::new();
        for item in self.v4.iter() {
            let (k, v) = item.map_err(map_err("read BANS_V4"))?;
            out.push(entry(BanTarget::host(IpAddr::from(k.addr)), &v));
        }
        for item in self.v6.iter() {
            let (k, v) = item.map_err(map_err("read BANS_V6"))?;
            // The trie compares the first `prefix_len` bits only, so bits after them (which
            // no tollgate writes) do not matter: dropped.
            let len = k.prefix_len().min(128) as u8;
            let net = ipnet::Ipv6Net::new(k.data().addr.into(), len).map_or(
                ipnet::Ipv6Net::from(std::net::Ipv6Addr::from(k.data().addr)),
                |n| n.trunc(),
            );
            if let Ok(t) = BanTarget::from_net(ipnet::IpNet::V6(net)) {
                out.push(entry(t, &v));
            }
        }
        out.sort_by_key(|e| e.address);
        Ok(out)
    }

    /// The bans in force now (not expired), sorted by target.
    pub fn active(&self) -> Result<Vec<BanEntry>, DataplaneError> {
        let now = monotonic_ns();
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.expires_ns > now)
            .collect())
    }

    /// Reads the blocklist again; removes the expired entries and those a containing ban
    /// outlasts. One read of the maps, and one more system call per entry removed.
    pub fn sweep(&mut self) -> Result<Sweep, DataplaneError> {
        let now = monotonic_ns();
        let (expired, active): (Vec<BanEntry>, Vec<BanEntry>) = self
            .entries()?
            .into_iter()
            .partition(|e| e.expires_ns <= now);
        self.index = Some(Index::of(active.iter().cloned()));
        let mut report = Sweep::default();
        for e in expired {
            // Re-read first: a new ban of the same target may have replaced the entry.
            if self.read(&e.address).is_some_and(|v| v.expires_ns <= now) {
                self.remove_entry(&e.address)?;
            }
            report.expired.push(e);
        }
        for t in self.index()?.outlasted() {
            if let Some(e) = self.remove_entry(&t)? {
                report.outlasted.push(e);
            }
        }
        let index = self.index()?;
        report.active = active
            .into_iter()
            .filter(|e| index.get(&e.address).is_some())
            .collect();
        self.refresh_flags()?;
        Ok(report)
    }
}

fn entry(address: BanTarget, v: &BanValue) -> BanEntry {
    BanEntry {
        address,
        policy: policy_str(&v.policy),
        reason: from_code(v.kind),
        banned_at_unix: v.banned_at_unix,
        expires_ns: v.expires_ns,
    }
}

/// Packets and bytes the blocklist dropped (or passed in audit mode), per kind:
/// `(kind, slot, packets, bytes)` for the non-zero slots, `slot` being `SLOT_DROP` or
/// `SLOT_AUDIT`.
pub fn counters(pin_dir: &Path) -> Result<Vec<(BanKind, usize, u64, u64)>, DataplaneError> {
    let map: PerCpuArray<_, RuleCounters> =
        PerCpuArray::try_from(open_pinned(pin_dir, "BAN_COUNTERS")?)
            .map_err(map_err("map BAN_COUNTERS"))?;
    let mut out = Vec::new();
    for code in [BAN_AUTH, BAN_RATELIMIT, BAN_MANUAL] {
        debug_assert!(code < BAN_KINDS);
        let per_cpu = map.get(&code, 0).map_err(map_err("read BAN_COUNTERS"))?;
        for slot in [SLOT_DROP, SLOT_AUDIT] {
            let (p, b) = per_cpu.iter().fold((0, 0), |(p, b), c| {
                (p + c.slots[slot].packets, b + c.slots[slot].bytes)
            });
            if p > 0 {
                out.push((from_code(code), slot, p, b));
            }
        }
    }
    Ok(out)
}

/// Seconds since the Unix epoch (when a ban was made, for `/status` and `tollgate bans`).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
