//! The agent's ban task: the one writer of the XDP blocklist (`dataplane::bans`) while the
//! agent runs. The proxy sends it [`BanRequest`]s through a bounded channel; it writes them,
//! logs and counts them, and every [`SWEEP_INTERVAL`] removes the bans that have expired (the
//! program already ignores them) and notices bans lifted or added by hand (`tollgate bans`).
//! A full blocklist makes room for a new ban by lifting the one nearest to its end (counted in
//! `tollgate_bans_evicted_total`). The log shows the first [`LOG_BURST`] ban events of every
//! [`LOG_WINDOW`] and one line that counts the others.
//!
//! It holds its own handle on the pinned blocklist maps, so that a ban never waits for a
//! revision being applied, and a revision never touches a ban.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::telemetry::metrics::{BanLabels, BanMetrics, ReasonLabel};
use crate::telemetry::Shared;
use tollgate_dataplane::bans::{monotonic_ns, BanEntry, BanError, BanMaps, BanOutcome, BanTarget};
use tollgate_proxy::abuse::BanRequest;

/// How often expired bans are removed and the blocklist is read back.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Bans `/status` lists at most (with the total).
pub const STATUS_BANS: usize = 1000;

/// One ban as `/status` and `tollgate bans --json` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BanView {
    /// The banned source: an address, or an IPv6 prefix (`2001:db8:1:2::/64`).
    pub address: BanTarget,
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

/// Ban events logged one by one in each [`LOG_WINDOW`]; the others are counted and summed up
/// in one line at the end of the window. A flood of abusers (or a full blocklist) must not
/// turn into a flood of log lines.
pub const LOG_BURST: u32 = 10;
/// The window of [`LOG_BURST`].
pub const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Rate-limits the ban task's log: the first [`LOG_BURST`] events of a window are logged, the
/// rest counted by kind and summed up once the window is over.
#[derive(Debug)]
pub struct BanLog {
    start: tokio::time::Instant,
    logged: u32,
    /// Events not logged, by kind (`banned`, `expired`, ...).
    suppressed: BTreeMap<&'static str, u64>,
}

impl Default for BanLog {
    fn default() -> Self {
        BanLog {
            start: tokio::time::Instant::now(),
            logged: 0,
            suppressed: BTreeMap::new(),
        }
    }
}

impl BanLog {
    /// True when an event of `kind` may be logged now; otherwise it is counted.
    pub fn allow(&mut self, kind: &'static str) -> bool {
        if self.logged < LOG_BURST {
            self.logged += 1;
            true
        } else {
            *self.suppressed.entry(kind).or_default() += 1;
            false
        }
    }

