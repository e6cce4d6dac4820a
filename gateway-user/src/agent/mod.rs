//! Wires the pipeline for `tollgate run`: source -> compile -> apply -> report.
//!
//! One task owns the data plane: it runs the [`controller::Controller`], which reads and
//! compiles revisions on a blocking thread; only a revision that compiled whole reaches
//! `apply`, and a refused one leaves the kernel as it was. The loop here only decides when a
//! pass runs (the schedule, the webhook, SIGHUP), checks for drift, puts the program back on
//! an interface that lost it (a link event from [`links`], or the drift check), and stops on
//! SIGTERM or SIGINT, even while a pass is running.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::telemetry::webhook::WebhookSecret;
use crate::telemetry::{self, Shared};
use tollgate_compile::l4::failsafe::Failsafe;
use tollgate_dataplane::{self as dataplane, AttachMode, Dataplane};
use tollgate_proxy::{Proxy, ProxyConfig};
use tollgate_source::git::GitOptions;
use tollgate_source::poll::{DirSource, GitPolicySource, PolicySource};
use tollgate_source::secret_files::SecretFiles;

pub mod controller;
pub mod links;
pub mod schedule;
pub mod state_dir;

pub use controller::Controller;
pub use schedule::RetrySchedule;

/// Settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Interfaces to enforce on.
    pub interfaces: Vec<String>,
    /// Failsafe endpoints given on the command line (`--failsafe`); in Kubernetes mode the
    /// API server's are added at start.
    pub failsafe: Vec<Failsafe>,
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
    /// The webhook's secret; `None`: `POST /hooks/git` answers 404.
    pub webhook_secret: Option<WebhookSecret>,
    /// The L7 proxy's settings.
    pub proxy: ProxyConfig,
    /// Where this node's `TollgateNode` status is written; `None`: it is not.
    pub node_status: Option<NodeStatusTarget>,
}

/// This node's `TollgateNode`: the API server, and the node's name (the object's).
#[derive(Debug, Clone)]
pub struct NodeStatusTarget {
    /// How the API server is reached.
    pub settings: tollgate_kubernetes::Settings,
    /// The node's name (`--node-name`), checked as an object name.
    pub node: String,
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
        /// Apply a ref that moved backwards or sideways instead of refusing it.
        allow_rewind: bool,
        /// Apply only commits signed by a key of this OpenSSH allowed_signers file (read again
        /// for every new commit, so keys can be rotated without a restart).
        verify_commits: Option<PathBuf>,
    },
    /// The Kubernetes API: the policy objects of the cluster.
    Kubernetes {
        /// How the API server is reached (checked at start).
        settings: tollgate_kubernetes::Settings,
        /// This node's name (the downward API's `spec.nodeName`), for per-node status.
        node_name: Option<String>,
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
            SourceConfig::Kubernetes { settings, .. } => {
                format!(
                    "kubernetes ({})",
                    tollgate_source::redacted(&settings.server())
                )
            }
        }
    }
}

/// Opens the configured source.
/// The failsafe endpoints of this run: `--failsafe` and, in Kubernetes mode, the address the
/// client connects to (when it is an IP literal), fixed for the run; and the ready endpoints of
/// the `default/kubernetes` Service as they are at start (where the replies come from when that
/// address is a DNATed ClusterIP), which the revisions' EndpointSlices replace as soon as one
/// carries them (see `Controller::set_failsafe`). They are handed to every compile next to the
/// interfaces: they describe this node, not the policy (see `compile_documents_for_node`). An
/// API server that cannot be asked leaves the others in force and is logged.
async fn failsafe_endpoints(config: &AgentConfig) -> (Vec<Failsafe>, Vec<Failsafe>) {
    let mut fixed = config.failsafe.clone();
    let mut at_start = Vec::new();
    if let SourceConfig::Kubernetes { settings, .. } = &config.source {
        if let Some(sa) = settings.server_endpoint() {
            fixed.push(Failsafe::new(
                sa.ip(),
                sa.port(),
                "the API server address the agent connects to",
            ));
        }
        match settings.client() {
            Ok(client) => match tollgate_kubernetes::failsafe::api_server_endpoints(client).await {
                Ok(endpoints) => at_start.extend(endpoints.into_iter().map(|sa| {
                    Failsafe::new(
                        sa.ip(),
                        sa.port(),
                        "EndpointSlice default/kubernetes (at start)",
                    )
                })),
                Err(error) => {
                    warn!(%error, "could not read the API server's endpoints: lock-out protection covers only the address the agent connects to and --failsafe until the EndpointSlices are listed")
                }
            },
            Err(error) => warn!(%error, "could not read the API server's endpoints"),
        }
    }
    (fixed, at_start)
}

