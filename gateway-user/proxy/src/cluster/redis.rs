//! The sync task of cluster limits: one Redis connection per agent, the lease script, the
//! health check, and reconnection with backoff.
//!
//! The connection depends on the topology ([`super::settings`]): one multiplexed connection to
//! a primary (given, or named by the Sentinels on every reconnection), or a Redis Cluster
//! connection that routes each script by its key's slot. On a Redis Cluster, a primary that
//! does not answer takes only its slots into fallback ([`super::slots`]).
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
};
use redis::{AsyncConnectionConfig, Client, ErrorKind, ServerErrorKind, Value};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::settings::{RedisSettings, Topology};
use super::slots::{slot_of, NodeCheck};
use super::{
    Backend, SyncRequest, BACKOFF_FIRST, BACKOFF_MAX, HEALTH_EVERY, MAX_PIPELINE, ROUND_GAP,
    SWEEP_EVERY, SYNC_TIMEOUT,
};
use crate::metrics::ReasonLabel;

/// The lease script. KEYS[1]: the key's name without window; ARGV: requests per window, the
/// window in ms, tokens wanted, requests already admitted (charged whatever the window has
/// left). Returns the tokens granted, the window's count after it, the ms left in the window
/// and the window's number (how the agent tells a new window from a late answer). The window is numbered by Redis' clock, so agents need not agree on the time
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
return {grant, used, left, math.floor(now / per)}
"#;

