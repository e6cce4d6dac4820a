//! The sync task of cluster limits: one Redis connection per agent, the lease script, the
//! health check, and reconnection with backoff.
//!
//! The connection depends on the topology ([`super::settings`]): one multiplexed connection to
//! a primary (given, or named by the Sentinels on every reconnection), or a Redis Cluster
//! connection that routes each script by its key's slot.
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, ErrorKind, ServerErrorKind};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::settings::{RedisSettings, Topology};
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

/// The connection of one topology.
enum Link {
    /// A primary (given, or named by the Sentinels when this connection was made).
    Single(MultiplexedConnection),
    /// A Redis Cluster: each command goes to the primary of its key's slot.
    Cluster(ClusterConnection),
}

/// A connection with the lease script loaded.
struct Conn {
    link: Link,
    sha: String,
}

/// A failed round: the `reason` label and the message.
type Failure = (&'static str, String);

fn failure(e: &redis::RedisError) -> Failure {
    (reason(e), e.to_string())
}

fn timed_out() -> Failure {
    ("timeout", format!("no answer within {SYNC_TIMEOUT:?}"))
}

async fn connect(settings: &RedisSettings) -> Result<Conn, Failure> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SYNC_TIMEOUT))
        .set_response_timeout(Some(SYNC_TIMEOUT));
    let load = redis::cmd("SCRIPT").arg("LOAD").arg(LEASE_SCRIPT).clone();
    let attempt = async {
        let conn = match &settings.topology {
            Topology::Single(client) => {
                let mut con = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let sha: String = load.query_async(&mut con).await?;
                Conn {
                    link: Link::Single(con),
                    sha,
                }
            }
            Topology::Sentinel(sentinel) => {
                // Asked on every connection: after a failover the Sentinels name the new
                // primary (a demoted one refuses the script's writes, which fails a sync and
                // brings us here).
                let client = sentinel.lock().await.async_get_client().await?;
                let mut con = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let sha: String = load.query_async(&mut con).await?;
                Conn {
                    link: Link::Single(con),
                    sha,
                }
            }
            Topology::Cluster(client) => {
                let mut con = client.get_async_connection().await?;
                // SCRIPT LOAD goes to every primary; a primary promoted later may not have the
                // script, which the sync handles (NOSCRIPT: EVAL once there).
                let sha: String = load.query_async(&mut con).await?;
                Conn {
                    link: Link::Cluster(con),
                    sha,
                }
            }
        };
        Ok::<_, redis::RedisError>(conn)
    };
    match tokio::time::timeout(SYNC_TIMEOUT * 2, attempt).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(failure(&e)),
        Err(_) => Err(timed_out()),
    }
}

