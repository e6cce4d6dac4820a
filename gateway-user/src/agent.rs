//! Wires the pipeline for `tollgate run`: source -> compile -> apply -> report.
//!
//! One task owns the data plane. Revisions are read and compiled off to the side; only a
//! revision that compiled whole reaches `apply`, and a refused one leaves the kernel as it was.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::telemetry::webhook::WebhookSecret;
use crate::telemetry::{self, InterfaceStatus, RevisionStatus, Shared};
use std::sync::Arc;
use tollgate_compile::snapshot::{compile_documents, compile_documents_with, Snapshot};
use tollgate_dataplane::{self as dataplane, AttachMode, Dataplane};
use tollgate_model::ParseCache;
use tollgate_proxy::{Proxy, ProxyConfig};
use tollgate_source::dir::read_dir;
use tollgate_source::git::{GitOptions, GitSource};
use tollgate_source::verify::AllowedSigners;
use tollgate_source::{last_good, Documents};

/// Settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Interfaces to enforce on.
    pub interfaces: Vec<String>,
    /// Where the policy comes from.
    pub source: SourceConfig,
    /// State directory.
    pub state_dir: PathBuf,
    /// bpffs pin directory.
    pub pin_dir: PathBuf,
    /// Attach mode.
    pub attach_mode: AttachMode,
    /// Source polling interval.
    pub interval: Duration,
    /// Remove everything on exit.
    pub detach_on_exit: bool,
    /// Admin server address.
    pub admin: std::net::SocketAddr,
    /// Apply a Git ref that moved backwards or sideways instead of refusing it.
    pub allow_ref_rewind: bool,
    /// Git source: apply only commits signed by a key of this OpenSSH allowed_signers file
    /// (read again for every new commit, so keys can be rotated without a restart).
    pub verify_commits: Option<PathBuf>,
    /// The webhook's secret; `None`: `POST /hooks/git` answers 404.
    pub webhook_secret: Option<WebhookSecret>,
    /// The L7 proxy's settings.
    pub proxy: ProxyConfig,
}

/// Where the policy comes from.
// Built once per run; the Git variant's settings are not worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory of YAML files.
    Dir(PathBuf),
    /// A Git repository at a ref, under a path.
    Git {
        /// Repository URL (file://, git://, http(s)://, ssh:// or user@host:path).
        url: String,
        /// Branch, tag or commit.
        reference: String,
        /// Directory inside the repository ("" = all of it).
        path: String,
        /// Credentials, trust anchors and limits of the fetch.
        options: GitOptions,
    },
}

impl SourceConfig {
    /// For logs and reports (`/status`, the metrics' `source` label): a URL is shown
    /// [`redacted`](tollgate_source::redacted), without its password, query or fragment.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Dir(p) => p.display().to_string(),
            SourceConfig::Git {
                url,
                reference,
                path,
                ..
            } if path.is_empty() => format!("{}@{reference}", tollgate_source::redacted(url)),
            SourceConfig::Git {
                url,
                reference,
                path,
                ..
            } => format!("{}@{reference}:{path}", tollgate_source::redacted(url)),
        }
    }
}

/// Why a revision was not loaded.
#[derive(Debug)]
struct LoadError {
    /// The label of `tollgate_policy_apply_failures_total`: `source` (could not be read),
    /// `invalid` (refused by the compiler), `rewind` or `unverified`.
    reason: &'static str,
    /// Every problem, for the log and `/status`.
    message: String,
    /// The source itself could not be reached or read (a failed fetch, a missing directory):
    /// retried with backoff. Anything else is a property of the revision, which is not retried
    /// faster than the interval (it will not change until the commit does).
    unavailable: bool,
    /// The revision refused, when it is known (a commit that was fetched).
    revision: Option<String>,
}

impl LoadError {
    fn unavailable(e: impl std::fmt::Display) -> Self {
        LoadError {
            reason: "source",
            message: e.to_string(),
            unavailable: true,
            revision: None,
        }
    }

    fn refused(reason: &'static str) -> impl Fn(String) -> Self {
        move |message| LoadError {
            reason,
            message,
            unavailable: false,
            revision: None,
        }
    }

    fn of(mut self, revision: &str) -> Self {
        self.revision = Some(revision.to_owned());
        self
    }
}

/// A revision read and compiled, with what each step took.
struct Loaded {
    docs: Documents,
    snapshot: Snapshot,
    /// The Git fetch (zero for a directory).
    fetch: Duration,
    /// Reading the files (the commit's tree, or the directory).
    read: Duration,
    /// Parsing, validating and compiling.
    compile: Duration,
}

