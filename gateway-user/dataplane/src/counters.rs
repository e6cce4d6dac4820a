//! Per-rule counters, summed over CPUs, read from the pinned maps (works whether or not an
//! agent is running: the maps outlive it).
use std::path::Path;

use aya::maps::PerCpuArray;
use gateway_common::{
    Counter, RuleCounters, SLOTS, SLOT_AUDIT, SLOT_DROP, SLOT_PASS, SLOT_RATELIMIT,
    STAT_BUCKET_EVICTED, STAT_FAILSAFE, STAT_FRAGMENT_PASS, STAT_MALFORMED, STAT_NON_IP,
    STAT_UNCONFIGURED, STAT_UNSUPPORTED,
};
use serde::Serialize;

use super::ids::Ids;
use super::{open_pinned, DataplaneError};
use tollgate_compile::l4::DEFAULT_RULE_NAME;

/// One counter row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    /// Policy name (a default's set key).
    pub policy: String,
    /// Rule name (`(default)` for the default action).
    pub rule: String,
    /// `pass` or `drop`.
    pub action: &'static str,
    /// `policy`, `ratelimit`, `default`, `blocklist` or `audit`.
    pub reason: &'static str,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Counters of packets the policy did not judge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Non-IP frames passed.
    pub non_ip: u64,
    /// Malformed packets dropped.
    pub malformed: u64,
    /// Non-first fragments passed.
    pub fragment_pass: u64,
    /// Packets on interfaces without a rule set, passed.
    pub unconfigured: u64,
    /// Unsupported encapsulations dropped.
    pub unsupported: u64,
    /// Replies from a failsafe endpoint (the API server) passed before any rule.
    pub failsafe: u64,
    /// Not packets: token buckets of sources still being limited that a new source's bucket
    /// replaced (their set of the bucket table was full; see `gateway_common::BucketWay`).
    pub buckets_evicted: u64,
}

/// Everything `tollgate counters` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CounterReport {
    /// Non-zero rule counters.
    pub rules: Vec<RuleCount>,
    /// Packets not judged by rules.
    pub stats: Stats,
}

fn sum(values: &[Counter]) -> Counter {
    values.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

/// Reads the counters pinned under `pin_dir`, naming rules with the id table in `state_dir`.
pub fn read(pin_dir: &Path, state_dir: &Path) -> Result<CounterReport, DataplaneError> {
    let ids = Ids::load(state_dir)
        .map_err(|source| DataplaneError::Io {
            what: format!("read ids in {}", state_dir.display()),
            source,
        })?
        .unwrap_or_default();
    let names: Vec<(String, String, u32)> = ids
        .rules
        .iter()
        .map(|(p, r, id)| (p.to_owned(), r.clone(), id))
        .collect();
    read_named(pin_dir, &names)
}

/// Reads the counters pinned under `pin_dir` of the rules `names` (policy, rule, id): one
/// per-CPU read per rule, so the cost is rules x CPUs, whatever the traffic.
pub fn read_named(
    pin_dir: &Path,
    names: &[(String, String, u32)],
) -> Result<CounterReport, DataplaneError> {
    let rules_map: PerCpuArray<_, RuleCounters> =
        PerCpuArray::try_from(open_pinned(pin_dir, "RULE_COUNTERS")?)
            .map_err(super::map_err("RULE_COUNTERS"))?;
    let stats_map: PerCpuArray<_, Counter> =
        PerCpuArray::try_from(open_pinned(pin_dir, "STATS")?).map_err(super::map_err("STATS"))?;
    let mut report = CounterReport::default();
    let mut names: Vec<&(String, String, u32)> = names.iter().collect();
    names.sort();
    for (policy, rule, id) in names {
        let (policy, rule, id) = (policy.as_str(), rule.as_str(), *id);
        let per_cpu = rules_map
            .get(&id, 0)
            .map_err(super::map_err(format!("read counters of {policy}/{rule}")))?;
        for slot in 0..SLOTS {
            let c = sum(&per_cpu.iter().map(|rc| rc.slots[slot]).collect::<Vec<_>>());
            if c.packets == 0 {
                continue;
            }
            let is_default = rule == DEFAULT_RULE_NAME;
            let (action, reason) = match slot {
                SLOT_PASS => ("pass", if is_default { "default" } else { "policy" }),
                SLOT_DROP => ("drop", if is_default { "default" } else { "policy" }),
                SLOT_RATELIMIT => ("drop", "ratelimit"),
                SLOT_AUDIT => ("pass", "audit"),
                _ => unreachable!("SLOTS"),
            };
            report.rules.push(RuleCount {
                policy: policy.into(),
                rule: rule.into(),
                action,
                reason,
                packets: c.packets,
                bytes: c.bytes,
            });
        }
    }
    // The blocklist (banOnAbuse): one row per kind. Maps pinned by a build without a
    // blocklist have no BAN_COUNTERS: no rows then.
    if let Ok(bans) = super::bans::counters(pin_dir) {
        for (kind, slot, packets, bytes) in bans {
            let (action, reason) = if slot == SLOT_AUDIT {
                ("pass", "audit")
            } else {
                ("drop", "blocklist")
            };
            report.rules.push(RuleCount {
                policy: super::bans::BAN_COUNTER_POLICY.into(),
                rule: kind.as_str().into(),
                action,
                reason,
                packets,
                bytes,
            });
        }
    }
    let stat = |i: u32| -> Result<u64, DataplaneError> {
        Ok(sum(&stats_map.get(&i, 0).map_err(super::map_err("read STATS"))?).packets)
    };
    report.stats = Stats {
        non_ip: stat(STAT_NON_IP)?,
        malformed: stat(STAT_MALFORMED)?,
        fragment_pass: stat(STAT_FRAGMENT_PASS)?,
        unconfigured: stat(STAT_UNCONFIGURED)?,
        unsupported: stat(STAT_UNSUPPORTED)?,
        failsafe: stat(STAT_FAILSAFE)?,
        buckets_evicted: stat(STAT_BUCKET_EVICTED)?,
    };
    Ok(report)
}
