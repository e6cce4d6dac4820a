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
use crate::source::dir::read_dir;

/// Settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Interfaces to enforce on.
    pub interfaces: Vec<String>,
    /// Policy directory.
    pub source: PathBuf,
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
}

/// What happened to the last revision the agent looked at.
#[derive(Debug, Clone, Default)]
pub struct PipelineState {
    /// The revision in force.
    pub applied: Option<String>,
    /// The last revision read (applied or refused).
    pub attempted: Option<String>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// Reads and compiles the source. Never touches the kernel.
fn load_revision(config: &AgentConfig) -> Result<Snapshot, String> {
    let docs = read_dir(&config.source).map_err(|e| e.to_string())?;
    if docs.files.is_empty() {
        // Most likely a wrong path or an unmounted volume: applying it would silently remove
        // every rule. An operator who wants no filtering commits a policy without rules.
        return Err(format!(
            "no policy files (*.yaml, *.yml) under {}; refusing a revision that would remove all policy",
            config.source.display()
        ));
    }
    compile_documents(&docs, Some(&config.interfaces)).map_err(|e| e.to_string())
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
    dp.attach_all(&config.interfaces, config.attach_mode)
        .context("attach")?;
    for (iface, how) in dp.attached() {
        info!(interface = %iface, mode = how.as_str(), "enforcing on interface");
    }

    let mut state = PipelineState::default();
    let mut last_seen: Option<String> = None;
    reconcile(&config, &mut dp, &mut state, &mut last_seen);

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(config.interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => reconcile(&config, &mut dp, &mut state, &mut last_seen),
            _ = hup.recv() => {
                info!("SIGHUP: reading the source now");
                last_seen = None;
                reconcile(&config, &mut dp, &mut state, &mut last_seen);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
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

/// One pass of the loop: read, compile, and apply if the revision is new and valid.
fn reconcile(
    config: &AgentConfig,
    dp: &mut Dataplane,
    state: &mut PipelineState,
    last_seen: &mut Option<String>,
) {
    let started = Instant::now();
    let snapshot = match load_revision(config) {
        Ok(s) => s,
        Err(e) => {
            // Same broken revision as before: say it once.
            if state.last_error.as_deref() != Some(e.as_str()) || last_seen.is_none() {
                error!(source = %config.source.display(), applied = state.applied.as_deref().unwrap_or("none"), "revision refused; the last good revision stays enforced:\n{e}");
            }
            state.last_error = Some(e);
            state.attempted = None;
            *last_seen = Some(String::new());
            return;
        }
    };
    let id = snapshot.revision.id.clone();
    if last_seen.as_deref() == Some(id.as_str()) && state.applied.as_deref() == Some(id.as_str()) {
        return;
    }
    *last_seen = Some(id.clone());
    state.attempted = Some(id.clone());
    let compiled = started.elapsed();
    match dp.apply(&snapshot.l4) {
        Ok(stats) => {
            state.applied = Some(id.clone());
            state.last_error = None;
            info!(
                revision = %id,
                policies = snapshot.policies.len(),
                rules = snapshot.l4.rules.len(),
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
            state.last_error = Some(e.to_string());
        }
    }
}
