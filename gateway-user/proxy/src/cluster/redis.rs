//! The sync task of cluster limits: one Redis connection per agent, the lease script, the
//! health check, and reconnection with backoff.
//!
//! Settings: `redis://` or `rediss://` (TLS, rustls with ring; the system's roots, or a CA
//! file) `host:port/db`, a user name in the URL if the server has ACL users, and the password
//! from a file, never from the URL (a URL ends up in process listings and logs). Redis Cluster
//! and Sentinel addresses are refused at start: not built (see docs/l7-policies.md).
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    Backend, SyncRequest, BACKOFF_FIRST, BACKOFF_MAX, HEALTH_EVERY, MAX_PIPELINE, SWEEP_EVERY,
    SYNC_TIMEOUT,
};
use crate::metrics::ReasonLabel;

/// The lease script. KEYS[1]: the key's name without window; ARGV: requests per window, the
/// window in ms, tokens wanted, requests already admitted (charged whatever the window has
/// left). Returns the tokens granted, the window's count after it, and the ms left in the
/// window. The window is numbered by Redis' clock, so agents need not agree on the time
/// (scripts that read TIME and then write need Redis 5 or later: effects replication).
pub const LEASE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local per = tonumber(ARGV[2])
local key = KEYS[1] .. ':' .. math.floor(now / per)
local left = per - (now % per)
local limit = tonumber(ARGV[1])
local debt = tonumber(ARGV[4])
local used = tonumber(redis.call('GET', key) or '0')
local grant = math.max(0, math.min(tonumber(ARGV[3]), limit - used - debt))
if grant + debt > 0 then
  used = redis.call('INCRBY', key, grant + debt)
  redis.call('PEXPIRE', key, left + 1000)
end
return {grant, used, left}
"#;