fn open_source(config: &AgentConfig) -> anyhow::Result<Box<dyn PolicySource>> {
    // A directory's or Git's revision names files under --tls-secrets-dir that the operator
    // puts there: those that cannot be read leave out only what references them (the
    // Kubernetes source finds its own unresolved Secrets and ConfigMaps).
    let checked = |inner: Box<dyn PolicySource>| -> Box<dyn PolicySource> {
        Box::new(SecretFiles::new(inner, &config.proxy.tls_secrets_dir))
    };
    Ok(match &config.source {
        SourceConfig::Dir(dir) => checked(Box::new(DirSource::new(dir))),
        SourceConfig::Git {
            url,
            reference,
            path,
            options,
            allow_rewind,
            verify_commits,
        } => checked(Box::new(
            GitPolicySource::open(
                url,
                reference,
                path,
                options,
                &config.state_dir.join(state_dir::GIT_DIR),
                *allow_rewind,
                verify_commits.clone(),
            )
            .with_context(|| format!("open the Git source {}", config.source.describe()))?,
        )),
        SourceConfig::Kubernetes {
            settings,
            node_name,
        } => {
            info!(
                node = node_name.as_deref().unwrap_or("-"),
                server = %settings.server(),
                settings = settings.origin(),
                "policy from the Kubernetes API"
            );
            Box::new(
                tollgate_kubernetes::KubernetesSource::open_for_node(
                    settings,
                    Some(config.proxy.tls_secrets_dir.clone()),
                    node_name.clone(),
                )
                .with_context(|| {
                    format!("open the Kubernetes source {}", config.source.describe())
                })?,
            )
        }
    })
}