/// What a pass found, for the retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The source answered (whatever became of the revision).
    SourceRead,
    /// The source could not be read.
    SourceUnavailable,
}

/// When the next pass runs. While the source answers: every interval. After a pass that could
/// not read it: 1 s, then 2 s, 4 s, ... doubling, capped at the interval. So a short outage (a
/// Git server restarting) heals within seconds, while a long one is polled at the configured
/// rate, never more often than that in the long run: the interval stays the operator's bound on
/// the load on the Git server, and an outage costs at most log2(interval / 1 s) extra fetches.
/// A webhook call or SIGHUP runs a pass at once, whatever the schedule.
#[derive(Debug, Clone)]
pub struct RetrySchedule {
    interval: Duration,
    failures: u32,
}

impl RetrySchedule {
    /// The first retry after a failure.
    pub const FIRST_RETRY: Duration = Duration::from_secs(1);

    /// A schedule for `interval`, with no failure yet.
    pub fn new(interval: Duration) -> Self {
        RetrySchedule {
            interval,
            failures: 0,
        }
    }

    /// Records the outcome of a pass.
    pub fn record(&mut self, source_unavailable: bool) {
        self.failures = if source_unavailable {
            self.failures.saturating_add(1)
        } else {
            0
        };
    }

    /// Passes in a row that could not read the source.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How long after the last pass the next one runs.
    pub fn delay(&self) -> Duration {
        if self.failures == 0 {
            return self.interval;
        }
        let doublings = (self.failures - 1).min(31);
        Self::FIRST_RETRY
            .saturating_mul(1u32 << doublings)
            .min(self.interval)
    }
}