    /// Ends the window when it is over: logs one line with the events not logged, if any.
    /// Returns true when it logged that line.
    pub fn flush(&mut self) -> bool {
        if self.start.elapsed() < LOG_WINDOW {
            return false;
        }
        let counts = std::mem::take(&mut self.suppressed);
        let seconds = self.start.elapsed().as_secs();
        self.start = tokio::time::Instant::now();
        self.logged = 0;
        if counts.is_empty() {
            return false;
        }
        let total: u64 = counts.values().sum();
        let by_kind = counts
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        warn!(
            events = total,
            counts = %by_kind,
            seconds,
            "more ban events than the log shows one by one: these were counted only (see tollgate_bans_total, tollgate_bans_evicted_total, tollgate_ban_failures_total)"
        );
        true
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
    let mut known: BTreeMap<BanTarget, BanEntry> = maps
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
    let mut log = BanLog::default();
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            req = rx.recv() => {
                let Some(req) = req else { return };
                match maps.as_mut() {
                    Some(m) => write(m, &req, &mut known, &metrics, &mut log),
                    None => {
                        if log.allow("not_written") {
                            warn!(prefix = %req.prefix, policy = %req.policy, "ban not written: no blocklist maps");
                        }
                    }
                }
                metrics.active.set(known.len() as i64);
            }
            _ = tick.tick() => {
                log.flush();
                let Some(m) = maps.as_mut() else { continue };
                // Up to 2 x 65,536 entries to read: off the async workers' queue.
                let swept = tokio::task::block_in_place(|| sweep(m, &mut known, &metrics, &mut log));
                if let Err(e) = swept {
                    warn!(error = %e, "could not read the blocklist");
                }
                metrics.active.set(known.len() as i64);
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// Writes one ban, and logs and counts what happened.
fn write(
    m: &mut BanMaps,
    req: &BanRequest,
    known: &mut BTreeMap<BanTarget, BanEntry>,
    metrics: &BanMetrics,
    log: &mut BanLog,
) {
    let target = match BanTarget::from_net(req.prefix) {
        Ok(t) => t,
        Err(e) => {
            // Cannot happen: the proxy makes IPv4 bans per address.
            warn!(prefix = %req.prefix, error = %e, "ban not written");
            return;
        }
    };
    let now = monotonic_ns();
    match m.ban(target, req.block_for, req.kind, &req.policy) {
        Ok(BanOutcome::Banned {
            entry,
            evicted,
            replaced,
        }) => {
            if log.allow("banned") {
                info!(
                    target = %target,
                    address = %req.address,
                    policy = %req.policy,
                    route = %req.route,
                    reason = req.kind.as_str(),
                    failures = req.failures,
                    seconds = req.block_for.as_secs(),
                    "banned: the source's packets are dropped by XDP"
                );
            }
            metrics
                .bans
                .get_or_create(&BanLabels {
                    policy: req.policy.to_string(),
                    reason: req.kind.as_str(),
                })
                .inc();
            for e in &evicted {
                known.remove(&e.address);
                if e.expires_ns > now {
                    metrics.evicted.inc();
                    if log.allow("evicted") {
                        warn!(
                            target = %e.address,
                            policy = %e.policy,
                            seconds_left = e.remaining(now).as_secs(),
                            "ban lifted early to make room: the blocklist is full (the ban nearest to its end goes first)"
                        );
                    }
                }
            }
            for e in &replaced {
                known.remove(&e.address);
                if log.allow("merged") {
                    info!(target = %e.address, into = %target, "ban merged into a ban of a containing prefix that lasts longer");
                }
            }
            known.insert(entry.address, entry);
        }
        Ok(BanOutcome::Covered(cover)) => {
            if log.allow("covered") {
                info!(
                    target = %target,
                    by = %cover.address,
                    policy = %req.policy,
                    seconds_left = cover.remaining(now).as_secs(),
                    "not banned again: a ban of a containing prefix lasts as long or longer"
                );
            }
        }
        Err(BanError::Full) => {
            if log.allow("full") {
                warn!(target = %target, policy = %req.policy, route = %req.route, "ban not written: the blocklist is full and nothing could be evicted");
            }
            metrics
                .failures
                .get_or_create(&ReasonLabel {
                    reason: "full".into(),
                })
                .inc();
        }
        Err(BanError::Map(e)) => {
            if log.allow("error") {
                warn!(target = %target, policy = %req.policy, error = %e, "ban not written");
            }
            metrics
                .failures
                .get_or_create(&ReasonLabel {
                    reason: "error".into(),
                })
                .inc();
        }
    }
}

/// Removes expired bans and logs what changed since the last look.
fn sweep(
    maps: &mut BanMaps,
    known: &mut BTreeMap<BanTarget, BanEntry>,
    metrics: &BanMetrics,
    log: &mut BanLog,
) -> Result<(), tollgate_dataplane::DataplaneError> {
    let swept = maps.sweep()?;
    let now = monotonic_ns();
    for e in &swept.expired {
        if known.contains_key(&e.address) && log.allow("expired") {
            info!(target = %e.address, policy = %e.policy, reason = e.reason.as_str(), "ban expired; lifted");
        }
    }
    for e in &swept.outlasted {
        if log.allow("merged") {
            info!(target = %e.address, policy = %e.policy, "ban removed: a ban of a containing prefix outlasts it");
        }
    }
    let gone = |a: &BanTarget| {
        swept.expired.iter().any(|x| x.address == *a)
            || swept.outlasted.iter().any(|x| x.address == *a)
    };
    let active: BTreeMap<BanTarget, BanEntry> =
        swept.active.into_iter().map(|e| (e.address, e)).collect();
    for (a, e) in known.iter() {
        if !active.contains_key(a) && !gone(a) {
            if e.expires_ns <= now {
                if log.allow("expired") {
                    info!(target = %a, policy = %e.policy, reason = e.reason.as_str(), "ban expired; lifted");
                }
            } else if log.allow("lifted") {
                info!(target = %a, policy = %e.policy, reason = e.reason.as_str(), "ban lifted by hand (tollgate bans lift)");
            }
        }
    }
    for (a, e) in &active {
        if !known.contains_key(a) {
            if log.allow("added") {
                info!(target = %a, policy = %e.policy, reason = e.reason.as_str(), seconds = e.remaining(now).as_secs(), "ban added by hand (tollgate bans add)");
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tracing_subscriber::layer::SubscriberExt;

    /// Counts the log events emitted.
    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn request(n: u32) -> BanRequest {
        BanRequest {
            prefix: ipnet::IpNet::from(std::net::IpAddr::from(n.to_be_bytes())),
            address: std::net::IpAddr::from(n.to_be_bytes()),
            kind: tollgate_model::BanKind::Auth,
            policy: "ns/p".into(),
            route: "ns/r".into(),
            block_for: Duration::from_secs(60),
            failures: 5,
        }
    }

    // One test, not two: tracing caches per call site whether anyone listens, and a test on
    // another thread without this subscriber could make these call sites silent here.
    #[tokio::test(start_paused = true)]
    async fn the_ban_log_of_many_bans_is_a_few_lines_and_a_count() {
        let lines = Arc::new(AtomicUsize::new(0));
        let _guard = tracing::subscriber::set_default(
            tracing_subscriber::registry().with(Count(lines.clone())),
        );

        // The window: its burst, then counted, then one summary.
        let mut log = BanLog::default();
        let allowed = (0..1000).filter(|_| log.allow("banned")).count();
        assert_eq!(allowed, LOG_BURST as usize);
        assert!(!log.flush(), "the window is not over");
        tokio::time::advance(LOG_WINDOW).await;
        assert!(log.flush(), "one summary");
        assert!(log.suppressed.is_empty());
        assert!(log.allow("banned"), "a new window");
        tokio::time::advance(LOG_WINDOW).await;
        assert!(!log.flush(), "nothing suppressed: no summary");
        assert_eq!(lines.swap(0, Ordering::Relaxed), 1);

        // The task.
        const BANS: u32 = 100_000;
        let (tx, rx) = mpsc::channel(BANS as usize);
        let stop = CancellationToken::new();
        // No blocklist maps here: each ban is one event to log ("not written").
        let shared = Shared::new("/nonexistent/tollgate-pins".into());
        let task = tokio::spawn(run(
            "/nonexistent/tollgate-pins".into(),
            rx,
            shared,
            stop.clone(),
        ));
        for n in 0..BANS {
            tx.send(request(n)).await.unwrap();
        }
        // Past one window: the summary line is out.
        tokio::time::sleep(LOG_WINDOW + SWEEP_INTERVAL * 2).await;
        stop.cancel();
        task.await.unwrap();
        // "cannot open the blocklist maps", the first LOG_BURST bans, one summary.
        assert_eq!(
            lines.load(Ordering::Relaxed),
            1 + LOG_BURST as usize + 1,
            "log lines for {BANS} bans"
        );
    }
}