/// In Kubernetes mode, unless `--ratelimit-agents` says how many agents share cluster rate
/// limits: the cluster's Nodes, counted now and every minute (a metadata-only list, not a
/// watch: see `tollgate_kubernetes::nodes`). A count that fails leaves the last one in force.
fn count_nodes(config: &AgentConfig, backend: Arc<tollgate_proxy::cluster::Backend>) {
    let SourceConfig::Kubernetes { settings, .. } = &config.source else {
        return;
    };
    if !backend.counts_nodes() {
        return;
    }
    let client = match settings.client() {
        Ok(client) => client,
        Err(error) => {
            warn!(%error, "cluster rate limits: cannot count the cluster's Nodes; each agent's share assumes 1 agent (set --ratelimit-agents)");
            return;
        }
    };
    tokio::spawn(async move {
        let mut every = tokio::time::interval(tollgate_kubernetes::nodes::COUNT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            every.tick().await;
            let counted = tollgate_kubernetes::nodes::count(client.clone()).await;
            match &counted {
                Err(error) if !failing => {
                    warn!(%error, "cluster rate limits: could not count the cluster's Nodes; the last count stays in force");
                }
                Ok(_) if failing => {
                    info!("cluster rate limits: the cluster's Nodes are counted again")
                }
                _ => {}
            }
            failing = counted.is_err();
            if let Some(agents) = backend.set_node_count(counted) {
                info!(agents, "cluster rate limits: the agent count follows the cluster's Nodes (each agent's share while Redis cannot be reached is requests / agents)");
            }
        }
    });
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    // Signal handlers first: a SIGTERM that arrives while the first revision is applied must
    // stop the agent cleanly (pins kept), not kill it with the default action.
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // First what can stop the agent at once (one line, nothing else printed before it).
    if let Some(at) = dataplane::bpffs::ensure(&config.pin_dir)? {
        info!(mount_point = %at.display(), "mounted a bpffs for the pins (none was mounted there)");
    }
    // Before anything is written there: the state directory is the agent's user's alone.
    state_dir::private_umask();
    if let Err(error) = state_dir::tighten(&config.state_dir) {
        warn!(dir = %config.state_dir.display(), %error, "could not make the state directory private");
    }
    let mut dp = load_dataplane(&config.pin_dir, &config.state_dir).with_context(|| {
        format!(
            "load the eBPF programs (pins in {})",
            config.pin_dir.display()
        )
    })?;
    // From here on, freed memory goes back to the kernel within about two seconds even when
    // the threads that freed it are idle.
    crate::alloc::spawn_purger();
    if dp.adopted_state() {
        info!(pin_dir = %config.pin_dir.display(), generation = dp.active_gen(), "adopted the pinned maps: the last applied revision stays enforced");
    }
    let mut source = open_source(&config)?;
    let shared = Shared::with_webhook(config.pin_dir.clone(), config.webhook_secret.clone());
    // A source that learns of a change itself (a watch) wakes the loop at once; webhook calls
    // go through `shared.wake`, which coalesces them.
    let source_changed = std::sync::Arc::new(tokio::sync::Notify::new());
    let waker = source_changed.clone();
    source.set_waker(std::sync::Arc::new(move || waker.notify_one()));
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
    let _ = shared.ratelimit_backend.set(proxy.ratelimit_backend());
    count_nodes(&config, proxy.ratelimit_backend());
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
    // Subscribed before attaching, so that an interface created meanwhile is not missed.
    let link_changed = links::spawn().context("open the netlink socket for link events")?;
    dp.attach_all(&config.interfaces, config.attach_mode)
        .context("attach")?;
    for (iface, how) in dp.attached() {
        info!(interface = %iface, mode = how.as_str(), "enforcing on interface");
    }
    let mut controller = Controller::new(
        source,
        dp,
        proxy,
        shared.clone(),
        config.interfaces.clone(),
        config.state_dir.clone(),
        config.interval,
    );
    let (fixed, at_start) = failsafe_endpoints(&config).await;
    controller.set_failsafe(fixed, at_start);
    controller.publish_counter_names();
    controller.report_interfaces();

    // The first pass; when it gives nothing valid, the last good revision saved on the node.
    let first = pass(&mut controller, &link_changed, &mut term, &mut int).await;
    let Some(mut next_pass) = first else {
        return stop(controller, &config, ban_task, stop_bans).await;
    };
    if !controller.has_applied() {
        controller.enforce_last_good();
    }
    // Once the start is settled (the first pass, or the last good revision after a refused
    // one), so that a restart does not report the moment between the two; then off the loop:
    // the reporter and its writer never hold up a pass.
    let _node_status = match &config.node_status {
        Some(target) => Some(telemetry::node::spawn(
            shared.clone(),
            tollgate_kubernetes::NodeStatusWriter::start(
                &target.settings,
                &target.node,
                Arc::new(shared.metrics.kubernetes.clone()),
            )
            .context("start writing this node's TollgateNode status")?,
            config.proxy.address,
        )),
        None => None,
    };

    // Drift is checked every interval, whatever the source does.
    let mut drift = tokio::time::interval(config.interval);
    drift.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    drift.tick().await;
    let mut drift_check: Option<tokio::task::JoinHandle<Result<bool, dataplane::DataplaneError>>> =
        None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_pass.into()) => {}
            _ = source_changed.notified() => {}
            _ = shared.wake.due() => {
                let pass = pass(&mut controller, &link_changed, &mut term, &mut int).await;
                // The next webhook pass waits a gap from now (calls are coalesced).
                shared.wake.done();
                match pass {
                    Some(next) => next_pass = next,
                    None => break,
                }
                continue;
            }
            _ = hup.recv() => {
                info!("SIGHUP: reading the source now");
                controller.rescan();
            }
            _ = link_changed.notified() => {
                controller.reconcile_interfaces();
                continue;
            }
            _ = drift.tick() => {
                controller.reconcile_interfaces();
                // Reading every entry of both generations takes a while with a large policy:
                // it runs on a blocking thread, so that a webhook call or a pass is not held
                // up by it; only when it finds drift is the repair (which compares again) run.
                if drift_check.is_none() {
                    match controller.dataplane().drift_probe() {
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
                    Ok(Ok(true)) => controller.repair_drift(),
                    Ok(Err(e)) => warn!(error = %e, "could not check the kernel maps for drift"),
                    Err(e) => warn!(error = %e, "the drift check stopped"),
                }
                continue;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        // A pass may take long (a slow Git server, a huge revision): a signal stops the agent
        // without waiting for it; the kernel keeps enforcing the revision in force.
        match pass(&mut controller, &link_changed, &mut term, &mut int).await {
            Some(next) => next_pass = next,
            None => break,
        }
    }
    stop(controller, &config, ban_task, stop_bans).await
}

