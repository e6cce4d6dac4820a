//! `tollgate bans`: the XDP blocklist (`banOnAbuse`), read and changed through the pinned maps
//! directly, whether or not an agent runs (a running agent notices changes on its next sweep,
//! within a second). Lifting is deliberately not an admin HTTP endpoint: the admin port may be
//! reachable from the cluster network.
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::OutputFormat;
use crate::bans::{report, BansReport};
use tollgate_dataplane::bans::{BanKind, BanMaps, BanOutcome, BanTarget};
use tollgate_dataplane::DEFAULT_PIN_DIR;
use tollgate_model::ban::MIN_BAN_IPV6_PREFIX;

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
    /// Lift a ban at once: the ban of exactly that address or IPv6 prefix, or, for an address
    /// that has none of its own, every ban of a prefix that holds it.
    Lift {
        /// The banned address, or IPv6 prefix (`2001:db8:1:2::/64`).
        address: BanTarget,
    },
    /// Ban an address or an IPv6 prefix by hand (its packets are dropped by XDP until the time
    /// is up).
    Add {
        /// The address (IPv4 or IPv6), or an IPv6 prefix of /48 to /128.
        address: BanTarget,
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
            let lifted = open(&args.pin_dir)?.lift(address)?;
            if lifted.is_empty() {
                eprintln!("{address} is not banned");
                return Ok(1);
            }
            for e in lifted {
                eprintln!("lifted the ban of {}", e.address);
            }
            Ok(0)
        }
        BansAction::Add { address, duration } => {
            if duration > MAX_MANUAL_BAN {
                anyhow::bail!("--for: at most 7 days");
            }
            check_manual(&address)?;
            match open(&args.pin_dir)?.ban(address, duration, BanKind::Manual, "manual")? {
                BanOutcome::Banned { entry, evicted, .. } => {
                    eprintln!(
                        "banned {} for {}s: its packets are dropped by XDP",
                        entry.address,
                        duration.as_secs()
                    );
                    for e in evicted {
                        eprintln!(
                            "the blocklist was full: lifted the ban of {} (the nearest to its end)",
                            e.address
                        );
                    }
                }
                BanOutcome::Covered(cover) => eprintln!(
                    "not banned again: {} is inside the ban of {}, which lasts as long or longer",
                    address, cover.address
                ),
            }
            Ok(0)
        }
    }
}

/// Refuses bans by hand that would cut the node off: loopback and unspecified addresses, IPv6
/// prefixes shorter than /48 (an L4Policy deny rule is the tool for wide ranges), and
/// link-local prefixes (they would drop every neighbour's neighbour discovery).
fn check_manual(t: &BanTarget) -> anyhow::Result<()> {
    if tollgate_proxy::abuse::holds_exempt(&t.net(), &[]) {
        anyhow::bail!("{t} is or holds a loopback or unspecified address: never banned");
    }
    if t.is_v6() && t.prefix_len() < MIN_BAN_IPV6_PREFIX {
        anyhow::bail!(
            "{t}: IPv6 bans are /{MIN_BAN_IPV6_PREFIX} to /128; deny wider ranges with an L4Policy rule"
        );
    }
    let link_local: ipnet::IpNet = "fe80::/10".parse().expect("a CIDR");
    if !t.is_host() && (link_local.contains(&t.net()) || t.net().contains(&link_local)) {
        anyhow::bail!("{t}: a link-local prefix would cut off every neighbour on the link; ban single addresses");
    }
    Ok(())
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
