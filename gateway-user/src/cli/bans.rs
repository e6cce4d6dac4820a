//! `tollgate bans`: the XDP blocklist (`banOnAbuse`), read and changed through the pinned maps
//! directly, whether or not an agent runs (a running agent notices changes on its next sweep,
//! within a second). Lifting is deliberately not an admin HTTP endpoint: the admin port may be
//! reachable from the cluster network.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::OutputFormat;
use crate::bans::{report, BansReport};
use tollgate_dataplane::bans::{BanKind, BanMaps};
use tollgate_dataplane::DEFAULT_PIN_DIR;

/// Longest ban `tollgate bans add --for` makes.
pub const MAX_MANUAL_BAN: Duration = Duration::from_secs(7 * 24 * 3600);

/// `tollgate bans` arguments.
#[derive(Debug, Clone, Args)]
pub struct BansArgs {
    /// Pin directory on a bpffs (as for `run`).
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR, env = "TOLLGATE_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// Output format (of the list).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// What to do (default: list).
    #[command(subcommand)]
    pub action: Option<BansAction>,
}

/// What `tollgate bans` does.
#[derive(Debug, Clone, Subcommand)]
pub enum BansAction {
    /// List the bans in force, with the time left (the default).
    List,
    /// Lift the ban of an address at once.
    Lift {
        /// The banned address.
        address: IpAddr,
    },
    /// Ban an address by hand (its packets are dropped by XDP until the time is up).
    Add {
        /// The address.
        address: IpAddr,
        /// How long (like 30s, 10m, 2h; at most 7 days).
        #[arg(long = "for", value_name = "DURATION", value_parser = super::parse_duration)]
        duration: Duration,
    },
}

fn open(pin_dir: &Path) -> anyhow::Result<BanMaps> {
    if !pin_dir.join("maps").join("BANS_V4").exists() {
        anyhow::bail!(
            "no blocklist is pinned under {}: `tollgate run --pin-dir {}` creates it when it loads the programs (maps/BANS_V4 and maps/BANS_V6); was the agent started with another --pin-dir, or detached?",
            pin_dir.display(),
            pin_dir.display()
        );
    }
    Ok(BanMaps::open(pin_dir)?)
}

/// Runs `tollgate bans`; returns the exit code (1: `lift` of an address that has no ban).
pub fn bans(args: BansArgs) -> anyhow::Result<i32> {
    match args.action.unwrap_or(BansAction::List) {
        BansAction::List => {
            open(&args.pin_dir)?;
            let r = report(&args.pin_dir, usize::MAX)?;
            print_list(&r, args.format)?;
            Ok(0)
        }
        BansAction::Lift { address } => {
            if open(&args.pin_dir)?.lift(address)? {
                eprintln!("lifted the ban of {address}");
                Ok(0)
            } else {
                eprintln!("{address} is not banned");
                Ok(1)
            }
        }
        BansAction::Add { address, duration } => {
            if duration > MAX_MANUAL_BAN {
                anyhow::bail!("--for: at most 7 days");
            }
            if tollgate_proxy::abuse::exempt(address, &[]) {
                anyhow::bail!("{address} is a loopback or unspecified address: never banned");
            }
            let e = open(&args.pin_dir)?.ban(address, duration, BanKind::Manual, "manual")?;
            eprintln!(
                "banned {} for {}s: its packets are dropped by XDP",
                e.address,
                duration.as_secs()
            );
            Ok(0)
        }
    }
}

fn print_list(r: &BansReport, format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(r)?),
        OutputFormat::Text => {
            println!(
                "{:<40} {:<32} {:<10} {:>12}",
                "ADDRESS", "POLICY", "REASON", "EXPIRES IN"
            );
            for b in &r.bans {
                println!(
                    "{:<40} {:<32} {:<10} {:>11}s",
                    b.address, b.policy, b.reason, b.expires_in_seconds
                );
            }
            println!("{} ban(s) in force", r.total);
        }
    }
    Ok(())
}