/// Why the Redis settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Not a URL the client takes.
    #[error("--ratelimit-redis {url}: {why}")]
    Url {
        /// The URL (without a password).
        url: String,
        /// Why.
        why: String,
    },
    /// A file cannot be read.
    #[error("{flag} {}: {source}", path.display())]
    File {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A setting that needs `--ratelimit-redis`.
    #[error("{0} needs --ratelimit-redis")]
    NeedsRedis(&'static str),
}

/// Where the shared counters are, and how to log in.
#[derive(Clone)]
pub struct RedisSettings {
    client: Client,
    address: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl RedisSettings {
    /// Settings from `--ratelimit-redis URL`, `--ratelimit-redis-password-file` and
    /// `--ratelimit-redis-ca-file`, checked now (a bad one stops the agent at start).
    pub fn new(
        url: &str,
        password_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Result<RedisSettings, SettingsError> {
        let bad = |why: &str| SettingsError::Url {
            url: redacted(url),
            why: why.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let tls = match parsed.scheme() {
            "redis" | "valkey" => false,
            "rediss" | "valkeys" => true,
            "redis+sentinel" | "rediss+sentinel" => {
                return Err(bad("Sentinel addresses are not supported yet: give the current primary's redis:// address"))
            }
            "redis+cluster" | "rediss+cluster" => {
                return Err(bad("Redis Cluster is not supported yet: give one node's redis:// address of a standalone (or replicated) Redis"))
            }
            other => {
                return Err(bad(&format!(
                    "scheme \"{other}\": use redis:// or rediss:// (TLS)"
                )))
            }
        };
        if parsed.password().is_some() {
            return Err(bad(
                "has a password: put it in the file of --ratelimit-redis-password-file instead (a URL ends up in process listings and logs)",
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("no query or fragment is taken"));
        }
        // The client knows redis:// and rediss:// only: Valkey speaks the same protocol.
        let mut normalised = parsed.clone();
        let _ = normalised.set_scheme(if tls { "rediss" } else { "redis" });
        let mut info = normalised
            .as_str()
            .into_connection_info()
            .map_err(|e| bad(&e.to_string()))?;
        if let Some(path) = password_file {
            let password = std::fs::read_to_string(path).map_err(|source| SettingsError::File {
                flag: "--ratelimit-redis-password-file",
                path: path.to_owned(),
                source,
            })?;
            let password = password.trim_end_matches(['\r', '\n']);
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let client = match ca_file {
            Some(path) => {
                if !tls {
                    return Err(bad(
                        "--ratelimit-redis-ca-file is for TLS: use a rediss:// address",
                    ));
                }
                let pem = std::fs::read(path).map_err(|source| SettingsError::File {
                    flag: "--ratelimit-redis-ca-file",
                    path: path.to_owned(),
                    source,
                })?;
                install_crypto_provider();
                Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => {
                if tls {
                    install_crypto_provider();
                }
                Client::open(info)
            }
        }
        .map_err(|e| bad(&e.to_string()))?;
        let address = format!(
            "{}://{}:{}",
            if tls { "rediss" } else { "redis" },
            parsed.host_str().unwrap_or_default(),
            parsed.port().unwrap_or(6379)
        );
        Ok(RedisSettings { client, address })
    }

    /// `redis://host:port` (no credentials).
    pub fn address(&self) -> String {
        self.address.clone()
    }
}

/// `url` without its credentials, for messages: a password given by mistake in the URL must not
/// end up in the log that refuses it.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        // Unparsable: hide whatever stands between the scheme and the last '@'.
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(start), Some(end)) if end > start + 3 => {
                format!("{}***{}", &url[..start + 3], &url[end..])
            }
            _ => url.to_owned(),
        },
    }
}

/// rustls needs one process-wide crypto provider; the proxy uses ring everywhere.
fn install_crypto_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// Why a sync or health check failed (the `reason` label).
fn reason(e: &redis::RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connection_refusal() {
        "connect"
    } else if e.is_io_error() || e.is_connection_dropped() {
        "io"
    } else {
        "response"
    }
}

/// A connection with the lease script loaded.
struct Conn {
    con: MultiplexedConnection,
    sha: String,
}

async fn connect(settings: &RedisSettings) -> Result<Conn, (&'static str, String)> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SYNC_TIMEOUT))
        .set_response_timeout(Some(SYNC_TIMEOUT));
    let attempt = async {
        let mut con = settings
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(LEASE_SCRIPT)
            .query_async(&mut con)
            .await?;
        Ok::<_, redis::RedisError>(Conn { con, sha })
    };
    match tokio::time::timeout(SYNC_TIMEOUT * 2, attempt).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err((reason(&e), e.to_string())),
        Err(_) => Err(("timeout", format!("no answer within {SYNC_TIMEOUT:?}"))),
    }
}

/// The sync task: runs until the proxy (every sender of `rx`) is gone.
pub(crate) async fn run(
    backend: Arc<Backend>,
    settings: RedisSettings,
    mut rx: mpsc::Receiver<SyncRequest>,
) {
    let metrics = backend.metrics().clone();
    let error = |reason: &'static str| {
        metrics
            .sync_errors
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
            })
            .inc();
    };
    let mut conn: Option<Conn> = None;
    // The state last logged: a change is logged, not every retry (the first failure at start
    // is a change from "unknown").
    let mut logged: Option<bool> = None;
    let mut backoff = BACKOFF_FIRST;
    let mut next_connect = Instant::now();
    let mut last_sweep = Instant::now();
    // Limits seen recently, for the sweep of idle keys (weak: a revision drops its limits).
    let mut seen: Vec<std::sync::Weak<super::ClusterLimit>> = Vec::new();
    loop {
        if conn.is_none() && Instant::now() >= next_connect {
            match connect(&settings).await {
                Ok(c) => {
                    metrics.commands.inc();
                    conn = Some(c);
                    backoff = BACKOFF_FIRST;
                    backend.set_up(true, None);
                    if logged != Some(true) {
                        info!(redis = %settings.address, "cluster rate limits: Redis reachable, limits are shared");
                        logged = Some(true);
                    }
                }
                Err((why, message)) => {
                    error(why);
                    backend.set_up(false, Some(message.clone()));
                    if logged != Some(false) {
                        warn!(redis = %settings.address, error = %message, "cluster rate limits: Redis unreachable, limits fall back to onBackendFailure; reconnecting with backoff");
                        logged = Some(false);
                    }
                    next_connect = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        // Wait for work, a health check, or the next reconnection attempt.
        let wait = if conn.is_some() {
            HEALTH_EVERY
        } else {
            next_connect
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10))
        };
        let first = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(r)) => Some(r),
            Ok(None) => return,
            Err(_) => None,
        };
        let mut batch: Vec<SyncRequest> = first.into_iter().collect();
        while batch.len() < MAX_PIPELINE {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        for r in &batch {
            if !seen
                .iter()
                .any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&r.limit)))
            {
                seen.push(Arc::downgrade(&r.limit));
            }
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            seen.retain(|w| w.strong_count() > 0);
            for l in seen.iter().filter_map(|w| w.upgrade()) {
                l.sweep(l.now());
            }
            last_sweep = Instant::now();
        }
        let Some(c) = conn.as_mut() else {
            // Down: these keys follow onBackendFailure until Redis is back.
            for r in &batch {
                r.limit.failed(r.hash);
            }
            continue;
        };
        let started = Instant::now();
        let result = if batch.is_empty() {
            metrics.commands.inc();
            let ping_cmd = redis::cmd("PING");
            let ping = ping_cmd.query_async::<String>(&mut c.con);
            match tokio::time::timeout(SYNC_TIMEOUT, ping).await {
                Ok(Ok(_)) => Ok(Vec::new()),
                Ok(Err(e)) => Err((reason(&e), e.to_string())),
                Err(_) => Err(("timeout", format!("no answer within {SYNC_TIMEOUT:?}"))),
            }
        } else {
            sync(c, &batch, &metrics).await
        };
        match result {
            Ok(answers) => {
                metrics.round_trip.observe(started.elapsed().as_secs_f64());
                for (i, (grant, used, left)) in answers {
                    let r = &batch[i];
                    let now = r.limit.now();
                    r.limit.apply(
                        r.hash,
                        now,
                        u32::try_from(grant.max(0)).unwrap_or(u32::MAX),
                        u64::try_from(used.max(0)).unwrap_or(0),
                        u64::try_from(left.max(0)).unwrap_or(0),
                    );
                }
            }
            Err((why, message)) => {
                error(why);
                for r in &batch {
                    r.limit.failed(r.hash);
                }
                conn = None;
                backend.set_up(false, Some(message.clone()));
                if logged != Some(false) {
                    warn!(redis = %settings.address, error = %message, "cluster rate limits: Redis failed, limits fall back to onBackendFailure; reconnecting with backoff");
                    logged = Some(false);
                }
                next_connect = Instant::now() + backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Answers of one pipeline: the index in the batch, tokens granted, the window's count, ms
/// left in the window.
type Answers = Vec<(usize, (i64, i64, i64))>;

/// One pipeline of lease scripts (keys forgotten since they were queued are left out).
async fn sync(
    c: &mut Conn,
    batch: &[SyncRequest],
    metrics: &super::ClusterMetrics,
) -> Result<Answers, (&'static str, String)> {
    let mut pipe = redis::pipe();
    let mut sent = Vec::with_capacity(batch.len());
    for (i, r) in batch.iter().enumerate() {
        let now = r.limit.now();
        let Some((key, want, debt)) = r.limit.take_sync(r.hash, now) else {
            continue;
        };
        let def = r.limit.def();
        pipe.cmd("EVALSHA")
            .arg(&c.sha)
            .arg(1)
            .arg(key.as_ref())
            .arg(def.requests)
            .arg(r.limit.per_ms)
            .arg(want)
            .arg(debt);
        sent.push(i);
    }
    if sent.is_empty() {
        return Ok(Vec::new());
    }
    metrics.commands.inc_by(sent.len() as u64);
    match tokio::time::timeout(
        SYNC_TIMEOUT,
        pipe.query_async::<Vec<(i64, i64, i64)>>(&mut c.con),
    )
    .await
    {
        Ok(Ok(v)) => Ok(sent.into_iter().zip(v).collect()),
        Ok(Err(e)) => Err((reason(&e), e.to_string())),
        Err(_) => Err(("timeout", format!("no answer within {SYNC_TIMEOUT:?}"))),
    }
}
