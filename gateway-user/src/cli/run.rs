//! `tollgate run`: the agent's command line.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, parse_size, DEFAULT_STATE_DIR};
use crate::agent::{self, AgentConfig, SourceConfig};
use crate::telemetry::webhook::WebhookSecret;
use tollgate_dataplane::{AttachMode, DEFAULT_PIN_DIR};
use tollgate_proxy::access_log::AccessLog;
use tollgate_proxy::ProxyConfig;
use tollgate_source::git::GitOptions;
use tollgate_source::verify::AllowedSigners;

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
    /// Lock-out protection: an endpoint (ADDR:PORT) whose TCP replies pass whatever the L4
    /// policy says, e.g. the API server this node talks to (repeat for several). In
    /// Kubernetes mode the API server's endpoints are added by themselves.
    #[arg(long = "failsafe", value_name = "ADDR:PORT")]
    pub failsafe: Vec<tollgate_compile::l4::failsafe::Failsafe>,
    /// Policy source: a directory of YAML files, a Git repository (file://, git://, https://,
    /// http://, ssh://user@host[:port]/path or user@host:path), or `kubernetes` (the policy
    /// objects of the cluster, through its API server; a directory of that name is written
    /// `./kubernetes`). Given twice, the last one counts.
    #[arg(long, env = "TOLLGATE_SOURCE", overrides_with = "source")]
    pub source: String,
    /// Kubernetes source: the kubeconfig file(s) to reach the API server with (a list
    /// separated by `:` as in KUBECONFIG; the first file that sets a value wins). Without it,
    /// the pod's in-cluster settings (its ServiceAccount).
    #[arg(long, value_name = "PATH", env = "KUBECONFIG")]
    pub kubeconfig: Option<std::ffi::OsString>,
    /// Kubernetes source: the name of this node (from the downward API, `spec.nodeName`), for
    /// per-node status.
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
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
    #[arg(long, default_value = "auto", value_parser = attach_mode_parser())]
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
    #[arg(long, default_value = tollgate_proxy::DEFAULT_GATEWAY_ADDRESS, env = "TOLLGATE_GATEWAY_ADDRESS")]
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
    #[arg(long, value_name = "DIR", default_value = tollgate_proxy::tls::DEFAULT_TLS_SECRETS_DIR, env = "TOLLGATE_TLS_SECRETS_DIR")]
    pub tls_secrets_dir: PathBuf,
    /// Limits of the L7 proxy.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Where RateLimitPolicies with `scope: Cluster` keep their counters.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// The `--ratelimit-*` flags: the shared counters of `scope: Cluster` rate limits.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// The Redis (or Valkey) of cluster-wide rate limits: redis://HOST[:PORT][/DB] (one
    /// primary), redis+cluster://HOST[:PORT],HOST[:PORT],... (seed nodes of a Redis Cluster) or
    /// redis+sentinel://HOST[:PORT],.../PRIMARY[/DB] (Sentinels, port 26379 by default, and the
    /// primary's name); rediss (rediss+cluster, rediss+sentinel) for TLS. A user name may precede
    /// the hosts if the server has ACL users (`redis://tollgate@host`); the password goes in
    /// --ratelimit-redis-password-file. Without it, cluster limits follow their onBackendFailure
    /// on each node.
    #[arg(long, value_name = "URL", env = "TOLLGATE_RATELIMIT_REDIS")]
    pub ratelimit_redis: Option<String>,
    /// File holding the password of --ratelimit-redis (read at start; trailing newlines are
    /// ignored).
    #[arg(
        long,
        value_name = "PATH",
        env = "TOLLGATE_RATELIMIT_REDIS_PASSWORD_FILE"
    )]
    pub ratelimit_redis_password_file: Option<PathBuf>,
    /// PEM file of the CA certificates trusted for a rediss:// --ratelimit-redis (default: the
    /// system's roots).
    #[arg(long, value_name = "PATH", env = "TOLLGATE_RATELIMIT_REDIS_CA_FILE")]
    pub ratelimit_redis_ca_file: Option<PathBuf>,
    /// Agents that share cluster limits: while Redis cannot be reached, a limit with
    /// onBackendFailure: local allows each agent `requests / N`.
    /// Without it: in Kubernetes mode the cluster's Nodes, counted every minute (a
    /// metadata-only list), else 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000), env = "TOLLGATE_RATELIMIT_AGENTS")]
    pub ratelimit_agents: Option<u32>,
}

