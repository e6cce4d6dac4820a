//! `tollgate run`: the agent's command line.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, parse_size, DEFAULT_STATE_DIR};
use crate::agent::{self, AgentConfig, SourceConfig};
use crate::dataplane::{AttachMode, DEFAULT_PIN_DIR};
use crate::proxy::access_log::AccessLog;
use crate::proxy::ProxyConfig;
use crate::source::git::GitOptions;
use crate::source::verify::AllowedSigners;
use crate::telemetry::webhook::WebhookSecret;

/// Arguments of `tollgate run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A YAML file of settings: the keys are these flags' long names (`interface: [eth0]`,
    /// `interval: 30s`, ...). Flags and environment variables win over it.
    #[arg(long, env = crate::cli::config::CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface to enforce on (repeat for several).
    #[arg(long = "interface", required = true, value_name = "IFACE")]
    pub interfaces: Vec<String>,
    /// Policy source: a directory of YAML files, or a Git repository: file://, git://,
    /// https://, http://, ssh://user@host[:port]/path or user@host:path. Given twice, the last
    /// one counts.
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
    /// How the Git source is reached (credentials, CA, ssh key and known_hosts, limits).
    #[command(flatten)]
    pub git: GitArgs,
    /// Admin HTTP server address: /metrics, /healthz, /readyz, /status, POST /hooks/git.
    #[arg(long, default_value = crate::telemetry::admin::DEFAULT_ADMIN_ADDR, env = "TOLLGATE_ADMIN")]
    pub admin: std::net::SocketAddr,
    /// Enables the webhook (POST /hooks/git on the admin server) with the shared secret in this
    /// file (its content, without a trailing newline). Read at start.
    #[arg(
        long,
        value_name = "PATH",
        env = "TOLLGATE_WEBHOOK_SECRET_FILE",
        conflicts_with = "webhook_secret_env"
    )]
    pub webhook_secret_file: Option<PathBuf>,
    /// Enables the webhook with the shared secret in this environment variable (its name, not
    /// the secret: secrets never go on the command line). Read at start.
    #[arg(long, value_name = "VAR")]
    pub webhook_secret_env: Option<String>,
    /// Git source: apply only commits signed (SSH signatures, git's gpg.format=ssh) by a key of
    /// this OpenSSH allowed_signers file; others are refused and the last good revision stays.
    #[arg(long, value_name = "ALLOWED_SIGNERS", env = "TOLLGATE_VERIFY_COMMITS")]
    pub verify_commits: Option<PathBuf>,
    /// Address the L7 proxy listens on, on every Gateway listener port.
    #[arg(long, default_value = crate::proxy::DEFAULT_GATEWAY_ADDRESS, env = "TOLLGATE_GATEWAY_ADDRESS")]
    pub gateway_address: std::net::IpAddr,
    /// A proxy in front of Tollgate (a load balancer, a CDN) whose X-Forwarded-For is believed:
    /// a CIDR or an address (repeat for several). Requests from other peers are attributed to
    /// the peer, and their X-Forwarded-For is replaced.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_cidr)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Addresses banOnAbuse never puts into the XDP blocklist: a CIDR or an address (repeat for
    /// several). Loopback addresses and --trusted-proxy CIDRs are never banned either.
    #[arg(long = "never-ban", value_name = "CIDR", value_parser = parse_cidr)]
    pub never_ban: Vec<ipnet::IpNet>,
    /// Access log, one JSON line per request on stdout: on, off, or sample=N (one request in
    /// N, and every 5xx).
    #[arg(long, default_value = "on", env = "TOLLGATE_ACCESS_LOG")]
    pub access_log: AccessLog,
    /// The secrets directory: certificates of HTTPS listeners and credentials of AuthPolicies.
    /// A certificateRef to Secret NAME in namespace NS is read from NS/NAME/tls.crt and
    /// NS/NAME/tls.key under it (the layout of a mounted kubernetes.io/tls Secret), a
    /// caCertificateRef to ConfigMap NAME (client certificates) from NS/NAME/ca.crt, an
    /// AuthPolicy credentialRef NAME from NS/NAME/keys (apiKey) or NS/NAME/htpasswd
    /// (basicAuth). Files are reloaded when they change.
    #[arg(long, value_name = "DIR", default_value = crate::proxy::tls::DEFAULT_TLS_SECRETS_DIR, env = "TOLLGATE_TLS_SECRETS_DIR")]
    pub tls_secrets_dir: PathBuf,
}

impl RunArgs {
    /// The Git source's settings from the `--git-*` flags.
    pub fn git_options(&self) -> GitOptions {
        self.git.options()
    }
}

