//! `tollgate counters`: per-rule counters from the pinned maps.
use std::path::Path;

use super::OutputFormat;
use tollgate_dataplane::counters;

/// Prints the counters; exit code 0, or an error when the maps cannot be read.
pub fn print(pin_dir: &Path, state_dir: &Path, format: OutputFormat) -> anyhow::Result<i32> {
    let report = counters::read(pin_dir, state_dir)?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => {
            println!(
                "{:<24} {:<24} {:<6} {:<10} {:>14} {:>16}",
                "POLICY", "RULE", "ACTION", "REASON", "PACKETS", "BYTES"
            );
            for r in &report.rules {
                println!(
                    "{:<24} {:<24} {:<6} {:<10} {:>14} {:>16}",
                    r.policy, r.rule, r.action, r.reason, r.packets, r.bytes
                );
            }
            let s = &report.stats;
            println!(
                "not judged by rules: non-IP passed {}, malformed dropped {}, fragments passed {}, unconfigured interface passed {}, unsupported dropped {}, failsafe passed {}; rate-limit buckets evicted {}",
                s.non_ip, s.malformed, s.fragment_pass, s.unconfigured, s.unsupported, s.failsafe, s.buckets_evicted
            );
        }
    }
    Ok(0)
}