/// The lease script for many keys at once: [`LEASE_SCRIPT`] for each of KEYS, ARGV holding the
/// four arguments of each key in turn; returns the four numbers of each key in turn. One
/// command per sync round instead of one per key: a round of cold keys (each wanting one token
/// and paying its first request) costs Redis one command to parse and one script call. Only
/// where the keys may be anywhere: a standalone or Sentinel-named primary (a Redis Cluster
/// refuses keys of several slots in one script, CROSSSLOT).
pub const LEASE_MANY_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, name in ipairs(KEYS) do
  local a = (i - 1) * 4
  local limit = tonumber(ARGV[a + 1])
  local per = tonumber(ARGV[a + 2])
  local want = tonumber(ARGV[a + 3])
  local debt = tonumber(ARGV[a + 4])
  local key = name .. ':' .. math.floor(now / per)
  local left = per - (now % per)
  local used = tonumber(redis.call('GET', key) or '0')
  local grant = math.max(0, math.min(want, limit - used - debt))
  if grant + debt > 0 then
    used = redis.call('INCRBY', key, grant + debt)
    redis.call('PEXPIRE', key, left + 1000)
  end
  out[#out + 1] = grant
  out[#out + 1] = used
  out[#out + 1] = left
  out[#out + 1] = math.floor(now / per)
end
return out
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

/// A connection with the lease script loaded (on one primary: [`LEASE_MANY_SCRIPT`]; on a Redis
/// Cluster: [`LEASE_SCRIPT`]).
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
    let load_many = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(LEASE_MANY_SCRIPT)
        .clone();
    // One primary: a multiplexed connection, and the script of many keys loaded on it.
    let primary = |client: Client| {
        let (config, load) = (&config, &load_many);
        async move {
            let mut con = client
                .get_multiplexed_async_connection_with_config(config)
                .await?;
            let sha: String = load.query_async(&mut con).await?;
            Ok::<_, redis::RedisError>(Conn {
                link: Link::Single(con),
                sha,
            })
        }
    };
    let attempt = async {
        let conn = match &settings.topology {
            Topology::Single(client) => primary(client.as_ref().clone()).await?,
            // Asked on every connection: after a failover the Sentinels name the new primary
            // (a demoted one refuses the script's writes, which fails a sync and brings us
            // here).
            Topology::Sentinel(sentinel) => {
                primary(sentinel.lock().await.async_get_client().await?).await?
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
    /// The health check: PING; on a Redis Cluster, each primary is checked
    /// ([`check_cluster`]) and the backend is down only if none answers.
    async fn health(
        &mut self,
        backend: &Backend,
        address: &str,
        metrics: &super::ClusterMetrics,
    ) -> Result<(), Failure> {
        match &mut self.link {
            Link::Single(con) => {
                metrics.commands.inc();
                let ping = redis::cmd("PING");
                match tokio::time::timeout(SYNC_TIMEOUT, ping.query_async::<Value>(con)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(failure(&e)),
                    Err(_) => Err(timed_out()),
                }
            }
            Link::Cluster(con) => check_cluster(backend, con, address, metrics).await,
        }
    }
}

/// The primaries of a Redis Cluster and their slots, from a `CLUSTER SLOTS` answer (RESP2:
/// `[[start, end, [host, port, id, ...], replicas...], ...]`; a primary may serve several
/// ranges).
fn primaries(answer: &Value) -> Option<Vec<NodeCheck>> {
    let Value::Array(ranges) = answer else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let mut nodes: Vec<NodeCheck> = Vec::new();
    for r in ranges {
        let Value::Array(r) = r else { return None };
        let (start, end) = (int(r.first()?)?, int(r.get(1)?)?);
        let Value::Array(primary) = r.get(2)? else {
            return None;
        };
        let node = format!("{}:{}", text(primary.first()?)?, int(primary.get(1)?)?);
        let range = (u16::try_from(start).ok()?, u16::try_from(end).ok()?);
        match nodes.iter_mut().find(|n| n.node == node) {
            Some(n) => n.ranges.push(range),
            None => nodes.push(NodeCheck {
                node,
                ranges: vec![range],
                error: None,
            }),
        }
    }
    Some(nodes)
}

/// Checks every primary of a Redis Cluster: `CLUSTER SLOTS` from whichever primary answers
/// first (after a failover it names the new primaries), then a PING to each primary over the
/// client's connection to it. Returns each primary with its slots and its error, if any.
async fn check_nodes(
    con: &ClusterConnection,
    metrics: &super::ClusterMetrics,
) -> Result<Vec<NodeCheck>, Failure> {
    let mut c = con.clone();
    let any = RoutingInfo::MultiNode((
        MultipleNodeRoutingInfo::AllMasters,
        Some(ResponsePolicy::OneSucceeded),
    ));
    metrics.commands.inc();
    let answer = match tokio::time::timeout(
        SYNC_TIMEOUT,
        c.route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), any),
    )
    .await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return Err(failure(&e)),
        Err(_) => return Err(timed_out()),
    };
    let mut nodes = primaries(&answer).ok_or_else(|| {
        (
            "response",
            format!("CLUSTER SLOTS: an answer of an unknown shape: {answer:?}"),
        )
    })?;
    metrics.commands.inc_by(nodes.len() as u64);
    let pings = nodes.iter().map(|n| {
        let mut c = con.clone();
        // By address, not by slot: the client sends a command for a slot whose primary it has
        // no connection to to another node (which would answer), and repairs the lost
        // connection itself, in the background.
        let (host, port) = n.node.rsplit_once(':').unwrap_or((&n.node, "0"));
        let to = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port: port.parse().unwrap_or(0),
        });
        async move {
            match tokio::time::timeout(SYNC_TIMEOUT, c.route_command(redis::cmd("PING"), to)).await
            {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(timed_out().1),
            }
        }
    });
    let errors = futures_util::future::join_all(pings).await;
    for (n, error) in nodes.iter_mut().zip(errors) {
        n.error = error;
    }
    Ok(nodes)
}

/// [`check_nodes`], and its outcome applied: the slots of the primaries that do not answer fall
/// back, the others are shared. An error: no primary answers (the whole backend is down).
async fn check_cluster(
    backend: &Backend,
    con: &ClusterConnection,
    address: &str,
    metrics: &super::ClusterMetrics,
) -> Result<(), Failure> {
    let checks = check_nodes(con, metrics).await?;
    if checks.is_empty() {
        return Err(("response", "CLUSTER SLOTS: no slot is served".to_owned()));
    }
    if let Some(e) = checks
        .iter()
        .map(|c| c.error.as_ref())
        .collect::<Option<Vec<_>>>()
    {
        // No primary answers.
        return Err(("connect", e[0].clone()));
    }
    let changes = backend.set_nodes(&checks);
    for node in &changes.went_down {
        let error = checks
            .iter()
            .find(|c| &c.node == node)
            .and_then(|c| c.error.clone())
            .unwrap_or_default();
        warn!(redis = %address, node = %node, error = %error, "cluster rate limits: a Redis Cluster primary is unreachable; the keys of its slots fall back to onBackendFailure, the others stay shared");
    }
    for node in &changes.came_back {
        info!(redis = %address, node = %node, "cluster rate limits: a Redis Cluster primary answers again; the keys of its slots are shared again");
    }
    Ok(())
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
    // The last check of a Redis Cluster's primaries.
    let mut last_check = Instant::now();
    // When the last round of syncs started (rounds are at least ROUND_GAP apart).
    let mut last_round = Instant::now();
    // Limits seen recently, for the sweep of idle keys (weak: a revision drops its limits).
    let mut seen: Vec<std::sync::Weak<super::ClusterLimit>> = Vec::new();
    loop {
        if conn.is_none() && Instant::now() >= next_connect {
            let connected = match connect(&settings).await {
                Ok(mut c) => {
                    metrics.commands.inc();
                    // A Redis Cluster client connects with a primary down: find it now, before
                    // its keys' syncs fail.
                    last_check = Instant::now();
                    match c.link {
                        Link::Cluster(_) => c
                            .health(&backend, &settings.address(), &metrics)
                            .await
                            .map(|()| c),
                        Link::Single(_) => Ok(c),
                    }
                }
                Err(e) => Err(e),
            };
            match connected {
                Ok(c) => {
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
        let drain = |batch: &mut Vec<SyncRequest>, rx: &mut mpsc::Receiver<SyncRequest>| {
            while batch.len() < MAX_PIPELINE {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
        };
        drain(&mut batch, &mut rx);
        if !batch.is_empty() && batch.len() < MAX_PIPELINE && conn.is_some() {
            // Let the keys of the next few moments join this round.
            let next = last_round + ROUND_GAP;
            if next > Instant::now() {
                tokio::time::sleep_until(next.into()).await;
                drain(&mut batch, &mut rx);
            }
        }
        if !batch.is_empty() {
            last_round = Instant::now();
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
        let address = settings.address();
        let (answers, mut failed, failed_slots) = if batch.is_empty() {
            last_check = Instant::now();
            (
                Vec::new(),
                c.health(&backend, &address, &metrics).await.err(),
                Vec::new(),
            )
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
        for (i, (grant, used, left, window)) in answers {
            let r = &batch[i];
            answered[i] = true;
            let now = r.limit.now();
            r.limit.apply(
                r.hash,
                now,
                u32::try_from(grant.max(0)).unwrap_or(u32::MAX),
                u64::try_from(used.max(0)).unwrap_or(0),
                u64::try_from(left.max(0)).unwrap_or(0),
                u64::try_from(window.max(0)).unwrap_or(0),
            );
        }
        for (r, _) in batch.iter().zip(&answered).filter(|(_, a)| !**a) {
            r.limit.failed(r.hash);
        }
        // A Redis Cluster: after scripts failed, and while a primary is down, which primaries
        // answer? If every failed key is on one that does not, only those slots fall back.
        if matches!(c.link, Link::Cluster(_))
            && !batch.is_empty()
            && (failed.is_some()
                || (backend.slots.any_down() && last_check.elapsed() >= HEALTH_EVERY))
        {
            last_check = Instant::now();
            match c.health(&backend, &address, &metrics).await {
                Ok(()) => {
                    if failed_slots.iter().all(|&s| !backend.slots.is_up(s)) {
                        if let Some((why, _)) = failed.take() {
                            error(why);
                        }
                    }
                }
                Err(e) => {
                    if let Some((why, _)) = failed.replace(e) {
                        error(why);
                    }
                }
            }
        }
        if let Some((why, message)) = failed {
            error(why);
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
/// Per key of a round (its index in the batch): grant, used, ms left, window number.
type Answers = Vec<(usize, (i64, i64, i64, i64))>;

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
/// answers, the first failure if any key's script failed, and the slots of the keys whose
/// script failed (on a Redis Cluster).
async fn sync(
    c: &mut Conn,
    batch: &[SyncRequest],
    metrics: &super::ClusterMetrics,
) -> (Answers, Option<Failure>, Vec<u16>) {
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
        return (Vec::new(), None, Vec::new());
    }
    match &mut c.link {
        Link::Single(con) => {
            // One script for the whole batch: one command, one round trip.
            metrics.commands.inc();
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(&c.sha).arg(args.len());
            for a in &args {
                cmd.arg(a.key.as_ref());
            }
            for a in &args {
                cmd.arg(a.requests).arg(a.per_ms).arg(a.want).arg(a.debt);
            }
            match tokio::time::timeout(SYNC_TIMEOUT, cmd.query_async::<Vec<i64>>(con)).await {
                Ok(Ok(v)) if v.len() == 4 * args.len() => (
                    sent.into_iter()
                        .zip(v.chunks_exact(4).map(|a| (a[0], a[1], a[2], a[3])))
                        .collect(),
                    None,
                    Vec::new(),
                ),
                Ok(Ok(v)) => (
                    Vec::new(),
                    Some((
                        "response",
                        format!(
                            "the lease script answered {} numbers for {} keys",
                            v.len(),
                            args.len()
                        ),
                    )),
                    Vec::new(),
                ),
                Ok(Err(e)) => (Vec::new(), Some(failure(&e)), Vec::new()),
                Err(_) => (Vec::new(), Some(timed_out()), Vec::new()),
            }
        }
        Link::Cluster(con) => {
            metrics.commands.inc_by(sent.len() as u64);
            sync_cluster(con, &c.sha, &args, &sent, metrics).await
        }
    }
}

/// A round on a Redis Cluster. The keys of one script hash to one slot (the hash tag of
/// [`super::ClusterLimit`]'s key names), but the keys of a batch spread over every slot, and a
/// pipeline must stay within one: the scripts are sent all at once instead, each routed by its
/// key's slot over the client's one multiplexed connection per primary, so a round still costs
/// about one round trip per primary. A primary that lost the script (promoted since the
/// connection was made) answers NOSCRIPT: that key is sent again as EVAL, which caches it there.
/// Each script has its own timeout, so a primary that does not answer costs the answers of its
/// keys only.
async fn sync_cluster(
    con: &ClusterConnection,
    sha: &str,
    args: &[LeaseArgs],
    sent: &[usize],
    metrics: &super::ClusterMetrics,
) -> (Answers, Option<Failure>, Vec<u16>) {
    let one = |a: &LeaseArgs| {
        let mut con = con.clone();
        let by_sha = lease_cmd(sha, true, a);
        let by_text = lease_cmd(LEASE_SCRIPT, false, a);
        let script = async move {
            match by_sha.query_async::<(i64, i64, i64, i64)>(&mut con).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    metrics.commands.inc();
                    by_text.query_async::<(i64, i64, i64, i64)>(&mut con).await
                }
                r => r,
            }
        };
        async move {
            match tokio::time::timeout(SYNC_TIMEOUT, script).await {
                Ok(Ok(a)) => Ok(a),
                Ok(Err(e)) => Err(failure(&e)),
                Err(_) => Err(timed_out()),
            }
        }
    };
    let results = futures_util::future::join_all(args.iter().map(one)).await;
    let mut answers = Vec::with_capacity(results.len());
    let mut first_error = None;
    let mut failed_slots = Vec::new();
    for ((&i, a), r) in sent.iter().zip(args).zip(results) {
        match r {
            Ok(answer) => answers.push((i, answer)),
            Err(e) => {
                failed_slots.push(slot_of(&a.key));
                first_error.get_or_insert(e);
            }
        }
    }
    (answers, first_error, failed_slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn cluster_slots_answers_give_each_primary_with_its_ranges() {
        // Three primaries, the first with two ranges, one with a replica.
        let node =
            |port: i64, id: &str| Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk(id)]);
        let answer = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(5000), node(7000, "a")]),
            Value::Array(vec![
                Value::Int(5001),
                Value::Int(10922),
                node(7001, "b"),
                node(7004, "b-replica"),
            ]),
            Value::Array(vec![Value::Int(10923), Value::Int(16383), node(7002, "c")]),
            Value::Array(vec![
                Value::Int(5001 - 1),
                Value::Int(5000),
                node(7000, "a"),
            ]),
        ]);
        let nodes = primaries(&answer).unwrap();
        assert_eq!(
            nodes
                .iter()
                .map(|n| (n.node.as_str(), n.ranges.clone()))
                .collect::<Vec<_>>(),
            [
                ("127.0.0.1:7000", vec![(0, 5000), (5000, 5000)]),
                ("127.0.0.1:7001", vec![(5001, 10922)]),
                ("127.0.0.1:7002", vec![(10923, 16383)]),
            ]
        );
        assert!(nodes.iter().all(|n| n.error.is_none()));
        // Anything else is refused, not guessed at.
        assert!(primaries(&Value::Nil).is_none());
        assert!(primaries(&Value::Array(vec![Value::Array(vec![Value::Int(0)])])).is_none());
        assert!(primaries(&Value::Array(vec![Value::Array(vec![
            Value::Int(-1),
            Value::Int(5),
            node(1, "x")
        ])]))
        .is_none());
        assert_eq!(primaries(&Value::Array(vec![])).unwrap(), []);
    }
}