/// Reads and compiles the source. Never touches the kernel. `Ok(None)`: the Git source's
/// commit is the one seen last time (its tree is not read again).
fn load_revision(
    config: &AgentConfig,
    git: Option<&GitSource>,
    shared: &Shared,
    last_seen: &Option<String>,
    cache: &mut ParseCache,
) -> Result<Option<Loaded>, LoadError> {
    let mut fetch = Duration::ZERO;
    let mut read_started = Instant::now();
    let docs = match (&config.source, git) {
        (SourceConfig::Dir(dir), _) => read_dir(dir).map_err(LoadError::unavailable)?,
        (SourceConfig::Git { .. }, None) => {
            return Err(LoadError::unavailable("the Git source is not open"))
        }
        (SourceConfig::Git { .. }, Some(git)) => {
            // A fetch can take a while: tell the runtime, so the admin server keeps answering.
            let fetch_started = Instant::now();
            let fetched = tokio::task::block_in_place(|| git.fetch());
            fetch = fetch_started.elapsed();
            shared
                .metrics
                .git_fetch_duration
                .observe(fetch.as_secs_f64());
            let commit = fetched.map_err(LoadError::unavailable)?;
            let id = commit.to_string();
            if last_seen.as_deref() == Some(commit.to_string().as_str()) {
                return Ok(None);
            }
            // The commit in force; before the first apply of this run, the last good one saved
            // on the node (so a restart does not open the door to a rewind).
            let applied = shared
                .status
                .read()
                .ok()
                .and_then(|s| s.applied.as_ref().map(|r| r.id.clone()))
                .or_else(|| {
                    last_good::load(&config.state_dir)
                        .ok()
                        .flatten()
                        .map(|d| d.revision.id)
                });
            if let (Some(applied), false) = (applied, config.allow_ref_rewind) {
                git.check_forward(&applied, commit)
                    .map_err(|e| LoadError::refused("rewind")(e.to_string()).of(&id))?;
            }
            if let Some(file) = &config.verify_commits {
                let verified = AllowedSigners::load(file)
                    .map_err(tollgate_source::verify::VerifyError::from)
                    .and_then(|signers| signers.verify_commit(git.repository(), commit))
                    .map_err(|e| LoadError::refused("unverified")(e.to_string()).of(&id))?;
                info!(commit = %commit, signer = %verified.principals, key = %verified.fingerprint, "commit signature verified");
            }
            read_started = Instant::now();
            git.read(commit)
                .map_err(|e| LoadError::refused("source")(e.to_string()).of(&id))?
        }
    };
    let read = read_started.elapsed();
    if docs.files.is_empty() {
        // Most likely a wrong path or an unmounted volume: applying it would silently remove
        // every rule. An operator who wants no filtering commits a policy without rules.
        return Err(LoadError::refused("source")(format!(
            "no policy files (*.yaml, *.yml) in {}; refusing a revision that would remove all policy",
            config.source.describe()
        )));
    }
    let compile_started = Instant::now();
    let snapshot = compile_documents_with(cache, &docs, Some(&config.interfaces))
        .map_err(|e| LoadError::refused("invalid")(e.to_string()).of(&docs.revision.id))?;
    Ok(Some(Loaded {
        docs,
        snapshot,
        fetch,
        read,
        compile: compile_started.elapsed(),
    }))
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    // Signal handlers first: a SIGTERM that arrives while the first revision is applied must
    // stop the agent cleanly (pins kept), not kill it with the default action.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut dp = Dataplane::load(&config.pin_dir, &config.state_dir).with_context(|| {
        format!(
            "load the eBPF programs (pins in {})",
            config.pin_dir.display()
        )
    })?;
    if dp.adopted_state() {
        info!(pin_dir = %config.pin_dir.display(), generation = dp.active_gen(), "adopted the pinned maps: the last applied revision stays enforced");
    }
    let git = match &config.source {
        SourceConfig::Git {
            url,
            reference,
            path,
            options,
        } => Some(
            GitSource::open(url, reference, path, options, &config.state_dir.join("git"))
                .with_context(|| format!("open the Git source {}", config.source.describe()))?,
        ),
        SourceConfig::Dir(_) => None,
    };
    let shared = Shared::with_webhook(config.pin_dir.clone(), config.webhook_secret.clone());
    telemetry::admin::serve(config.admin, shared.clone())
        .await
        .with_context(|| format!("start the admin server on {} (--admin)", config.admin))?;
    let webhook = if shared.webhook_secret.is_some() {
        "POST /hooks/git"
    } else {
        "webhook disabled"
    };
    info!(address = %config.admin, webhook, "admin server: /metrics /healthz /readyz /status");
    let proxy = Proxy::new(config.proxy.clone(), shared.metrics.http.clone());
    // banOnAbuse: the proxy hands bans to the ban task, the one writer of the blocklist.
    let (ban_tx, ban_rx) = tokio::sync::mpsc::channel(tollgate_proxy::abuse::BAN_QUEUE);
    let stop_bans = tokio_util::sync::CancellationToken::new();
    let ban_task = tokio::spawn(crate::bans::run(
        config.pin_dir.clone(),
        ban_rx,
        shared.clone(),
        stop_bans.clone(),
    ));
    proxy.send_bans_to(ban_tx, shared.metrics.bans.dropped.clone());
    dp.attach_all(&config.interfaces, config.attach_mode)
        .context("attach")?;
    for (iface, how) in dp.attached() {
        info!(interface = %iface, mode = how.as_str(), "enforcing on interface");
    }
    if let Ok(mut s) = shared.status.write() {
        s.interfaces = dp
            .attached()
            .iter()
            .map(|(n, m)| InterfaceStatus {
                name: n.clone(),
                mode: m.as_str().into(),
            })
            .collect();
    }
    publish_counter_names(&shared, &dp);

    let mut last_seen: Option<String> = None;

    // What every policy file parsed into, so a new revision parses only the files it changes.
    let mut parse_cache = ParseCache::default();
    let mut schedule = RetrySchedule::new(config.interval);
    let pass = reconcile(
        &config,
        git.as_ref(),
        &mut dp,
        &proxy,
        &shared,
        &mut last_seen,
        &mut parse_cache,
    );
    let mut next_pass = after_pass(&mut schedule, pass, &shared);
    let nothing_applied = shared
        .status
        .read()
        .map(|s| s.applied.is_none())
        .unwrap_or(false);
    if nothing_applied {
        enforce_last_good(&config, &mut dp, &proxy, &shared);
    }

    // Drift is checked every interval, whatever the source does.
    let mut drift = tokio::time::interval(config.interval);
    drift.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    drift.tick().await;
    let mut drift_check: Option<tokio::task::JoinHandle<Result<bool, dataplane::DataplaneError>>> =
        None;
    loop {
        let pass = tokio::select! {
            _ = tokio::time::sleep_until(next_pass.into()) => {
                reconcile(&config, git.as_ref(), &mut dp, &proxy, &shared, &mut last_seen, &mut parse_cache)
            }
            _ = shared.wake.due() => {
                let pass = reconcile(&config, git.as_ref(), &mut dp, &proxy, &shared, &mut last_seen, &mut parse_cache);
                // The next webhook pass waits a gap from now (calls are coalesced).
                shared.wake.done();
                pass
            }
            _ = hup.recv() => {
                info!("SIGHUP: reading the source now");
                last_seen = None;
                reconcile(&config, git.as_ref(), &mut dp, &proxy, &shared, &mut last_seen, &mut parse_cache)
            }
            _ = drift.tick() => {
                // Reading every entry of both generations takes a while with a large policy:
                // it runs on a blocking thread, so that a webhook call or a pass is not held
                // up by it; only when it finds drift is the repair (which compares again) run.
                if drift_check.is_none() {
                    match dp.drift_probe() {
                        Ok(probe) => {
                            drift_check = Some(tokio::task::spawn_blocking(move || probe.drifted()));
                        }
                        Err(e) => warn!(error = %e, "could not check the kernel maps for drift"),
                    }
                }
                continue;
            }
            checked = async { drift_check.as_mut().expect("guarded").await }, if drift_check.is_some() => {
                drift_check = None;
                match checked {
                    Ok(Ok(false)) => {}
                    Ok(Ok(true)) => repair_drift(&mut dp, &shared),
                    Ok(Err(e)) => warn!(error = %e, "could not check the kernel maps for drift"),
                    Err(e) => warn!(error = %e, "the drift check stopped"),
                }
                continue;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        next_pass = after_pass(&mut schedule, pass, &shared);
    }
    let cut = proxy.drain(tollgate_proxy::DRAIN_TIMEOUT).await;
    if cut > 0 {
        warn!(
            connections = cut,
            "stopping with HTTP connections still open after the drain timeout"
        );
    }
    stop_bans.cancel();
    let _ = ban_task.await;
    if config.detach_on_exit {
        drop(dp);
        let removed = dataplane::detach(&config.pin_dir)?;
        info!(
            removed = removed.len(),
            "stopped; detached and removed every pinned object"
        );
    } else {
        info!("stopped; programs and maps stay pinned and keep enforcing the applied revision");
    }
    Ok(())
}

/// Records a pass in the schedule and in `/status`; returns when the next one is due.
fn after_pass(schedule: &mut RetrySchedule, pass: Pass, shared: &Shared) -> Instant {
    let before = schedule.failures();
    schedule.record(pass == Pass::SourceUnavailable);
    let delay = schedule.delay();
    let next = Instant::now() + delay;
    if schedule.failures() > 0 {
        warn!(
            consecutive_failures = schedule.failures(),
            retry_in_s = delay.as_secs_f64(),
            "the source cannot be read; retrying with backoff"
        );
    } else if before > 0 {
        info!(after_failures = before, "the source can be read again");
    }
    if let Ok(mut s) = shared.status.write() {
        s.consecutive_failures = schedule.failures();
        s.next_attempt = Some(next);
    }
    next
}

/// At start, when the source gives no valid revision: enforce the last good one saved in the
/// state directory (the pinned maps may hold it already; after a reboot they do not).
fn enforce_last_good(config: &AgentConfig, dp: &mut Dataplane, proxy: &Proxy, shared: &Shared) {
    let docs = match last_good::load(&config.state_dir) {
        Ok(Some(d)) => d,
        Ok(None) => return,
        Err(e) => {
            warn!(error = %e, dir = %config.state_dir.display(), "the saved last good revision is unreadable");
            return;
        }
    };
    let id = docs.revision.id.clone();
    let snapshot = match compile_documents(&docs, Some(&config.interfaces)) {
        Ok(s) => s,
        Err(e) => {
            warn!(revision = %id, "the saved last good revision does not compile for these interfaces:\n{e}");
            return;
        }
    };
    let prepared = match proxy.prepare(&snapshot.l7) {
        Ok(p) => p,
        Err(e) => {
            warn!(revision = %id, error = %e, "could not apply the saved last good revision");
            return;
        }
    };
    match dp.apply(&snapshot.l4) {
        Ok(_) => {
            proxy.commit(prepared, &id);
            publish_counter_names(shared, dp);
            let source = format!(
                "{} (last good, from {})",
                docs.revision.source,
                config.state_dir.display()
            );
            shared.metrics.applied(&source, &id, 0.0);
            if let Ok(mut s) = shared.status.write() {
                s.applied = Some(RevisionStatus {
                    id: id.clone(),
                    source,
                    at_unix: telemetry::unix_now(),
                    refused: None,
                });
                s.rules = snapshot.l4.rules.len();
                s.source_entries = snapshot.l4.source_entries();
                s.port_entries = snapshot.l4.port_entries();
                s.http_ports = proxy.ports();
                s.routes = snapshot.l7.policy.routes.len();
            }
            warn!(revision = %id, "the source gives no valid revision: enforcing the last good revision saved in the state directory; policy applied");
        }
        Err(e) => warn!(revision = %id, error = %e, "could not apply the saved last good revision"),
    }
}

/// Puts back kernel map entries changed behind the agent's back (once per interval).
fn repair_drift(dp: &mut Dataplane, shared: &Shared) {
    let revision = shared
        .status
        .read()
        .ok()
        .and_then(|s| s.applied.as_ref().map(|r| r.id.clone()))
        .unwrap_or_default();
    match dp.repair_drift() {
        Ok(report) if report.is_empty() => {}
        Ok(report) => {
            shared
                .metrics
                .drift_corrections
                .inc_by(report.corrected as u64);
            let maps = report
                .maps
                .iter()
                .map(|(m, n)| format!("{m}:{n}"))
                .collect::<Vec<_>>()
                .join(",");
            let rules = report.rules.iter().cloned().collect::<Vec<_>>().join(",");
            warn!(revision = %revision, corrected = report.corrected, maps = %maps, rules = %rules, "drift corrected: kernel map entries were changed behind the agent's back and are put back");
        }
        Err(e) => {
            warn!(revision = %revision, error = %e, "could not check the kernel maps for drift")
        }
    }
}

/// Publishes the names of the counter slots for the metrics collector.
fn publish_counter_names(shared: &Shared, dp: &Dataplane) {
    let names: telemetry::CounterNames = dp
        .ids()
        .rules
        .iter()
        .map(|(p, r, id)| (p.to_owned(), r.clone(), id))
        .collect();
    if let Ok(mut n) = shared.counter_names.write() {
        *n = Arc::new(names);
    }
}

/// One pass of the loop: read, compile, and apply if the revision is new and valid.
fn reconcile(
    config: &AgentConfig,
    git: Option<&GitSource>,
    dp: &mut Dataplane,
    proxy: &Proxy,
    shared: &Shared,
    last_seen: &mut Option<String>,
    cache: &mut ParseCache,
) -> Pass {
    let started = Instant::now();
    let source = config.source.describe();
    let loaded = match load_revision(config, git, shared, last_seen, cache) {
        Ok(Some(s)) => s,
        Ok(None) => return Pass::SourceRead,
        Err(LoadError {
            reason,
            message: e,
            unavailable,
            revision,
        }) => {
            let mut status = shared.status.write().unwrap_or_else(|p| p.into_inner());
            // Same broken revision as before: say it once.
            if status.last_error.as_deref() != Some(e.as_str()) || last_seen.is_none() {
                let applied = status
                    .applied
                    .as_ref()
                    .map_or("none".to_owned(), |r| r.id.clone());
                error!(source = %source, applied = %applied, reason, "revision refused; the last good revision stays enforced:\n{e}");
                shared.metrics.failed(reason);
            }
            status.last_error = Some(e);
            // A revision that was read and refused is the last attempted one; a source that
            // could not be read leaves the last attempt as it was.
            if let Some(id) = revision {
                if status.attempted.as_ref().map(|a| &a.id) != Some(&id) {
                    status.attempted = Some(RevisionStatus {
                        id,
                        source: source.clone(),
                        at_unix: telemetry::unix_now(),
                        refused: Some(reason.to_owned()),
                    });
                }
            }
            *last_seen = Some(String::new());
            return if unavailable {
                Pass::SourceUnavailable
            } else {
                Pass::SourceRead
            };
        }
    };
    let Loaded {
        docs,
        snapshot,
        fetch,
        read,
        compile,
    } = loaded;
    let id = snapshot.revision.id.clone();
    let applied_id = shared
        .status
        .read()
        .ok()
        .and_then(|s| s.applied.as_ref().map(|r| r.id.clone()));
    if last_seen.as_deref() == Some(id.as_str()) && applied_id.as_deref() == Some(id.as_str()) {
        return Pass::SourceRead;
    }
    *last_seen = Some(id.clone());
    let revision = RevisionStatus {
        id: id.clone(),
        source: source.clone(),
        at_unix: telemetry::unix_now(),
        refused: None,
    };
    // The proxy's new ports are bound first: a port that cannot be bound refuses the revision
    // before the kernel side changes.
    let prepared = match proxy.prepare(&snapshot.l7) {
        Ok(p) => p,
        Err(e) => {
            apply_failed(shared, revision, &e);
            return Pass::SourceRead;
        }
    };
    match dp.apply(&snapshot.l4) {
        Ok(stats) => {
            proxy.commit(prepared, &id);
            publish_counter_names(shared, dp);
            if let Err(e) = last_good::save(&config.state_dir, &docs) {
                warn!(revision = %id, error = %e, "could not save the last good revision in the state directory");
            }
            shared
                .metrics
                .applied(&source, &id, started.elapsed().as_secs_f64());
            if let Ok(mut s) = shared.status.write() {
                s.applied = Some(revision.clone());
                s.attempted = Some(revision);
                s.last_error = None;
                s.rules = snapshot.l4.rules.len();
                s.source_entries = snapshot.l4.source_entries();
                s.port_entries = snapshot.l4.port_entries();
                s.http_ports = proxy.ports();
                s.routes = snapshot.l7.policy.routes.len();
            }
            info!(
                revision = %id,
                policies = snapshot.policies.len(),
                rules = snapshot.l4.rules.len(),
                http_listeners = snapshot.l7.policy.listeners.len(),
                http_routes = snapshot.l7.policy.routes.len(),
                source_entries = snapshot.l4.source_entries(),
                port_entries = snapshot.l4.port_entries(),
                writes = stats.writes,
                fetch_ms = ms(fetch),
                read_ms = ms(read),
                compile_ms = ms(compile),
                to_enforced_ms = ms(stats.to_flip),
                "policy applied"
            );
        }
        Err(e) => apply_failed(shared, revision, &e),
    }
    Pass::SourceRead
}

/// Reports a revision that compiled but could not be applied (the proxy could not bind or load
/// its files, or the kernel refused an update): the previous revision stays enforced.
fn apply_failed(shared: &Shared, revision: RevisionStatus, error: &dyn std::fmt::Display) {
    warn!(revision = %revision.id, error = %error, "apply failed; the previous revision stays enforced");
    shared.metrics.failed("apply");
    if let Ok(mut s) = shared.status.write() {
        s.attempted = Some(RevisionStatus {
            refused: Some("apply".to_owned()),
            ..revision
        });
        s.last_error = Some(error.to_string());
    }
}

/// Milliseconds, to a tenth, for the logs.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_described_without_its_password_or_token() {
        let git = |url: &str, path: &str| SourceConfig::Git {
            url: url.to_owned(),
            reference: "main".to_owned(),
            path: path.to_owned(),
            options: GitOptions::default(),
        };
        assert_eq!(
            git("https://bot:hunter2@git.example.com/p.git?token=SECRET", "").describe(),
            "https://bot:***@git.example.com/p.git?***@main"
        );
        assert_eq!(
            git("https://git.example.com/p.git?private_token=SECRET", "edge").describe(),
            "https://git.example.com/p.git?***@main:edge"
        );
        assert_eq!(
            git("git@git.example.com:org/p.git", "").describe(),
            "git@git.example.com:org/p.git@main"
        );
    }

    #[test]
    fn retries_double_from_one_second_up_to_the_interval_and_reset_on_success() {
        let mut s = RetrySchedule::new(Duration::from_secs(30));
        assert_eq!(s.delay(), Duration::from_secs(30), "healthy: the interval");
        let mut delays = Vec::new();
        for _ in 0..8 {
            s.record(true);
            delays.push(s.delay().as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(s.failures(), 8);
        s.record(false);
        assert_eq!(s.failures(), 0);
        assert_eq!(s.delay(), Duration::from_secs(30));
        s.record(true);
        assert_eq!(
            s.delay(),
            Duration::from_secs(1),
            "a new outage starts over"
        );
    }

    #[test]
    fn short_intervals_are_never_stretched_and_long_outages_do_not_overflow() {
        let mut s = RetrySchedule::new(Duration::from_millis(500));
        s.record(true);
        assert_eq!(s.delay(), Duration::from_millis(500));
        let mut s = RetrySchedule::new(Duration::from_secs(3600));
        for _ in 0..100_000 {
            s.record(true);
        }
        assert_eq!(s.delay(), Duration::from_secs(3600));
        s.record(true);
        assert_eq!(s.failures(), 100_001);
    }
}
