//! The command line: one file per command. `main.rs` only calls [`main`].
pub mod bans;
pub mod config;
pub mod controller;
pub mod counters;
pub mod crds;
pub mod diff;
pub mod explain;
pub mod logging;
pub mod node;
pub mod run;
pub mod status;
pub mod validate;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use tollgate_dataplane::DEFAULT_PIN_DIR;

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tollgate";

/// Tollgate: a node-level API gateway that enforces the policy declared in Git, L4 in XDP.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    /// Log format (given twice, the last one counts).
    #[arg(long, global = true, overrides_with = "log_format", value_enum, default_value_t = LogFormat::Text, env = "TOLLGATE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of reporting commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    /// For people.
    #[default]
    Text,
    /// For programs.
    Json,
}

/// The commands.
// Parsed once per process; `run`'s many settings are not worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: attach to the interfaces and enforce the policy from the source.
    Run(run::RunArgs),
    /// Write the Gateway API status of the cluster's objects (Kubernetes mode): one of the
    /// controller Deployment's replicas leads through a Lease and writes, the others wait.
    Controller(controller::ControllerArgs),
    /// Validate a policy directory (or file) with the same compiler the agent uses.
    /// Exit 0 valid, 1 invalid (every problem listed), 2 unreadable.
    Validate {
        /// Directory or file.
        path: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Compile with lock-out protection for this endpoint (ADDR:PORT), as `tollgate run
        /// --failsafe` would; repeat for more. The endpoints in force are listed.
        #[arg(long = "failsafe", value_name = "ADDR:PORT")]
        failsafe: Vec<tollgate_compile::l4::failsafe::Failsafe>,
        /// The node to compile for (L4Policy nodeSelector).
        #[command(flatten)]
        node: node::NodeArgs,
    },
    /// What a revision would change, rule by rule: two policy directories (or files), or with
    /// --repo two revisions of a Git repository.
    /// Exit 0 no change, 1 changes, 2 an unreadable or invalid revision (as `flux diff`).
    Diff {
        /// The revision in force (or the base of the change): a directory or file; with
        /// --repo, a branch, tag, commit or any expression `git rev-parse` takes (HEAD~1).
        old: PathBuf,
        /// The revision to compare with it (as OLD).
        new: PathBuf,
        /// Compare two revisions of this Git repository: a local path (read in place) or a
        /// URL (file://, git://, ...; fetched into a temporary mirror).
        #[arg(long, value_name = "URL_OR_PATH")]
        repo: Option<String>,
        /// With --repo: the directory of the repository that holds the policies.
        #[arg(long, value_name = "DIR", requires = "repo", default_value = "")]
        path: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// With --repo URL: how it is reached, as for `run`.
        #[command(flatten)]
        git: run::GitArgs,
    },
    /// Show which verdict a packet would get, which rule decides it, and why.
    Explain(explain::ExplainArgs),
    /// Ask a running agent what it enforces (its admin server's /status).
    Status {
        /// The agent's admin address.
        #[arg(long, default_value = crate::telemetry::admin::DEFAULT_ADMIN_ADDR, env = "TOLLGATE_ADMIN")]
        admin: std::net::SocketAddr,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// Print the CustomResourceDefinitions of Tollgate's kinds (L4Policy, Backend, RateLimitPolicy).
    Crds {
        /// Write one file per kind into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Make sure the pin directory is on a bpffs, mounting one when none is (at /sys/fs/bpf
    /// for a pin directory under it). For the install's init container, which holds
    /// CAP_SYS_ADMIN so that the agent does not have to; exit 0 when the bpffs is there.
    MountBpffs {
        /// Pin directory (need not exist yet).
        #[arg(long, default_value = DEFAULT_PIN_DIR, env = "TOLLGATE_PIN_DIR")]
        pin_dir: PathBuf,
    },
    /// Remove every program, link and map the agent pinned (stops enforcement).
    Detach {
        /// Pin directory on a bpffs.
        #[arg(long, default_value = DEFAULT_PIN_DIR, env = "TOLLGATE_PIN_DIR")]
        pin_dir: PathBuf,
    },
    /// Print the source prefixes with the most dropped or rate-limited packets (sampled
    /// estimates, from the pinned maps).
    Top {
        /// Pin directory on a bpffs.
        #[arg(long, default_value = DEFAULT_PIN_DIR, env = "TOLLGATE_PIN_DIR")]
        pin_dir: PathBuf,
        /// How many prefixes.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
    /// List, lift or add bans of the XDP blocklist (banOnAbuse), from the pinned maps.
    Bans(bans::BansArgs),
    /// Print the per-rule packet counters from the pinned maps.
    Counters {
        /// Pin directory on a bpffs.
        #[arg(long, default_value = DEFAULT_PIN_DIR, env = "TOLLGATE_PIN_DIR")]
        pin_dir: PathBuf,
        /// State directory (names of the rules).
        #[arg(long, default_value = DEFAULT_STATE_DIR, env = "TOLLGATE_STATE_DIR")]
        state_dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
    },
}

/// Durations of flags: the Gateway API's format, as in policies (`30s`, `1m30s`, `500ms`), and
/// more than zero. Sizes: `64MiB`, `512m`, `1GB`. One parser each for flags and policies.
pub use tollgate_model::units::{parse_nonzero_duration as parse_duration, parse_size};

/// Parses the command line and runs the command; returns the exit code.
pub fn main() -> anyhow::Result<i32> {
    let argv = match config::expand(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(errors) => {
            eprintln!(
                "error: {} bad setting(s), nothing was started:",
                errors.len()
            );
            for e in &errors {
                eprintln!("  {e}");
            }
            return Ok(2);
        }
    };
    let cli = Cli::parse_from(argv);
    logging::init(cli.log_format);
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Controller(args) => controller::run(args),
        Command::Validate {
            path,
            format,
            failsafe,
            node,
        } => {
            let result = validate::validate_path_for(&path, &failsafe, node.node());
            let fmt = match format {
                OutputFormat::Text => validate::Format::Text,
                OutputFormat::Json => validate::Format::Json,
            };
            let out = validate::render(&result, fmt);
            match fmt {
                validate::Format::Text => print!("{}", terminal_safe(&out)),
                validate::Format::Json => print!("{out}"),
            }
            Ok(validate::exit_code(&result))
        }
        Command::Explain(args) => explain::explain(args),
        Command::Status { admin, format } => status::status(admin, format == OutputFormat::Json),
        Command::Diff {
            old,
            new,
            repo: None,
            format,
            ..
        } => Ok(diff::diff(&old, &new, format == OutputFormat::Json)),
        Command::Diff {
            old,
            new,
            repo: Some(repo),
            path,
            format,
            git,
        } => Ok(diff::diff_revisions(
            &repo,
            &path,
            &git.options(),
            &old.to_string_lossy(),
            &new.to_string_lossy(),
            format == OutputFormat::Json,
        )),
        Command::Crds { out_dir: None } => {
            print!("{}", crds::crds_yaml());
            Ok(0)
        }
        Command::Crds { out_dir: Some(dir) } => {
            for path in crds::write_dir(&dir)? {
                eprintln!("wrote {}", path.display());
            }
            Ok(0)
        }
        Command::MountBpffs { pin_dir } => {
            match tollgate_dataplane::bpffs::ensure(&pin_dir)? {
                Some(at) => eprintln!("mounted a bpffs at {}", at.display()),
                None => eprintln!("{} is on a bpffs already", pin_dir.display()),
            }
            Ok(0)
        }
        Command::Detach { pin_dir } => {
            let removed = tollgate_dataplane::detach(&pin_dir)?;
            eprintln!(
                "removed {} pinned object(s) under {}",
                removed.len(),
                pin_dir.display()
            );
            Ok(0)
        }
        Command::Bans(args) => bans::bans(args),
        Command::Counters {
            pin_dir,
            state_dir,
            format,
        } => counters::print(&pin_dir, &state_dir, format),
        Command::Top {
            pin_dir,
            limit,
            format,
        } => {
            let top = tollgate_dataplane::offenders::top(&pin_dir, limit)?;
            match format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&top)?),
                OutputFormat::Text => {
                    println!(
                        "{:<44} {:>14} {:>14}",
                        "SOURCE PREFIX", "DROPPED", "RATE-LIMITED"
                    );
                    for o in &top {
                        println!("{:<44} {:>14} {:>14}", o.prefix, o.dropped, o.ratelimited);
                    }
                    println!(
                        "(estimates: one drop in {} is sampled; prefixes /{} for IPv4, /{} for IPv6)",
                        tollgate_dataplane::offenders::sample_rate(),
                        gateway_common::OFFENDER_PREFIX_V4,
                        gateway_common::OFFENDER_PREFIX_V6
                    );
                }
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn flag_durations_are_policy_durations_and_never_zero() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("3d").is_err());
    }

    #[test]
    fn git_flags_reach_the_git_options() {
        let cli = Cli::try_parse_from([
            "tollgate",
            "run",
            "--interface",
            "eth0",
            "--source",
            "ssh://git@git.example.com:2222/policy.git",
            "--git-username",
            "deploy",
            "--git-ssh-key",
            "/etc/tollgate/id_ed25519",
            "--git-known-hosts",
            "/etc/tollgate/known_hosts",
            "--git-timeout",
            "2m",
            "--git-max-size",
            "64MiB",
            "--git-max-policy-size",
            "8MiB",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let options = args.git_options();
        assert_eq!(options.username.as_deref(), Some("deploy"));
        assert_eq!(
            options.known_hosts.as_deref(),
            Some(std::path::Path::new("/etc/tollgate/known_hosts"))
        );
        assert_eq!(options.timeout, Duration::from_secs(120));
        assert_eq!(options.max_size, 64 << 20);
        assert_eq!(options.max_policy_size, 8 << 20);
        assert_eq!(options.password_file, None);

        let cli = Cli::try_parse_from([
            "tollgate",
            "run",
            "--interface",
            "eth0",
            "--source",
            "https://git.example.com/policy.git",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        assert_eq!(
            args.git_options(),
            tollgate_source::git::GitOptions::default()
        );
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

/// `text` with its control characters (but line ends and tabs) written as `\u{..}` escapes:
/// what a policy says (names, values quoted in errors) reaches a terminal, and an escape
/// sequence in it would be run by the terminal (retitle it, erase lines, ...).
pub(crate) fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod terminal_tests {
    #[test]
    fn control_characters_are_escaped_and_line_ends_kept() {
        let hostile = "x\u{1b}]0;pwned\u{7}\u{1b}[2K\u{9b}1m\0 ok\tok\n";
        assert_eq!(
            super::terminal_safe(hostile),
            "x\\u{1b}]0;pwned\\u{7}\\u{1b}[2K\\u{9b}1m\\u{0} ok\tok\n"
        );
        assert!(matches!(
            super::terminal_safe("plain é\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