impl ClusterArgs {
    /// The proxy's settings; a bad URL or unreadable file is an error.
    pub fn settings(
        &self,
    ) -> Result<tollgate_proxy::cluster::ClusterSettings, tollgate_proxy::cluster::SettingsError>
    {
        use tollgate_proxy::cluster::{AgentsFrom, ClusterSettings, RedisSettings, SettingsError};
        let redis = match &self.ratelimit_redis {
            Some(url) => Some(RedisSettings::new(
                url,
                self.ratelimit_redis_password_file.as_deref(),
                self.ratelimit_redis_ca_file.as_deref(),
            )?),
            None if self.ratelimit_redis_password_file.is_some() => {
                return Err(SettingsError::NeedsRedis("--ratelimit-redis-password-file"))
            }
            None if self.ratelimit_redis_ca_file.is_some() => {
                return Err(SettingsError::NeedsRedis("--ratelimit-redis-ca-file"))
            }
            None => None,
        };
        Ok(ClusterSettings {
            redis,
            agents: self.ratelimit_agents.unwrap_or(1),
            agents_from: if self.ratelimit_agents.is_some() {
                AgentsFrom::Flag
            } else {
                AgentsFrom::Default
            },
        })
    }
}

/// The proxy's limits (`--max-request-body`, `--header-read-timeout`, ...). The defaults are
/// the constants of `proxy` (`proxy::MAX_REQUEST_BODY`, ...); a unit test keeps them equal.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// L7: the largest request body of a route without a BackendTrafficPolicy
    /// `requestBody.maxSize` (413 over it).
    #[arg(long, value_name = "BYTES", default_value = "10MiB", value_parser = parse_size, env = "TOLLGATE_MAX_REQUEST_BODY")]
    pub max_request_body: u64,
    /// L7: the largest request head (request line and headers; HTTP/2: header list size).
    #[arg(long, value_name = "BYTES", default_value = "64KiB", value_parser = parse_size, env = "TOLLGATE_MAX_HEADER_BYTES")]
    pub max_header_bytes: u64,
    /// L7: the most headers of an HTTP/1.1 request (431 over it).
    #[arg(long, value_name = "N", default_value_t = tollgate_proxy::MAX_HEADERS, env = "TOLLGATE_MAX_HEADERS")]
    pub max_headers: usize,
    /// L7: time a client has to send a complete request head (slowloris), also the longest an
    /// HTTP/1.1 keep-alive connection waits for its next request.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration, env = "TOLLGATE_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Duration,
    /// L7: a client connection with no request in flight and no bytes moving for this long is
    /// closed (slow bodies included).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration, env = "TOLLGATE_IDLE_TIMEOUT")]
    pub idle_timeout: Duration,
    /// L7: open client connections over all listeners; over it, new connections wait in the
    /// kernel's backlog until one closes.
    #[arg(long, value_name = "N", default_value_t = tollgate_proxy::MAX_CONNECTIONS, env = "TOLLGATE_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// L7: memory all client connections together may hold in request heads not yet complete;
    /// a read over it closes that connection (slow-header floods).
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_size, env = "TOLLGATE_MAX_HEAD_MEMORY")]
    pub max_head_memory: u64,
    /// L7: memory the requests in flight together may hold for their heads (each charged twice
    /// its head and 16 KiB, until its response begins); a request over it is answered 503.
    #[arg(long, value_name = "BYTES", default_value = "128MiB", value_parser = parse_size, env = "TOLLGATE_MAX_IN_FLIGHT_MEMORY")]
    pub max_in_flight_memory: u64,
    /// L7: concurrent streams per HTTP/2 connection.
    #[arg(long, value_name = "N", default_value_t = tollgate_proxy::H2_MAX_CONCURRENT_STREAMS, env = "TOLLGATE_H2_MAX_CONCURRENT_STREAMS")]
    pub h2_max_concurrent_streams: u32,
    /// L7: HTTP/2 streams a client may reset before the proxy has accepted them, at once,
    /// before the connection is closed with GOAWAY (rapid reset, CVE-2023-44487).
    #[arg(long, value_name = "N", default_value_t = tollgate_proxy::H2_MAX_PENDING_RESET_STREAMS, env = "TOLLGATE_H2_MAX_PENDING_RESETS")]
    pub h2_max_pending_resets: usize,
    /// L7: request-body bytes an HTTP/2 client may send ahead of what the proxy has passed on
    /// (the flow-control window of each stream and of the connection): the most one
    /// connection's unread bodies hold. 65,535 (HTTP/2's initial window) to 2^31-1.
    #[arg(long, value_name = "BYTES", default_value_t = tollgate_proxy::H2_RECEIVE_WINDOW, value_parser = clap::value_parser!(u32).range(65_535..=2_147_483_647), env = "TOLLGATE_H2_RECEIVE_WINDOW")]
    pub h2_receive_window: u32,
}

