//! The agent's ban task: the one writer of the XDP blocklist (`dataplane::bans`) while the
//! agent runs. The proxy sends it [`BanRequest`]s through a bounded channel; it writes them,
//! logs and counts them, and every [`SWEEP_INTERVAL`] removes the bans that have expired (the
//! program already ignores them) and notices bans lifted or added by hand (`tollgate bans`).
//!
//! It holds its own handle on the pinned blocklist maps, so that a ban never waits for a
//! revision being applied, and a revision never touches a ban.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::telemetry::metrics::{BanLabels, ReasonLabel};
use crate::telemetry::Shared;
use tollgate_dataplane::bans::{monotonic_ns, BanEntry, BanError, BanMaps};
use tollgate_proxy::abuse::BanRequest;

/// How often expired bans are removed and the blocklist is read back.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Bans `/status` lists at most (with the total).
pub const STATUS_BANS: usize = 1000;

/// One ban as `/status` and `tollgate bans --json` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BanView {
    /// The banned source.
    pub address: IpAddr,
    /// `namespace/name` of the policy that banned it, or `manual`.
    pub policy: String,
    /// `auth`, `ratelimit` or `manual`.
    pub reason: &'static str,
    /// When (Unix seconds).
    pub banned_at_unix: u64,
    /// Seconds left (rounded up).
    pub expires_in_seconds: u64,
}

/// The bans in force, for a report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BansReport {
    /// Bans in force.
    pub total: usize,
    /// The first `limit` of them, by address.
    pub bans: Vec<BanView>,
}

/// The bans in force under `pin_dir`: the first `limit` by address, and the total.
pub fn report(
    pin_dir: &Path,
    limit: usize,
) -> Result<BansReport, tollgate_dataplane::DataplaneError> {
    let maps = BanMaps::open(pin_dir)?;
    let now = monotonic_ns();
    let active = maps.active()?;
    Ok(BansReport {
        total: active.len(),
        bans: active.iter().take(limit).map(|e| view(e, now)).collect(),
    })
}

/// A ban as reported at monotonic time `now`.
pub fn view(e: &BanEntry, now: u64) -> BanView {
    let left = e.remaining(now);
    BanView {
        address: e.address,
        policy: e.policy.clone(),
        reason: e.reason.as_str(),
        banned_at_unix: e.banned_at_unix,
        expires_in_seconds: left.as_secs() + u64::from(left.subsec_nanos() > 0),
    }
}

/// Runs the ban task until `stop`: writes the bans of `rx` into the blocklist pinned under
/// `pin_dir`. If the maps cannot be opened, bans are logged and dropped.
pub async fn run(
    pin_dir: PathBuf,
    mut rx: mpsc::Receiver<BanRequest>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let metrics = shared.metrics.bans.clone();
    let mut maps = match BanMaps::open(&pin_dir) {
        Ok(m) => Some(m),
        Err(e) => {
            warn!(error = %e, "cannot open the blocklist maps: banOnAbuse bans nothing");
            None
        }
    };
    // What the blocklist held at the last look: to tell expiries from lifts by hand.
    let mut known: BTreeMap<IpAddr, BanEntry> = maps
        .as_ref()
        .and_then(|m| m.active().ok())
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.address, e))
        .collect();
    if !known.is_empty() {
        info!(
            bans = known.len(),
            "bans in force from before this agent started"
        );
    }
    metrics.active.set(known.len() as i64);
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            req = rx.recv() => {
                let Some(req) = req else { return };
                let Some(m) = maps.as_mut() else {
                    warn!(address = %req.address, policy = %req.policy, "ban not written: no blocklist maps");
                    continue;
                };
                match m.ban(req.address, req.block_for, req.kind, &req.policy) {
                    Ok(entry) => {
                        info!(
                            address = %req.address,
                            policy = %req.policy,
                            route = %req.route,
                            reason = req.kind.as_str(),
                            failures = req.failures,
                            seconds = req.block_for.as_secs(),
                            "banned: the source's packets are dropped by XDP"
                        );
                        metrics
                            .bans
                            .get_or_create(&BanLabels {
                                policy: req.policy.to_string(),
                                reason: req.kind.as_str(),
                            })
                            .inc();
                        known.insert(entry.address, entry);
                        metrics.active.set(known.len() as i64);
                    }
                    Err(BanError::Full) => {
                        warn!(address = %req.address, policy = %req.policy, route = %req.route, "ban not written: the blocklist is full");
                        metrics.failures.get_or_create(&ReasonLabel { reason: "full".into() }).inc();
                    }
                    Err(BanError::Map(e)) => {
                        warn!(address = %req.address, policy = %req.policy, error = %e, "ban not written");
                        metrics.failures.get_or_create(&ReasonLabel { reason: "error".into() }).inc();
                    }
                }
            }
            _ = tick.tick() => {
                let Some(m) = maps.as_mut() else { continue };
                // Up to 2 x 65,536 entries to read: off the async workers' queue.
                let swept = tokio::task::block_in_place(|| sweep(m, &mut known, &metrics));
                if let Err(e) = swept {
                    warn!(error = %e, "could not read the blocklist");
                }
                metrics.active.set(known.len() as i64);
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// Removes expired bans and logs what changed since the last look.
fn sweep(
    maps: &mut BanMaps,
    known: &mut BTreeMap<IpAddr, BanEntry>,
    metrics: &crate::telemetry::metrics::BanMetrics,
) -> Result<(), tollgate_dataplane::DataplaneError> {
    let (expired, active) = maps.sweep()?;
    let now = monotonic_ns();
    for e in &expired {
        if known.contains_key(&e.address) {
            info!(address = %e.address, policy = %e.policy, reason = e.reason.as_str(), "ban expired; lifted");
        }
    }
    let active: BTreeMap<IpAddr, BanEntry> = active.into_iter().map(|e| (e.address, e)).collect();
    for (a, e) in known.iter() {
        if !active.contains_key(a) && !expired.iter().any(|x| x.address == *a) {
            if e.expires_ns <= now {
                info!(address = %a, policy = %e.policy, reason = e.reason.as_str(), "ban expired; lifted");
            } else {
                info!(address = %a, policy = %e.policy, reason = e.reason.as_str(), "ban lifted by hand (tollgate bans lift)");
            }
        }
    }
    for (a, e) in &active {
        if !known.contains_key(a) {
            info!(address = %a, policy = %e.policy, reason = e.reason.as_str(), seconds = e.remaining(now).as_secs(), "ban added by hand (tollgate bans add)");
            metrics
                .bans
                .get_or_create(&BanLabels {
                    policy: e.policy.clone(),
                    reason: e.reason.as_str(),
                })
                .inc();
        }
    }
    *known = active;
    Ok(())
}
