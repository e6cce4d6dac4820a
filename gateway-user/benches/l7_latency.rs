//! The L7 gateways at a fixed offered load (issue 13): half of nginx's throughput of each
//! protocol, measured in the same run by `l7.rs`. At saturation the latency of each gateway is
//! mostly its queue; at half load, with every gateway asked for the same requests per second,
//! what it adds to a request is what differs.
use std::fmt::Write as _;

use crate::l7::{Gw, Proto};
use crate::l7_load::{clients, h2load, interleaved, stats, Trial};

/// `rounds` rounds of `secs`-second trials, the gateways interleaved and their order rotated
/// each round; each protocol at half of `nginx_max` (its median requests/s), spread evenly
/// over the load's connections (h2load's `--rps` is per connection). Returns the section.
pub(crate) fn run(
    protos: &[Proto; 3],
    gws: &[Gw; 3],
    nginx_max: &[f64],
    pid_of: &dyn Fn(Gw) -> u32,
    backend: u32,
    rounds: usize,
    secs: u64,
) -> String {
    let per_connection: Vec<u32> = protos
        .iter()
        .zip(nginx_max)
        .map(|(p, max)| (max * 0.5 / f64::from(clients(*p))).round().max(1.0) as u32)
        .collect();
    let results = interleaved(
        rounds,
        protos,
        gws,
        |round, proto, gw, port| {
            let pi = protos
                .iter()
                .position(|p| *p == proto)
                .expect("one of protos");
            let rps = per_connection[pi];
            let t = h2load(proto, port, secs, &[pid_of(gw)], backend, Some(rps));
            eprintln!(
                "fixed load, round {round} {} {} at {} req/s: {:.0} req/s p50 {:.2} ms p99 {:.2} ms errors {} (gateway cpu {:.2}s)",
                proto.name(),
                gw.name(),
                rps * clients(proto),
                t.rps,
                t.p50_ms,
                t.p99_ms,
                t.errors,
                t.gateway_cpu
            );
            t
        },
        |_| {},
    );
    let mut md = String::from(
        "| protocol | offered requests/s | gateway | served requests/s (median) | p50 ms | p99 ms | p99 vs nginx | failed | gateway CPU µs/request |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (pi, proto) in protos.iter().enumerate() {
        let nginx_p99 = stats(&results[pi][1].iter().map(|t| t.p99_ms).collect::<Vec<_>>());
        for (gi, gw) in gws.iter().enumerate() {
            let ts = &results[pi][gi];
            let med = |f: &dyn Fn(&Trial) -> f64| stats(&ts.iter().map(f).collect::<Vec<_>>());
            let rps = med(&|t| t.rps);
            let p50 = med(&|t| t.p50_ms);
            let p99 = med(&|t| t.p99_ms);
            let us = med(&|t| t.gateway_cpu * 1e6 / (t.rps * secs as f64).max(1.0));
            let errors: u64 = ts.iter().map(|t| t.errors).sum();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {rps:.0} | {p50:.2} | {p99:.2} | {:.2}x | {errors} | {us:.0} |",
                proto.name(),
                per_connection[pi] * clients(*proto),
                gw.name(),
                p99 / nginx_p99,
            );
        }
    }
    let _ = write!(
        md,
        "\nOffered load: half of nginx's median requests/s of the same protocol in the throughput table above (same run), \
         as h2load `--rps` per connection over the same connections (HTTP/1.1: 64; HTTP/2: 8 x 16 streams). {rounds} rounds \
         of {secs} s trials after 1 s of warm-up, gateways interleaved and the order rotated each round; medians over rounds; \
         latency from h2load's per-request log. Target (issue 13): p99 no worse than nginx's (at most 1.0x).\n"
    );
    md
}