impl LimitArgs {
    /// The proxy's limits: these flags over the defaults.
    pub fn limits(&self) -> tollgate_proxy::Limits {
        tollgate_proxy::Limits {
            max_request_body: self.max_request_body,
            max_header_bytes: usize::try_from(self.max_header_bytes).unwrap_or(usize::MAX),
            max_headers: self.max_headers,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections.max(1),
            head_budget: usize::try_from(self.max_head_memory).unwrap_or(usize::MAX),
            in_flight_budget: usize::try_from(self.max_in_flight_memory).unwrap_or(usize::MAX),
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            h2_max_pending_reset_streams: self.h2_max_pending_resets,
            h2_receive_window: self.h2_receive_window,
            ..Default::default()
        }
    }
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
    /// Git source: the most bytes the policy files of one revision may hold together, checked
    /// from the objects' sizes before any is read (one file may hold 16 MiB; the default is
    /// `source::git::DEFAULT_MAX_POLICY_SIZE`).
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_size, env = "TOLLGATE_GIT_MAX_POLICY_SIZE")]
    pub git_max_policy_size: u64,
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
            max_policy_size: self.git_max_policy_size,
        }
    }
}

/// A CIDR, or a bare address (one host), read by the same parser as policies' CIDRs.
fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    tollgate_model::net::parse_cidr(s)
}

/// `--source kubernetes`: the policy objects of the cluster.
pub const KUBERNETES_SOURCE: &str = "kubernetes";

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
    let kubernetes = args.source == KUBERNETES_SOURCE;
    let git = !kubernetes && tollgate_source::git::is_git_url(&args.source);
    let kube_paths: Vec<PathBuf> = args
        .kubeconfig
        .as_deref()
        .map(|list| {
            std::env::split_paths(list)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let kube_settings = if kubernetes {
        tollgate_kubernetes::Settings::resolve(&kube_paths)
            .map_err(|e| problems.push(format!("--source kubernetes: {e}")))
            .ok()
    } else {
        None
    };
    let node_status = node_status_target(
        &args.node_name,
        kube_settings.as_ref(),
        &kube_paths,
        &mut problems,
    );
    if let Some(file) = &args.verify_commits {
        if !git {
            let what = if kubernetes {
                "the Kubernetes API"
            } else {
                "a directory"
            };
            problems.push(format!(
                "--verify-commits {} needs a Git source; {} is {what}",
                file.display(),
                args.source
            ));
        } else if let Err(e) = AllowedSigners::load(file) {
            problems.push(e.to_string());
        }
    }
    let cluster = args
        .cluster
        .settings()
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("\n"));
    }
    let config = AgentConfig {
        interfaces: args.interfaces,
        failsafe: args.failsafe,
        source: if let Some(settings) = kube_settings {
            SourceConfig::Kubernetes {
                settings,
                node_name: args.node_name,
            }
        } else if git {
            SourceConfig::Git {
                url: args.source,
                reference: args.reference,
                path: args.path,
                options: git_options,
                allow_rewind: args.allow_ref_rewind,
                verify_commits: args.verify_commits,
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
        webhook_secret,
        proxy: ProxyConfig {
            address: args.gateway_address,
            trusted_proxies: args.trusted_proxies,
            never_ban: args.never_ban,
            access_log: args.access_log,
            limits: args.limits.limits(),
            tls_secrets_dir: args.tls_secrets_dir,
            cluster: cluster.unwrap_or_default(),
        },
        node_status,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(agent::run(config));
    // A pass still running on a blocking thread (a slow fetch, a huge revision) is not waited
    // for: the kernel keeps enforcing what is applied, and SIGTERM must stop the agent now.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    result?;
    Ok(0)
}

/// Where this node's `TollgateNode` is written, if anywhere: with `--node-name`, on the API
/// server of the Kubernetes source; with a directory or Git source, on the API server of
/// `--kubeconfig` (or `KUBECONFIG`), or the in-cluster one when the agent runs in a pod
/// (`KUBERNETES_SERVICE_HOST` is set). Without `--node-name` nothing is written: the object is
/// named like the node, and no other name would be right.
fn node_status_target(
    node_name: &Option<String>,
    source_settings: Option<&tollgate_kubernetes::Settings>,
    kube_paths: &[PathBuf],
    problems: &mut Vec<String>,
) -> Option<agent::NodeStatusTarget> {
    let Some(node) = node_name else {
        if source_settings.is_some() {
            tracing::warn!(
                "no --node-name (NODE_NAME): this node's TollgateNode status is not written"
            );
        }
        return None;
    };
    if let Err(e) = tollgate_kubernetes::report::check_node_name(node) {
        problems.push(e.to_string());
        return None;
    }
    let settings = match source_settings {
        Some(s) => s.clone(),
        None if !kube_paths.is_empty() || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
            match tollgate_kubernetes::Settings::resolve(kube_paths) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("--node-name {node} (the TollgateNode status): {e}"));
                    return None;
                }
            }
        }
        None => {
            tracing::info!(node = %node, "no Kubernetes API settings (--kubeconfig, or a pod's): this node's TollgateNode status is not written");
            return None;
        }
    };
    Some(agent::NodeStatusTarget {
        settings,
        node: node.clone(),
    })
}

