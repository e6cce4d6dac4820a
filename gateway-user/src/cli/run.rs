//! `tollgate run`: the agent's command line.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, DEFAULT_STATE_DIR};
use crate::agent::{self, AgentConfig, SourceConfig};
use crate::dataplane::{AttachMode, DEFAULT_PIN_DIR};
use crate::proxy::access_log::AccessLog;
use crate::proxy::ProxyConfig;

/// Arguments of `tollgate run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Interface to enforce on (repeat for several).
    #[arg(long = "interface", required = true, value_name = "IFACE")]
    pub interfaces: Vec<String>,
    /// Policy source: a directory of YAML files, or a Git repository URL (file://, git://).
    /// Given twice, the last one counts.
    #[arg(long, env = "TOLLGATE_SOURCE", overrides_with = "source")]
    pub source: String,
    /// Git source: the branch, tag or commit to enforce.
    #[arg(long = "ref", default_value = "main", env = "TOLLGATE_REF")]
    pub reference: String,
    /// Git source: the directory of the repository that holds the policies ("" = all of it).
    #[arg(long, default_value = "", env = "TOLLGATE_PATH")]
    pub path: String,
    /// Where the agent keeps its state (rule ids, last good revision).
    #[arg(long, default_value = DEFAULT_STATE_DIR, env = "TOLLGATE_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Where programs, links and maps are pinned (on a bpffs).
    #[arg(long, default_value = DEFAULT_PIN_DIR, env = "TOLLGATE_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// How to attach: XDP driver mode, falling back to generic XDP, then TC (auto), or one only.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub attach_mode: AttachMode,
    /// How often the source is read again (SIGHUP reads it at once).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Remove programs, links and maps when the agent stops (default: leave them enforcing).
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Git source: apply a ref that moved backwards or sideways (a force-push to an older or
    /// unrelated commit) instead of refusing it.
    #[arg(long)]
    pub allow_ref_rewind: bool,
    /// Admin HTTP server address: /metrics, /healthz, /readyz, /status.
    #[arg(long, default_value = crate::telemetry::admin::DEFAULT_ADMIN_ADDR, env = "TOLLGATE_ADMIN")]
    pub admin: std::net::SocketAddr,
    /// Address the L7 proxy listens on, on every Gateway listener port.
    #[arg(long, default_value = crate::proxy::DEFAULT_GATEWAY_ADDRESS, env = "TOLLGATE_GATEWAY_ADDRESS")]
    pub gateway_address: std::net::IpAddr,
    /// A proxy in front of Tollgate (a load balancer, a CDN) whose X-Forwarded-For is believed:
    /// a CIDR or an address (repeat for several). Requests from other peers are attributed to
    /// the peer, and their X-Forwarded-For is replaced.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_cidr)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Access log, one JSON line per request on stdout: on, off, or sample=N (one request in
    /// N, and every 5xx).
    #[arg(long, default_value = "on", env = "TOLLGATE_ACCESS_LOG")]
    pub access_log: AccessLog,
}

/// A CIDR, or a bare address (one host).
fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not a CIDR (10.0.0.0/8, 2001:db8::/32) or an address"))
}

/// Runs the agent until SIGTERM/SIGINT.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let config = AgentConfig {
        interfaces: args.interfaces,
        source: if crate::source::git::is_git_url(&args.source) {
            SourceConfig::Git {
                url: args.source,
                reference: args.reference,
                path: args.path,
            }
        } else {
            SourceConfig::Dir(PathBuf::from(args.source))
        },
        state_dir: args.state_dir,
        pin_dir: args.pin_dir,
        attach_mode: args.attach_mode,
        interval: args.interval,
        detach_on_exit: args.detach_on_exit,
        admin: args.admin,
        allow_ref_rewind: args.allow_ref_rewind,
        proxy: ProxyConfig {
            address: args.gateway_address,
            trusted_proxies: args.trusted_proxies,
            access_log: args.access_log,
            limits: Default::default(),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(agent::run(config))?;
    Ok(0)
}
