//! The load of the L7 benchmarks (l7.rs, l7_latency.rs): h2load trials, the CPU time they
//! cost each process, and the rounds that interleave the gateways.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::median;
use crate::l7::{Gw, Proto, API_KEY, BASE, HOST};

/// CPU time (user + system) of `pid` and its direct children (nginx's workers).
pub(crate) fn tree_cpu(pid: u32) -> Duration {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the command name (which may hold spaces): state ppid ... utime(14) stime(15).
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid: u32 = f.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if p == pid || ppid == pid {
            let ut: u64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0);
            let st: u64 = f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
            total += ut + st;
        }
    }
    Duration::from_secs_f64(total as f64 / tick)
}

/// One h2load trial.
pub(crate) struct Trial {
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
    pub(crate) gateway_cpu: f64,
    pub(crate) generator_cpu: f64,
    pub(crate) backend_cpu: f64,
    pub(crate) secs: f64,
}

/// The connections (h2load's clients) of `proto`'s load.
pub(crate) fn clients(proto: Proto) -> u32 {
    match proto {
        Proto::Http1 | Proto::Tls1 => 64,
        Proto::H2 => 8,
    }
}

/// The path every trial requests (a route of every gateway's configuration).
const PATH: &str = "/api/orders";

/// Runs h2load against `port` for `secs` seconds (after a 1 s warm-up), requesting [`PATH`]: as
/// fast as it can, or at `rps` requests a second per connection when given (h2load's `--rps`).
pub(crate) fn h2load(
    proto: Proto,
    port: u16,
    secs: u64,
    pids: &[u32],
    backend: u32,
    rps: Option<u32>,
) -> Trial {
    let log = format!("{BASE}/h2load-requests.tsv");
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new("h2load");
    cmd.args(["-t", "1", "-D", &secs.to_string(), "--warm-up-time", "1"])
        .args(["-H", &format!("x-api-key: {API_KEY}")])
        .args(["--log-file", &log]);
    if let Some(rps) = rps {
        cmd.arg(format!("--rps={rps}"));
    }
    let clients = clients(proto).to_string();
    let url = match proto {
        Proto::Http1 => {
            cmd.args(["--h1", "-c", &clients]);
            format!("http://{HOST}:{port}{PATH}")
        }
        Proto::Tls1 => {
            cmd.args(["--h1", "-c", &clients]);
            format!("https://{HOST}:{port}{PATH}")
        }
        Proto::H2 => {
            cmd.args(["-c", &clients, "-m", "16"]);
            format!("https://{HOST}:{port}{PATH}")
        }
    };
    cmd.args(["--connect-to", &format!("127.0.0.1:{port}")])
        .arg(&url);
    let cpu0: Duration = pids.iter().map(|p| tree_cpu(*p)).sum();
    let bcpu0 = tree_cpu(backend);
    let started = Instant::now();
    // Reaped below with wait4 (for its CPU time), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("h2load (nghttp2-client)");
    let pid = child.id() as i32;
    // wait4 for the generator's own CPU time; then read its output.
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1: Duration = pids.iter().map(|p| tree_cpu(*p)).sum();
    let bcpu1 = tree_cpu(backend);
    let mut out = String::new();
    if let Some(mut s) = child.stdout {
        use std::io::Read;
        let _ = s.read_to_string(&mut out);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let generator_cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    // "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout"
    let counts = out
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("h2load output without a requests line:\n{out}"));
    let count = |label: &str| -> u64 {
        counts
            .split(',')
            .find(|p| p.trim().ends_with(label))
            .and_then(|p| p.split_whitespace().find_map(|w| w.parse().ok()))
            .unwrap_or(0)
    };
    let succeeded = count("succeeded");
    let failed = count("failed") + count("errored") + count("timeout");
    // "status codes: N 2xx, N 3xx, N 4xx, N 5xx"
    let non_2xx: u64 = out
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .map(|l| {
            l.split(',')
                .filter(|p| !p.contains("2xx"))
                .filter_map(|p| p.split_whitespace().find_map(|w| w.parse::<u64>().ok()))
                .sum()
        })
        .unwrap_or(0);
    let mut lat: Vec<f64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.get(1) == Some(&"200"))
                .then(|| f.get(2)?.parse::<f64>().ok())
                .flatten()
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let pct = |q: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)] / 1000.0
        }
    };
    Trial {
        rps: succeeded as f64 / secs as f64,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors: failed + non_2xx,
        gateway_cpu: (cpu1 - cpu0).as_secs_f64(),
        generator_cpu,
        backend_cpu: (bcpu1 - bcpu0).as_secs_f64(),
        secs: elapsed,
    }
}

pub(crate) fn stats(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    median(&mut v)
}

/// `trial(round, protocol, gateway, port)` for every protocol and gateway, `rounds` times, the
/// gateways interleaved and their order rotated each round, then `after_round(round)`:
/// `results[protocol][gateway]`.
pub(crate) fn interleaved(
    rounds: usize,
    protos: &[Proto; 3],
    gws: &[Gw; 3],
    mut trial: impl FnMut(usize, Proto, Gw, u16) -> Trial,
    mut after_round: impl FnMut(usize),
) -> Vec<Vec<Vec<Trial>>> {
    let mut results: Vec<Vec<Vec<Trial>>> = (0..protos.len())
        .map(|_| (0..gws.len()).map(|_| Vec::new()).collect())
        .collect();
    for round in 0..rounds {
        for (pi, proto) in protos.iter().enumerate() {
            for k in 0..gws.len() {
                let gi = (round + k) % gws.len();
                let gw = gws[gi];
                let port = if *proto == Proto::Http1 {
                    gw.http_port()
                } else {
                    gw.tls_port()
                };
                results[pi][gi].push(trial(round, *proto, gw, port));
            }
        }
        after_round(round);
    }
    results
}
