//! The access log: one JSON line per request on standard output (`--access-log on`, the
//! default), every Nth request and every 5xx (`sample=N`), or none (`off`). Lines are tracing
//! events at target [`TARGET`]; `cli` routes that target to a JSON writer on stdout, apart from
//! the agent's own log (stderr), whatever `--log-format` and `TOLLGATE_LOG` say.
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The tracing target of access log events.
pub const TARGET: &str = "tollgate::access";

/// Which requests are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLog {
    /// None.
    Off,
    /// Every request.
    #[default]
    On,
    /// One request in N (counted per agent), and every response with a 5xx status.
    Sample(u64),
}

impl FromStr for AccessLog {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(AccessLog::Off),
            "on" => Ok(AccessLog::On),
            other => match other.strip_prefix("sample=").map(str::parse::<u64>) {
                Some(Ok(n)) if n >= 1 => Ok(AccessLog::Sample(n)),
                _ => Err(format!(
                    "{other:?}: expected off, on, or sample=N (N >= 1: one request in N, and every 5xx)"
                )),
            },
        }
    }
}

impl fmt::Display for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessLog::Off => f.write_str("off"),
            AccessLog::On => f.write_str("on"),
            AccessLog::Sample(n) => write!(f, "sample={n}"),
        }
    }
}

/// Decides, request by request, whether to log.
#[derive(Debug, Default)]
pub struct Sampler {
    mode: AccessLog,
    seen: AtomicU64,
}

impl Sampler {
    /// A sampler for `mode`.
    pub fn new(mode: AccessLog) -> Self {
        Sampler {
            mode,
            seen: AtomicU64::new(0),
        }
    }

    /// Should the request that got `status` be logged?
    pub fn should_log(&self, status: u16) -> bool {
        match self.mode {
            AccessLog::Off => false,
            AccessLog::On => true,
            AccessLog::Sample(n) => {
                let k = self.seen.fetch_add(1, Ordering::Relaxed);
                status >= 500 || k.is_multiple_of(n)
            }
        }
    }
}

/// One access log line.
#[derive(Debug)]
pub struct Entry<'a> {
    /// `namespace/name` or `none`.
    pub route: &'a str,
    /// Method as received.
    pub method: &'a str,
    /// Host as received (lower-case, without port).
    pub host: &'a str,
    /// Normalised path (the query string is left out: it may carry secrets).
    pub path: &'a str,
    /// Status code sent.
    pub status: u16,
    /// From arrival to the end of the response, in milliseconds.
    pub latency_ms: f64,
    /// The endpoint that answered (`host:port`), or `-`.
    pub upstream: &'a str,
    /// Response body bytes sent.
    pub bytes: u64,
    /// The client's address (see `forwarded`).
    pub client: &'a str,
    /// Why the proxy answered itself (`no_route`, `bad_path`, `misdirected`, `connect`,
    /// `timeout`, ...), or `-`.
    pub reason: &'a str,
    /// What the route's rate limits said: `-` (the route has none), `ok` (within every
    /// limit), `refused` (429), or `shadow` (over a limit of a policy in shadow mode, let
    /// through).
    pub ratelimit: &'a str,
    /// `namespace/name` of the RateLimitPolicy that refused (or would have refused) the
    /// request, or `-`.
    pub ratelimit_policy: &'a str,
    /// The consumer the route's AuthPolicy authenticated, or `-`.
    pub consumer: &'a str,
    /// The response body was cut short (client gone, or the request timeout hit mid-body).
    pub aborted: bool,
}

/// Emits the line.
pub fn emit(e: &Entry<'_>) {
    tracing::info!(
        target: TARGET,
        route = e.route,
        method = e.method,
        host = e.host,
        path = e.path,
        status = e.status,
        latency_ms = e.latency_ms,
        upstream = e.upstream,
        bytes = e.bytes,
        client = e.client,
        reason = e.reason,
        ratelimit = e.ratelimit,
        ratelimit_policy = e.ratelimit_policy,
        consumer = e.consumer,
        aborted = e.aborted,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_and_print_back() {
        for s in ["off", "on", "sample=10"] {
            assert_eq!(s.parse::<AccessLog>().unwrap().to_string(), s);
        }
        for bad in ["", "yes", "sample=0", "sample=x", "sample="] {
            assert!(bad.parse::<AccessLog>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sampling_logs_one_in_n_and_every_server_error() {
        let s = Sampler::new(AccessLog::Sample(4));
        let logged = (0..100).filter(|_| s.should_log(200)).count();
        assert_eq!(logged, 25);
        assert!((0..10).all(|_| s.should_log(502)));
        assert!(!Sampler::new(AccessLog::Off).should_log(500));
        assert!(Sampler::new(AccessLog::On).should_log(200));
    }
}