/// [`Dataplane::load`] on a thread of its own, then the memory it freed handed back to the
/// kernel at once. aya's loader parses the kernel's BTF (`/sys/kernel/btf/vmlinux`, for CO-RE
/// relocations) and drops it when the load ends: about 19 MB of heap, nearly all of the agent's
/// peak heap (docs/benchmarks-issue13.md, "Agent memory"). On a thread that ends with the load, those
/// allocations do not share pages with what the agent's own threads keep, so the pages are
/// freed whole, and [`crate::alloc::release_free_memory`] returns them now instead of after
/// the allocator's purge delay (which only runs when something allocates again).
fn load_dataplane(
    pin_dir: &std::path::Path,
    state_dir: &std::path::Path,
) -> Result<Dataplane, dataplane::DataplaneError> {
    let loaded = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("tollgate-load".into())
            .spawn_scoped(s, || Dataplane::load(pin_dir, state_dir))
            .map(|t| t.join())
    });
    let dp = match loaded {
        Ok(Ok(loaded)) => loaded,
        // A panic in the loader is the loader's, as if it had run here.
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        // No thread (out of threads or memory): on this one, as before.
        Err(error) => {
            warn!(%error, "could not start a thread for the eBPF load; loading on the agent's");
            Dataplane::load(pin_dir, state_dir)
        }
    };
    crate::alloc::release_free_memory();
    dp
}

/// One pass of the controller; `None` when SIGTERM or SIGINT came first. Link events are
/// handled meanwhile: an interface that comes back gets its program within milliseconds even
/// while a slow fetch or a large compile runs.
async fn pass(
    controller: &mut Controller,
    link_changed: &tokio::sync::Notify,
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> Option<std::time::Instant> {
    let mut pending = controller.begin_pass();
    loop {
        tokio::select! {
            read = &mut pending => {
                let next = controller.finish_pass(read);
                // A pass over a large revision frees hundreds of MB at once (the parsed and
                // compiled revision it replaced, the compile's intermediates): hand them back
                // now rather than when the idle agent next allocates.
                crate::alloc::release_free_memory();
                return Some(next);
            }
            _ = link_changed.notified() => controller.reconcile_interfaces(),
            _ = term.recv() => return None,
            _ = int.recv() => return None,
        }
    }
}

/// Drains the proxy, stops the ban task, and detaches when asked.
async fn stop(
    controller: Controller,
    config: &AgentConfig,
    ban_task: tokio::task::JoinHandle<()>,
    stop_bans: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let cut = controller
        .proxy()
        .drain(tollgate_proxy::DRAIN_TIMEOUT)
        .await;
    if cut > 0 {
        warn!(
            connections = cut,
            "stopping with HTTP connections still open after the drain timeout"
        );
    }
    stop_bans.cancel();
    let _ = ban_task.await;
    if config.detach_on_exit {
        drop(controller.into_dataplane());
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
            allow_rewind: false,
            verify_commits: None,
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
    fn the_kubernetes_source_is_described_by_its_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: c\n    cluster:\n      server: https://10.96.0.1:443\ncontexts:\n  - name: c\n    context:\n      cluster: c\n      user: u\ncurrent-context: c\nusers:\n  - name: u\n    user:\n      token: t0ken\n",
        )
        .unwrap();
        let source = SourceConfig::Kubernetes {
            settings: tollgate_kubernetes::Settings::resolve(&[path]).unwrap(),
            node_name: Some("node-a".into()),
        };
        assert_eq!(source.describe(), "kubernetes (https://10.96.0.1:443)");
        assert!(!format!("{source:?}").contains("t0ken"));
    }
}