/// The `--git-*` flags: how a Git repository is reached. `run` and `diff --repo` take them.
#[derive(Debug, Clone, Args)]
pub struct GitArgs {
    /// Git source: the user for http(s) and ssh (default: the URL's user, else `git`, what Git
    /// hosts expect with a token). Not a secret.
    #[arg(long, value_name = "NAME", env = "TOLLGATE_GIT_USERNAME")]
    pub git_username: Option<String>,
    /// Git source: file holding the http(s) password or token (read on every fetch; trailing
    /// newlines are ignored).
    #[arg(long, value_name = "PATH", env = "TOLLGATE_GIT_PASSWORD_FILE")]
    pub git_password_file: Option<PathBuf>,
    /// Git source: name of the environment variable holding the http(s) password or token.
    #[arg(long, value_name = "VAR", env = "TOLLGATE_GIT_PASSWORD_ENV")]
    pub git_password_env: Option<String>,
    /// Git source: PEM file of CA certificates trusted for https, besides the system's roots.
    #[arg(long, value_name = "PATH", env = "TOLLGATE_GIT_CA_FILE")]
    pub git_ca_file: Option<PathBuf>,
    /// Git source: private key for ssh (OpenSSH or PEM format).
    #[arg(long, value_name = "PATH", env = "TOLLGATE_GIT_SSH_KEY")]
    pub git_ssh_key: Option<PathBuf>,
    /// Git source: file holding the passphrase of an encrypted --git-ssh-key.
    #[arg(
        long,
        value_name = "PATH",
        env = "TOLLGATE_GIT_SSH_KEY_PASSPHRASE_FILE"
    )]
    pub git_ssh_key_passphrase_file: Option<PathBuf>,
    /// Git source: OpenSSH known_hosts file with the ssh server's host keys (required for ssh:
    /// an unknown or changed host key is refused, never trusted on first use).
    #[arg(long, value_name = "PATH", env = "TOLLGATE_GIT_KNOWN_HOSTS")]
    pub git_known_hosts: Option<PathBuf>,
    /// Git source: the longest one fetch may take, connecting included (the default is
    /// `source::git::DEFAULT_TIMEOUT`; a unit test keeps the two equal).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, env = "TOLLGATE_GIT_TIMEOUT")]
    pub git_timeout: Duration,
    /// Git source: the most bytes one fetch may receive (64MiB, 1GB, ...; the default is
    /// `source::git::DEFAULT_MAX_SIZE`).
    #[arg(long, value_name = "BYTES", default_value = "512MiB", value_parser = parse_size, env = "TOLLGATE_GIT_MAX_SIZE")]
    pub git_max_size: u64,
}

impl GitArgs {
    /// The Git source's settings.
    pub fn options(&self) -> GitOptions {
        GitOptions {
            username: self.git_username.clone(),
            password_file: self.git_password_file.clone(),
            password_env: self.git_password_env.clone(),
            ca_file: self.git_ca_file.clone(),
            ssh_key: self.git_ssh_key.clone(),
            ssh_key_passphrase_file: self.git_ssh_key_passphrase_file.clone(),
            known_hosts: self.git_known_hosts.clone(),
            timeout: self.git_timeout,
            max_size: self.git_max_size,
        }
    }
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
    let git_options = args.git_options();
    // Every bad setting at once, before anything is loaded or attached.
    let mut problems = Vec::new();
    let webhook_secret = match (&args.webhook_secret_file, &args.webhook_secret_env) {
        (Some(file), _) => WebhookSecret::from_file(file)
            .map_err(|e| problems.push(e.to_string()))
            .ok(),
        (None, Some(var)) => WebhookSecret::from_env(var)
            .map_err(|e| problems.push(e.to_string()))
            .ok(),
        (None, None) => None,
    };
    let git = crate::source::git::is_git_url(&args.source);
    if let Some(file) = &args.verify_commits {
        if !git {
            problems.push(format!(
                "--verify-commits {} needs a Git source; {} is a directory",
                file.display(),
                args.source
            ));
        } else if let Err(e) = AllowedSigners::load(file) {
            problems.push(e.to_string());
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("\n"));
    }
    let config = AgentConfig {
        interfaces: args.interfaces,
        source: if git {
            SourceConfig::Git {
                url: args.source,
                reference: args.reference,
                path: args.path,
                options: git_options,
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
        verify_commits: args.verify_commits,
        webhook_secret,
        proxy: ProxyConfig {
            address: args.gateway_address,
            trusted_proxies: args.trusted_proxies,
            never_ban: args.never_ban,
            access_log: args.access_log,
            limits: Default::default(),
            tls_secrets_dir: args.tls_secrets_dir,
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(agent::run(config))?;
    Ok(0)
}
