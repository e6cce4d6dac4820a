//! The blocklist (`BANS_V4`, `BANS_V6`): sources the L7 tier banned (`banOnAbuse`) or an
//! operator banned by hand (`tollgate bans add`). The XDP and TC programs drop every packet
//! from a banned source before any policy lookup, until the ban's expiry.
//!
//! The blocklist is not policy: it has no generations, applying a revision never touches it,
//! and the drift check ignores it. Its maps are pinned with the others (`maps/BANS_V4`,
//! `maps/BANS_V6`, `maps/BAN_COUNTERS`), so bans survive an agent restart, and `tollgate
//! detach` removes them. A ban's expiry is a `CLOCK_MONOTONIC` time (what `bpf_ktime_get_ns`
//! reads): the program ignores an expired entry even when no agent is left to remove it.
//!
//! [`BanMaps`] opens the pinned maps by path: the agent's ban task, the CLI and tests each hold
//! their own handle, without going through the [`super::Dataplane`] that applies revisions.
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use gateway_common::{
    BanKeyV4, BanKeyV6, BanValue, RuleCounters, BAN_AUTH, BAN_KINDS, BAN_MANUAL, BAN_POLICY_BYTES,
    BAN_RATELIMIT, MAX_BANS, SLOT_AUDIT, SLOT_DROP,
};
use serde::Serialize;

use super::{map_err, open_pinned, DataplaneError};

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
    /// The banned source.
    pub address: IpAddr,
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

/// Why a ban was not written.
#[derive(Debug, thiserror::Error)]
pub enum BanError {
    /// The family's map holds [`MAX_BANS`] entries already.
    #[error("the blocklist is full ({MAX_BANS} sources per address family)")]
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

/// The pinned blocklist maps.
pub struct BanMaps {
    v4: BpfHashMap<MapData, BanKeyV4, BanValue>,
    v6: BpfHashMap<MapData, BanKeyV6, BanValue>,
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

fn canonical(a: IpAddr) -> IpAddr {
    a.to_canonical()
}

impl BanMaps {
    /// Opens the blocklist pinned under `pin_dir` (an agent must have loaded the programs
    /// there once: `tollgate run`).
    pub fn open(pin_dir: &Path) -> Result<BanMaps, DataplaneError> {
        let v4 = BpfHashMap::try_from(open_pinned(pin_dir, "BANS_V4")?)
            .map_err(map_err("map BANS_V4"))?;
        let v6 = BpfHashMap::try_from(open_pinned(pin_dir, "BANS_V6")?)
            .map_err(map_err("map BANS_V6"))?;
        Ok(BanMaps { v4, v6 })
    }

    /// Bans `address` for `duration` from now (replacing a ban it already has).
    pub fn ban(
        &mut self,
        address: IpAddr,
        duration: Duration,
        kind: BanKind,
        policy: &str,
    ) -> Result<BanEntry, BanError> {
        let address = canonical(address);
        let value = BanValue {
            expires_ns: monotonic_ns().saturating_add(duration.as_nanos() as u64),
            banned_at_unix: unix_now(),
            kind: code(kind),
            _pad: 0,
            policy: policy_bytes(policy),
        };
        let r = match address {
            IpAddr::V4(a) => self.v4.insert(BanKeyV4 { addr: a.octets() }, value, 0),
            IpAddr::V6(a) => self.v6.insert(BanKeyV6 { addr: a.octets() }, value, 0),
        };
        match r {
            Ok(()) => Ok(entry(address, &value)),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::E2BIG)
                    || e.io_error.raw_os_error() == Some(libc::ENOMEM) =>
            {
                Err(BanError::Full)
            }
            Err(e) => Err(BanError::Map(DataplaneError::Map {
                what: format!("ban {address}"),
                source: e,
            })),
        }
    }

    /// Lifts the ban of `address`; false when it had none.
    pub fn lift(&mut self, address: IpAddr) -> Result<bool, DataplaneError> {
        let address = canonical(address);
        let r = match address {
            IpAddr::V4(a) => self.v4.remove(&BanKeyV4 { addr: a.octets() }),
            IpAddr::V6(a) => self.v6.remove(&BanKeyV6 { addr: a.octets() }),
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) => match super::remove_ok(Err(e)) {
                Ok(()) => Ok(false),
                Err(e) => Err(DataplaneError::Map {
                    what: format!("lift the ban of {address}"),
                    source: e,
                }),
            },
        }
    }

    /// Every entry, expired ones included, sorted by address.
    pub fn entries(&self) -> Result<Vec<BanEntry>, DataplaneError> {
        let mut out = Vec::new();
        for item in self.v4.iter() {
            let (k, v) = item.map_err(map_err("read BANS_V4"))?;
            out.push(entry(IpAddr::from(k.addr), &v));
        }
        for item in self.v6.iter() {
            let (k, v) = item.map_err(map_err("read BANS_V6"))?;
            out.push(entry(IpAddr::from(k.addr), &v));
        }
        out.sort_by_key(|e| e.address);
        Ok(out)
    }

    /// The bans in force now (not expired), sorted by address.
    pub fn active(&self) -> Result<Vec<BanEntry>, DataplaneError> {
        let now = monotonic_ns();
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.expires_ns > now)
            .collect())
    }

    /// Removes the expired entries; returns them, and the bans still in force (by address).
    /// One read of the maps, and one more look-up per expired entry.
    pub fn sweep(&mut self) -> Result<(Vec<BanEntry>, Vec<BanEntry>), DataplaneError> {
        let now = monotonic_ns();
        let (expired, active): (Vec<BanEntry>, Vec<BanEntry>) = self
            .entries()?
            .into_iter()
            .partition(|e| e.expires_ns <= now);
        for e in &expired {
            // Re-read first: a new ban of the same address may have replaced the entry.
            let current = match e.address {
                IpAddr::V4(a) => self.v4.get(&BanKeyV4 { addr: a.octets() }, 0).ok(),
                IpAddr::V6(a) => self.v6.get(&BanKeyV6 { addr: a.octets() }, 0).ok(),
            };
            if current.is_some_and(|v| v.expires_ns <= now) {
                self.lift(e.address)?;
            }
        }
        Ok((expired, active))
    }
}

fn entry(address: IpAddr, v: &BanValue) -> BanEntry {
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