impl Conn {
    /// The health check: PING (on a Redis Cluster, every primary answers: the client sends it
    /// to each).
    async fn ping(&mut self) -> Result<(), Failure> {
        let ping = redis::cmd("PING");
        let answer = match &mut self.link {
            Link::Single(con) => {
                tokio::time::timeout(SYNC_TIMEOUT, ping.query_async::<redis::Value>(con)).await
            }
            Link::Cluster(con) => {
                tokio::time::timeout(SYNC_TIMEOUT, ping.query_async::<redis::Value>(con)).await
            }
        };
        match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(failure(&e)),
            Err(_) => Err(timed_out()),
        }
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
                    // The backoff is reset by the first round that succeeds, not by the
                    // connection: a Redis Cluster client connects with a primary down, and its
                    // first sync to that primary's slots fails again.
                    backend.set_up(true, None);
                    if logged != Some(true) {
                        info!(redis = %settings.address(), "cluster rate limits: Redis reachable, limits are shared");
                        logged = Some(true);
                    }
                }
                Err((why, message)) => {
                    error(why);
                    backend.set_up(false, Some(message.clone()));
                    if logged != Some(false) {
                        warn!(redis = %settings.address(), error = %message, "cluster rate limits: Redis unreachable, limits fall back to onBackendFailure; reconnecting with backoff");
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
        let (answers, failed) = if batch.is_empty() {
            metrics.commands.inc();
            (Vec::new(), c.ping().await.err())
        } else {
            sync(c, &batch, &metrics).await
        };
        if failed.is_none() {
            metrics.round_trip.observe(started.elapsed().as_secs_f64());
            backoff = BACKOFF_FIRST;
        }
        // What Redis granted is applied even if other keys of the round failed (on a Redis
        // Cluster, one node may fail alone): those tokens are counted in Redis.
        let mut answered = vec![false; batch.len()];
        for (i, (grant, used, left)) in answers {
            let r = &batch[i];
            answered[i] = true;
            let now = r.limit.now();
            r.limit.apply(
                r.hash,
                now,
                u32::try_from(grant.max(0)).unwrap_or(u32::MAX),
                u64::try_from(used.max(0)).unwrap_or(0),
                u64::try_from(left.max(0)).unwrap_or(0),
            );
        }
        if let Some((why, message)) = failed {
            error(why);
            for (r, _) in batch.iter().zip(&answered).filter(|(_, a)| !**a) {
                r.limit.failed(r.hash);
            }
            conn = None;
            backend.set_up(false, Some(message.clone()));
            if logged != Some(false) {
                warn!(redis = %settings.address(), error = %message, "cluster rate limits: Redis failed, limits fall back to onBackendFailure; reconnecting with backoff");
                logged = Some(false);
            }
            next_connect = Instant::now() + backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Answers of one round: the index in the batch, tokens granted, the window's count, ms left
/// in the window.
type Answers = Vec<(usize, (i64, i64, i64))>;

/// One lease script: `EVALSHA` of the loaded script, or `EVAL` of its text.
fn lease_cmd(script: &str, by_sha: bool, a: &LeaseArgs) -> redis::Cmd {
    let mut cmd = redis::cmd(if by_sha { "EVALSHA" } else { "EVAL" });
    cmd.arg(script)
        .arg(1)
        .arg(a.key.as_ref())
        .arg(a.requests)
        .arg(a.per_ms)
        .arg(a.want)
        .arg(a.debt);
    cmd
}

/// The arguments of one key's lease script.
struct LeaseArgs {
    key: Arc<str>,
    requests: u32,
    per_ms: u64,
    want: u32,
    debt: u32,
}

/// One round of lease scripts (keys forgotten since they were queued are left out): the
/// answers, and the first failure if any key's script failed.
async fn sync(
    c: &mut Conn,
    batch: &[SyncRequest],
    metrics: &super::ClusterMetrics,
) -> (Answers, Option<Failure>) {
    let mut args = Vec::with_capacity(batch.len());
    let mut sent = Vec::with_capacity(batch.len());
    for (i, r) in batch.iter().enumerate() {
        let now = r.limit.now();
        let Some((key, want, debt)) = r.limit.take_sync(r.hash, now) else {
            continue;
        };
        args.push(LeaseArgs {
            key,
            requests: r.limit.def().requests,
            per_ms: r.limit.per_ms,
            want,
            debt,
        });
        sent.push(i);
    }
    if sent.is_empty() {
        return (Vec::new(), None);
    }
    metrics.commands.inc_by(sent.len() as u64);
    match &mut c.link {
        Link::Single(con) => {
            // One pipeline: one round trip for the whole batch.
            let mut pipe = redis::pipe();
            for a in &args {
                pipe.add_command(lease_cmd(&c.sha, true, a));
            }
            match tokio::time::timeout(SYNC_TIMEOUT, pipe.query_async::<Vec<(i64, i64, i64)>>(con))
                .await
            {
                Ok(Ok(v)) => (sent.into_iter().zip(v).collect(), None),
                Ok(Err(e)) => (Vec::new(), Some(failure(&e))),
                Err(_) => (Vec::new(), Some(timed_out())),
            }
        }
        Link::Cluster(con) => sync_cluster(con, &c.sha, &args, &sent, metrics).await,
    }
}

/// A round on a Redis Cluster. The keys of one script hash to one slot (the hash tag of
/// [`super::ClusterLimit`]'s key names), but the keys of a batch spread over every slot, and a
/// pipeline must stay within one: the scripts are sent all at once instead, each routed by its
/// key's slot over the client's one multiplexed connection per primary, so a round still costs
/// about one round trip per primary. A primary that lost the script (promoted since the
/// connection was made) answers NOSCRIPT: that key is sent again as EVAL, which caches it there.
async fn sync_cluster(
    con: &ClusterConnection,
    sha: &str,
    args: &[LeaseArgs],
    sent: &[usize],
    metrics: &super::ClusterMetrics,
) -> (Answers, Option<Failure>) {
    let one = |a: &LeaseArgs| {
        let mut con = con.clone();
        let by_sha = lease_cmd(sha, true, a);
        let by_text = lease_cmd(LEASE_SCRIPT, false, a);
        async move {
            match by_sha.query_async::<(i64, i64, i64)>(&mut con).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    metrics.commands.inc();
                    by_text.query_async::<(i64, i64, i64)>(&mut con).await
                }
                r => r,
            }
        }
    };
    let round = futures_util::future::join_all(args.iter().map(one));
    let Ok(results) = tokio::time::timeout(SYNC_TIMEOUT, round).await else {
        return (Vec::new(), Some(timed_out()));
    };
    let mut answers = Vec::with_capacity(results.len());
    let mut first_error = None;
    for (&i, r) in sent.iter().zip(results) {
        match r {
            Ok(a) => answers.push((i, a)),
            Err(e) => {
                first_error.get_or_insert_with(|| failure(&e));
            }
        }
    }
    (answers, first_error)
}
