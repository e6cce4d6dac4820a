//! The top offenders: the source prefixes (/24 for IPv4, /48 for IPv6) with the most dropped
//! or rate-limited packets, from the kernel's bounded LRU map of sampled estimates. Served in
//! `/status` and by `tollgate top`, never as metric labels (that would be unbounded).
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use aya::maps::HashMap as BpfHashMap;
use gateway_common::{
    OffenderKey, OffenderValue, OFFENDER_PREFIX_V4, OFFENDER_PREFIX_V6, OFFENDER_SAMPLE_SHIFT,
};
use serde::Serialize;

use super::{map_err, open_pinned, DataplaneError};

/// One source prefix and its estimated drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offender {
    /// The source prefix, e.g. `203.0.113.0/24`.
    pub prefix: String,
    /// Packets dropped by deny rules or the default action (estimate).
    pub dropped: u64,
    /// Packets dropped by rate limits (estimate).
    pub ratelimited: u64,
}

/// How precise the figures are: one drop in 2^shift is sampled, with that weight.
pub fn sample_rate() -> u64 {
    1 << OFFENDER_SAMPLE_SHIFT
}

fn prefix(k: &OffenderKey) -> String {
    if k.family == 6 {
        format!("{}/{OFFENDER_PREFIX_V6}", Ipv6Addr::from(k.addr))
    } else {
        format!(
            "{}/{OFFENDER_PREFIX_V4}",
            Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3])
        )
    }
}

/// The `limit` prefixes with the most drops (dropped + rate-limited), most first.
pub fn top(pin_dir: &Path, limit: usize) -> Result<Vec<Offender>, DataplaneError> {
    let map: BpfHashMap<_, OffenderKey, OffenderValue> =
        BpfHashMap::try_from(open_pinned(pin_dir, "OFFENDERS")?).map_err(map_err("OFFENDERS"))?;
    let mut all: Vec<Offender> = map
        .iter()
        .filter_map(Result::ok)
        .map(|(k, v)| Offender {
            prefix: prefix(&k),
            dropped: v.dropped,
            ratelimited: v.ratelimited,
        })
        .collect();
    all.sort_by(|a, b| {
        (b.dropped + b.ratelimited)
            .cmp(&(a.dropped + a.ratelimited))
            .then(a.prefix.cmp(&b.prefix))
    });
    all.truncate(limit);
    Ok(all)
}
