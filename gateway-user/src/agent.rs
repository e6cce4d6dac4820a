//! Wires the pipeline for `tollgate run`: source -> compile -> apply -> report.
//!
//! One task owns the data plane. Revisions are read and compiled off to the side; only a
//! revision that compiled whole reaches `apply`, and a refused one leaves the kernel as it was.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::compile::snapshot::{compile_documents, Snapshot};
use crate::dataplane::{self, AttachMode, Dataplane};
use crate::proxy::{Proxy, ProxyConfig};
use crate::source::dir::read_dir;
use crate::source::git::GitSource;
use crate::source::{last_good, Documents};
use crate::telemetry::{self, InterfaceStatus, RevisionStatus, Shared};
use std::sync::Arc;

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
    /// The L7 proxy's settings.
    pub proxy: ProxyConfig,
}

/// Where the policy comes from.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A directory of YAML files.
    Dir(PathBuf),
    /// A Git repository at a ref, under a path.
    Git {
        /// `file://` or `git://` URL.
        url: String,
        /// Branch, tag or commit.
        reference: String,
        /// Directory inside the repository ("" = all of it).
        path: String,
    },
}

impl SourceConfig {
    /// For logs and reports.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::Dir(p) => p.display().to_string(),
            SourceConfig::Git {
                url,
                reference,
                path,
            } if path.is_empty() => format!("{url}@{reference}"),
            SourceConfig::Git {
                url,
                reference,
                path,
            } => format!("{url}@{reference}:{path}"),
        }
    }
}

/// Why a revision was not loaded: `source` (could not be read) or `invalid` (refused by the
/// compiler); the label of `tollgate_policy_apply_failures_total`.
type LoadError = (&'static str, String);

/// Reads and compiles the source. Never touches the kernel. `Ok(None)`: the Git source's
/// commit is the one seen last time (its tree is not read again).
fn load_revision(
    config: &AgentConfig,
    git: Option<&GitSource>,
    shared: &Shared,
    last_seen: &Option<String>,
) -> Result<Option<(Documents, Snapshot)>, LoadError> {
    let docs = match (&config.source, git) {
        (SourceConfig::Dir(dir), _) => read_dir(dir).map_err(|e| ("source", e.to_string()))?,
        (SourceConfig::Git { .. }, None) => {
            return Err(("source", "the Git source is not open".to_owned()))
        }
        (SourceConfig::Git { .. }, Some(git)) => {
            // A fetch can take a while: tell the runtime, so the admin server keeps answering.
            let fetch_started = Instant::now();
            let fetched = tokio::task::block_in_place(|| git.fetch());
            shared
                .metrics
                .git_fetch_duration
                .observe(fetch_started.elapsed().as_secs_f64());
            let commit = fetched.map_err(|e| ("source", e.to_string()))?;
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
                    .map_err(|e| ("rewind", e.to_string()))?;
            }
            git.read(commit).map_err(|e| ("source", e.to_string()))?
        }
    };
    if docs.files.is_empty() {
        // Most likely a wrong path or an unmounted volume: applying it would silently remove
        // every rule. An operator who wants no filtering commits a policy without rules.
        return Err((
            "source",
            format!(
                "no policy files (*.yaml, *.yml) in {}; refusing a revision that would remove all policy",
                config.source.describe()
            ),
        ));
    }
    let snapshot = compile_documents(&docs, Some(&config.interfaces))
        .map_err(|e| ("invalid", e.to_string()))?;
    Ok(Some((docs, snapshot)))
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
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
        } => Some(
            GitSource::open(url, reference, path, &config.state_dir.join("git"))
                .with_context(|| format!("open the Git source {}", config.source.describe()))?,
        ),
        SourceConfig::Dir(_) => None,
    };
    let shared = Shared::new(config.pin_dir.clone());
    telemetry::admin::serve(config.admin, shared.clone())
        .await
        .with_context(|| format!("start the admin server on {} (--admin)", config.admin))?;
    info!(address = %config.admin, "admin server: /metrics /healthz /readyz /status");
    let proxy = Proxy::new(config.proxy.clone(), shared.metrics.http.clone());
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
    reconcile(
        &config,
        git.as_ref(),
        &mut dp,
        &proxy,
        &shared,
        &mut last_seen,
    );
    let nothing_applied = shared
        .status
        .read()
        .map(|s| s.applied.is_none())
        .unwrap_or(false);
    if nothing_applied {
        enforce_last_good(&config, &mut dp, &proxy, &shared);
    }

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(config.interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                reconcile(&config, git.as_ref(), &mut dp, &proxy, &shared, &mut last_seen);
                repair_drift(&mut dp, &shared);
            }
            _ = hup.recv() => {
                info!("SIGHUP: reading the source now");
                last_seen = None;
                reconcile(&config, git.as_ref(), &mut dp, &proxy, &shared, &mut last_seen);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let cut = proxy.drain(crate::proxy::DRAIN_TIMEOUT).await;
    if cut > 0 {
        warn!(
            connections = cut,
            "stopping with HTTP connections still open after the drain timeout"
        );
    }
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
        Ok(0) => {}
        Ok(corrected) => {
            shared.metrics.drift_corrections.inc_by(corrected as u64);
            warn!(revision = %revision, corrected, "drift corrected: kernel map entries were changed behind the agent's back and are put back");
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
) {
    let started = Instant::now();
    let source = config.source.describe();
    let (docs, snapshot) = match load_revision(config, git, shared, last_seen) {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err((reason, e)) => {
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
            status.attempted = None;
            *last_seen = Some(String::new());
            return;
        }
    };
    let id = snapshot.revision.id.clone();
    let applied_id = shared
        .status
        .read()
        .ok()
        .and_then(|s| s.applied.as_ref().map(|r| r.id.clone()));
    if last_seen.as_deref() == Some(id.as_str()) && applied_id.as_deref() == Some(id.as_str()) {
        return;
    }
    *last_seen = Some(id.clone());
    let revision = RevisionStatus {
        id: id.clone(),
        source: source.clone(),
        at_unix: telemetry::unix_now(),
    };
    let compiled = started.elapsed();
    // The proxy's new ports are bound first: a port that cannot be bound refuses the revision
    // before the kernel side changes.
    let prepared = match proxy.prepare(&snapshot.l7) {
        Ok(p) => p,
        Err(e) => {
            warn!(revision = %id, error = %e, "apply failed; the previous revision stays enforced");
            shared.metrics.failed("apply");
            if let Ok(mut s) = shared.status.write() {
                s.attempted = Some(revision);
                s.last_error = Some(e.to_string());
            }
            return;
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
                compile_ms = compiled.as_millis() as u64,
                to_enforced_ms = stats.to_flip.as_millis() as u64,
                "policy applied"
            );
        }
        Err(e) => {
            warn!(revision = %id, error = %e, "apply failed; the previous revision stays enforced");
            shared.metrics.failed("apply");
            if let Ok(mut s) = shared.status.write() {
                s.attempted = Some(revision);
                s.last_error = Some(e.to_string());
            }
        }
    }
}