/// `--attach-mode`: the dataplane's modes, with clap's list of possible values in help and
/// errors (the dataplane crate does not depend on clap).
fn attach_mode_parser() -> impl clap::builder::TypedValueParser<Value = AttachMode> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(AttachMode::NAMES).map(|name| {
        name.parse::<AttachMode>()
            .expect("PossibleValuesParser lets only the listed names through")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    #[test]
    fn redis_settings_are_checked_at_start_and_passwords_stay_off_the_command_line() {
        let settings = |args: &[&str]| {
            let mut argv = vec!["x"];
            argv.extend_from_slice(args);
            Cli::try_parse_from(argv)
                .map_err(|e| e.to_string())?
                .cluster
                .settings()
                .map_err(|e| e.to_string())
        };
        let none = settings(&[]).unwrap();
        assert!(none.redis.is_none());
        assert_eq!(none.agents, 1);
        let ok = settings(&[
            "--ratelimit-redis",
            "redis://127.0.0.1:6390/2",
            "--ratelimit-agents",
            "3",
        ])
        .unwrap();
        assert_eq!(
            ok.redis.unwrap().address(),
            "redis://127.0.0.1:6390".to_owned()
        );
        assert_eq!(ok.agents, 3);
        let cluster = settings(&[
            "--ratelimit-redis",
            "redis+cluster://10.0.0.1:7000,10.0.0.2",
        ])
        .unwrap()
        .redis
        .unwrap();
        assert_eq!(
            (cluster.kind(), cluster.address()),
            (
                "cluster",
                "redis+cluster://10.0.0.1:7000,10.0.0.2:6379".to_owned()
            )
        );
        let sentinel = settings(&["--ratelimit-redis", "redis+sentinel://s1,s2:26380/main"])
            .unwrap()
            .redis
            .unwrap();
        assert_eq!(
            (sentinel.kind(), sentinel.address()),
            (
                "sentinel",
                "redis+sentinel://s1:26379,s2:26380/main".to_owned()
            )
        );
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let pw = pw.to_str().unwrap();
        assert!(settings(&[
            "--ratelimit-redis",
            "rediss://tollgate@redis.internal",
            "--ratelimit-redis-password-file",
            pw
        ])
        .is_ok());
        for (args, says) in [
            (
                &["--ratelimit-redis", "redis://:s3cret@127.0.0.1"][..],
                "--ratelimit-redis-password-file instead",
            ),
            (
                &["--ratelimit-redis", "http://127.0.0.1"][..],
                "scheme \"http\"",
            ),
            (
                &["--ratelimit-redis", "redis+sentinel://127.0.0.1:26379"][..],
                "no primary name",
            ),
            (
                &["--ratelimit-redis", "redis+cluster://a:1,,b:2"][..],
                "host 2 (\"\"): empty",
            ),
            (
                &[
                    "--ratelimit-redis",
                    "redis://127.0.0.1",
                    "--ratelimit-redis-ca-file",
                    pw,
                ][..],
                "use a rediss:// address",
            ),
            (
                &["--ratelimit-redis-password-file", pw][..],
                "needs --ratelimit-redis",
            ),
            (
                &[
                    "--ratelimit-redis",
                    "redis://127.0.0.1",
                    "--ratelimit-redis-password-file",
                    "/nonexistent/pw",
                ][..],
                "--ratelimit-redis-password-file /nonexistent/pw",
            ),
            (&["--ratelimit-agents", "0"][..], "0 is not in 1..=100000"),
            (
                &["--ratelimit-redis", "redis://u:s3cret@[bad"][..],
                "redis://u:***@[bad",
            ),
        ] {
            let e = settings(args).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
    }

    #[test]
    fn limit_flag_defaults_are_the_proxy_defaults() {
        let cli = Cli::parse_from(["x"]);
        let l = cli.limits.limits();
        let d = tollgate_proxy::Limits::default();
        assert_eq!(l.max_request_body, d.max_request_body);
        assert_eq!(l.max_header_bytes, d.max_header_bytes);
        assert_eq!(l.max_headers, d.max_headers);
        assert_eq!(l.header_read_timeout, d.header_read_timeout);
        assert_eq!(l.idle_timeout, d.idle_timeout);
        assert_eq!(l.max_connections, d.max_connections);
        assert_eq!(l.head_budget, d.head_budget);
        assert_eq!(l.in_flight_budget, d.in_flight_budget);
        assert_eq!(l.h2_max_concurrent_streams, d.h2_max_concurrent_streams);
        assert_eq!(
            l.h2_max_pending_reset_streams,
            d.h2_max_pending_reset_streams
        );
        assert_eq!(l.h2_receive_window, d.h2_receive_window);
        // HTTP/2's connection window cannot start under 65,535, nor any window pass 2^31-1.
        for bad in ["65534", "2147483648", "0"] {
            assert!(
                Cli::try_parse_from(["x", "--h2-receive-window", bad]).is_err(),
                "{bad}"
            );
        }
        let cli = Cli::parse_from(["x", "--h2-receive-window", "1048576"]);
        assert_eq!(cli.limits.limits().h2_receive_window, 1_048_576);
    }

    #[test]
    fn the_node_status_is_written_with_a_node_name_and_kubernetes_settings_only() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: c\n    cluster:\n      server: http://127.0.0.1:6443\ncontexts:\n  - name: c\n    context:\n      cluster: c\n      user: u\ncurrent-context: c\nusers:\n  - name: u\n    user:\n      token: t\n",
        )
        .unwrap();
        let paths = vec![kubeconfig];
        let source = tollgate_kubernetes::Settings::resolve(&paths).unwrap();
        let node = Some("node-a".to_owned());
        let mut problems = Vec::new();
        // The Kubernetes source: its settings, when the node is named.
        let target = node_status_target(&node, Some(&source), &paths, &mut problems).unwrap();
        assert_eq!(
            (target.node.as_str(), target.settings.server()),
            ("node-a", "http://127.0.0.1:6443".to_owned())
        );
        assert!(node_status_target(&None, Some(&source), &paths, &mut problems).is_none());
        // A directory or Git source with a kubeconfig and a node name.
        assert!(node_status_target(&node, None, &paths, &mut problems).is_some());
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            assert!(node_status_target(&node, None, &[], &mut problems).is_none());
        }
        assert!(problems.is_empty(), "{problems:?}");
        // A name no object can have is a bad setting, reported at start.
        assert!(
            node_status_target(&Some("Node_A".into()), Some(&source), &paths, &mut problems)
                .is_none()
        );
        assert!(
            problems[0].contains("--node-name \"Node_A\""),
            "{problems:?}"
        );
    }

    #[test]
    fn address_flags_are_read_as_strictly_as_policy_cidrs() {
        assert_eq!(parse_cidr("127.0.0.1").unwrap().to_string(), "127.0.0.1/32");
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        for (flag, says) in [
            (
                "010.0.0.0/8",
                "write it in decimal without leading zeros: 10.0.0.0/8",
            ),
            ("::ffff:10.0.0.0/104", "write 10.0.0.0/8"),
            // A typo must not silently widen a trust list to the whole network.
            ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
        ] {
            let e = parse_cidr(flag).unwrap_err();
            assert!(e.contains(says), "{flag}: {e}");
        }
    }
}
