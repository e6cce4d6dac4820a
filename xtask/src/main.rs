//! Developer automation for Tollgate: `cargo xtask <command>` (the alias is in
//! `.cargo/config.toml`). It runs things; it does not hide the build: the eBPF programs are
//! built by `gateway-user/build.rs`, so a plain `cargo build` builds everything.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tollgate_tests::l7::{curl_in, Backend};
use tollgate_tests::{Agent, Connect, Lab, LabConfig, TcpServer, POLICY_APPLIED};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Tollgate developer automation"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (root only; idempotent; says what it does).
    Setup,
    /// Build the workspace (the eBPF programs are built by gateway-user/build.rs).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Setup, then every test level: unit, property, eBPF program tests, end-to-end (root).
    Test,
    /// Setup, build, and show Tollgate enforcing examples/ on a throw-away lab.
    Demo,
    /// Benchmarks (not written yet).
    Bench,
    /// Regenerate manifests/crds/ (one file per Tollgate kind) from the Rust types.
    Crds,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup(),
        Cmd::Build { release } => build(release),
        Cmd::Test => test(),
        Cmd::Demo => demo(),
        Cmd::Bench => bench(),
        Cmd::Crds => crds(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `<workspace>/target` (the default).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The cargo that runs us (so the toolchain is the same), else `cargo` from PATH.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn show(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs a command with inherited output; error when it cannot start or fails.
fn run(mut cmd: Command) -> Result<()> {
    let line = show(&cmd);
    eprintln!("xtask: $ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

fn command<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// Runs a command quietly and returns its stdout when it succeeds.
fn probe(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------------------------------------
// setup

/// Debian packages that provide LLVM for bpf-linker.
const LLVM_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev"];
/// Debian packages whose tools the tests, the demo and the benchmarks use.
const TOOL_PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "nftables",
    "iputils-ping",
    "netcat-openbsd",
    "hping3",
    "python3-scapy",
    "procps",
    // promtool, which checks the agent's /metrics output in the tests.
    "prometheus",
    "curl",
    // git and git-daemon, for the Git source tests.
    "git",
    // The Git source over smart HTTP (tests/tests/git_http.rs): nginx in front of
    // git-http-backend run by fcgiwrap; the openssl tool makes the test CA and the htpasswd, and
    // signs the webhook tests' calls with an HMAC independent of the agent's.
    "nginx",
    "fcgiwrap",
    "openssl",
    // htpasswd -B: the bcrypt htpasswd files of the AuthPolicy tests (tests/tests/l7_auth.rs).
    "apache2-utils",
    // The Git source over ssh (tests/tests/git_ssh.rs): sshd, and ssh-keygen for the keys and
    // for the commit signatures of the --verify-commits tests (git signs with it).
    "openssh-server",
    "openssh-client",
    // Building the agent: git2's vendored OpenSSL is configured with perl and built with make.
    "perl",
    "make",
    // Load generators for the L7 proxy tests: hey (HTTP/1.1) and h2load (HTTP/2, in
    // nghttp2-client). The L7 tests' backends are small Python servers (python3).
    "hey",
    "nghttp2-client",
    "python3",
    // JWTs and JWKS made independently of the agent (tests/tests/l7_jwt.rs): PyJWT with
    // cryptography makes the RSA, EC P-256 and Ed25519 keys, the JWKS and the tokens.
    "python3-jwt",
    "python3-cryptography",
    // The L7 hardening tests (tests/tests/l7_hardening.rs): slowloris and slow bodies, and an
    // HTTP/2 rapid-reset client.
    "slowhttptest",
    "python3-h2",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn setup() -> Result<()> {
    if !is_root() {
        bail!(
            "setup must run as root: it installs Debian packages, and the tests create network \
             namespaces and load eBPF programs (try: sudo -E cargo xtask setup)"
        );
    }
    let mut failures: Vec<String> = Vec::new();

    // 1. Debian packages (LLVM first: bpf-linker is built against it).
    let wanted: Vec<&str> = LLVM_PACKAGES.iter().chain(TOOL_PACKAGES).copied().collect();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !deb_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: Debian packages: all present ({})", wanted.join(" "));
    } else {
        eprintln!("setup: Debian packages: installing {}", missing.join(" "));
        if let Err(error) = apt_install(&missing) {
            eprintln!("setup: {error:#}");
        }
        let still: Vec<&str> = missing
            .iter()
            .copied()
            .filter(|p| !deb_installed(p))
            .collect();
        if !still.is_empty() {
            failures.push(format!("Debian packages {}", still.join(" ")));
        }
    }

    // 2. rust-src for the nightly toolchain (the eBPF crate is built with build-std=core).
    if let Err(error) = ensure_rust_src() {
        failures.push(format!("{error:#}"));
    }

    // 3. bpf-linker, built against LLVM 22.
    if let Err(error) = ensure_bpf_linker() {
        failures.push(format!("{error:#}"));
    }

    if failures.is_empty() {
        eprintln!("setup: done");
        Ok(())
    } else {
        bail!("setup could not install: {}", failures.join("; "))
    }
}

fn deb_installed(package: &str) -> bool {
    probe("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|status| status.trim() == "install ok installed")
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let mut update = command("apt-get", ["update"]);
    update.env("DEBIAN_FRONTEND", "noninteractive");
    run(update)?;
    // With recommends, as the documented LLVM install does: bpf-linker links against them.
    let mut install = command("apt-get", ["install", "-y"]);
    install
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run(install)
}

fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    // Never let rustup replace itself; nothing here runs `rustup update` either.
    cmd.env("RUSTUP_SELF_UPDATE", "disable");
    cmd
}

fn ensure_rust_src() -> Result<()> {
    let listed = rustup()
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .stderr(Stdio::null())
        .output()
        .context("rustup not found: the nightly toolchain with rust-src is needed to build the eBPF programs")?;
    if !listed.status.success() {
        bail!(
            "the nightly toolchain is not installed (rustup toolchain install nightly \
             --profile minimal --component rust-src)"
        );
    }
    if String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|l| l.trim().starts_with("rust-src"))
    {
        eprintln!("setup: rust-src for nightly: present");
        return Ok(());
    }
    eprintln!("setup: rust-src for nightly: installing");
    let mut add = rustup();
    add.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
    run(add).context("rust-src for the nightly toolchain")
}

fn ensure_bpf_linker() -> Result<()> {
    let installed = probe("bpf-linker", &["--version"]).or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        probe(home.join("bin/bpf-linker").to_str()?, &["--version"])
    });
    if let Some(version) = &installed {
        if version.split_whitespace().any(|w| w == BPF_LINKER_VERSION) {
            eprintln!("setup: bpf-linker {BPF_LINKER_VERSION}: present");
            return Ok(());
        }
        eprintln!(
            "setup: bpf-linker: found {}, want {BPF_LINKER_VERSION}",
            version.trim()
        );
    }
    eprintln!(
        "setup: bpf-linker {BPF_LINKER_VERSION}: building against LLVM 22 (takes a few minutes)"
    );
    let mut install = cargo();
    install
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22");
    run(install).with_context(|| format!("bpf-linker {BPF_LINKER_VERSION}"))
}

// ---------------------------------------------------------------------------------------------
// build and test

/// gateway-ebpf is only ever built for the BPF target, by gateway-user/build.rs.
const WORKSPACE: &[&str] = &["--workspace", "--exclude", "gateway-ebpf"];

fn build(release: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.arg("build").args(WORKSPACE);
    if release {
        cmd.arg("--release");
    }
    run(cmd)
}

/// The outcome of one step of `cargo xtask test`.
struct StepResult {
    name: &'static str,
    ok: bool,
    elapsed: Duration,
    passed: u64,
    failed: u64,
    ignored: u64,
}

fn test() -> Result<()> {
    setup()?;
    // Build once: the binary the end-to-end tests run, then every test target.
    build(false)?;
    let bin = target_dir().join("debug/tollgate");

    let mut steps = Vec::new();
    // Unit and property tests, and the eBPF program tests (BPF_PROG_TEST_RUN, root).
    let mut unit = cargo();
    unit.args(["test", "--no-fail-fast"])
        .args(WORKSPACE)
        .args(["--exclude", "tollgate-tests"]);
    steps.push(cargo_test_step(
        "unit, property and eBPF program tests",
        unit,
    ));
    // End-to-end tests: network namespaces and the real binary; one at a time, as they
    // attach programs and change routes.
    let mut e2e = cargo();
    e2e.args([
        "test",
        "--no-fail-fast",
        "-p",
        "tollgate-tests",
        "--",
        "--test-threads=1",
    ])
    .env("TOLLGATE_BIN", &bin);
    steps.push(cargo_test_step(
        "end-to-end tests (network namespaces)",
        e2e,
    ));

    eprintln!();
    eprintln!("xtask test summary:");
    for s in &steps {
        eprintln!(
            "  {:<6} {:<45} {:>4} passed, {:>3} failed, {:>3} ignored  ({:.0?})",
            if s.ok { "ok" } else { "FAILED" },
            s.name,
            s.passed,
            s.failed,
            s.ignored,
            s.elapsed
        );
    }
    let passed: u64 = steps.iter().map(|s| s.passed).sum();
    let failed: u64 = steps.iter().map(|s| s.failed).sum();
    println!("total: {passed} passed, {failed} failed");
    if steps.iter().all(|s| s.ok) {
        Ok(())
    } else {
        bail!("some tests failed")
    }
}

/// Runs `cargo test ...`, streaming its output, and adds up its "test result:" lines.
fn cargo_test_step(name: &'static str, mut cmd: Command) -> StepResult {
    eprintln!("xtask: {name}: $ {}", show(&cmd));
    let started = Instant::now();
    let mut result = StepResult {
        name,
        ok: false,
        elapsed: Duration::ZERO,
        passed: 0,
        failed: 0,
        ignored: 0,
    };
    let mut child = match cmd.stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!("xtask: cannot start cargo: {error}");
            return result;
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        // "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ..."
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(label), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u64>() else { continue };
                match label {
                    "passed" => result.passed += n,
                    "failed" => result.failed += n,
                    "ignored" => result.ignored += n,
                    _ => {}
                }
            }
        }
    }
    result.ok = child.wait().map(|s| s.success()).unwrap_or(false);
    result.elapsed = started.elapsed();
    result
}

// ---------------------------------------------------------------------------------------------
// demo

const SCANNER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const OFFICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const WEB_PORT: u16 = 8080;
/// The API key whose salted hash is in examples/secrets/shop/orders-keys/keys (demo only).
const DEMO_API_KEY: &str = "demo-key-7f3a9c2e";
const SSH_PORT: u16 = 22;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM end the demo through its normal error path, so the lab's and the
/// agent's `Drop` clean up. (The children in our process group get the Ctrl-C too and stop.)
fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_interrupt as *const () as libc::sighandler_t) };
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Prints each demo step with what was expected and what happened.
#[derive(Default)]
struct Story {
    steps: u32,
    surprises: u32,
}

impl Story {
    fn step(&mut self, title: &str, expected: &str, got: &str, as_expected: bool) -> Result<()> {
        self.steps += 1;
        if !as_expected {
            self.surprises += 1;
        }
        println!("\n{}. {title}", self.steps);
        println!("   expected: {expected}");
        println!(
            "   got:      {got}   {}",
            if as_expected {
                "[as expected]"
            } else {
                "[UNEXPECTED]"
            }
        );
        check_interrupted()
    }
}

fn demo() -> Result<()> {
    setup()?;
    let mut release = cargo();
    release.args([
        "build",
        "--release",
        "-p",
        "gateway-user",
        "--bin",
        "tollgate",
    ]);
    run(release)?;
    let bin = target_dir().join("release/tollgate");
    // The lab helpers run `tollgate counters`/`detach` through TOLLGATE_BIN. Set before any
    // thread is started.
    std::env::set_var("TOLLGATE_BIN", &bin);
    catch_interrupts();

    println!("\n== Tollgate demo ==");
    println!("A lab: namespace tg-demo, veth tgdemo0 (198.18.0.1, root namespace, where tollgate attaches)");
    println!("<-> tgdemo1 (198.18.0.2, in tg-demo; also plays {SCANNER} 'scanner' and {OFFICE} 'office').");
    println!("Policy: examples/ (see examples/edge.yaml).");
    let lab = Lab::with_config(LabConfig {
        netns: "tg-demo".into(),
        veth_root: "tgdemo0".into(),
        veth_ns: "tgdemo1".into(),
        root_ip: Ipv4Addr::new(198, 18, 0, 1),
        ns_ip: Ipv4Addr::new(198, 18, 0, 2),
        prefix_len: 24,
        sources: vec![SCANNER, OFFICE],
        base_dir: PathBuf::from("/run/tollgate-demo"),
        mac_byte: 0,
        source_dir: Some(root().join("examples")),
    });
    let _web = TcpServer::start(lab.root_ip(), WEB_PORT).context("listen on 198.18.0.1:8080")?;
    // Port 22 may already have a listener (sshd on 0.0.0.0): then that one answers.
    let _ssh = TcpServer::start(lab.root_ip(), SSH_PORT).ok();

    // examples/l7 has a Gateway: its listener is bound on the lab's address only, never on
    // the machine's own interfaces.
    // The backends of examples/l7/backends.yaml (small echo servers on 127.0.0.1), and the
    // demo API key of examples/secrets (the AuthPolicy of examples/l7/auth.yaml).
    let _orders = [
        Backend::start("orders-1", 9001),
        Backend::start("orders-2", 9002),
        Backend::start("orders-canary", 9003),
    ];
    let secrets = root().join("examples/secrets");
    let secrets_arg = secrets.to_string_lossy().into_owned();
    let mut agent = Agent::start_with(
        &bin,
        &lab,
        &[
            "--gateway-address",
            "198.18.0.1",
            "--tls-secrets-dir",
            &secrets_arg,
        ],
    );
    println!(
        "\nstarted: {} run --interface tgdemo0 --source examples --gateway-address 198.18.0.1 --tls-secrets-dir examples/secrets --pin-dir {} --state-dir {} (log: {})",
        bin.display(),
        lab.pin_dir.display(),
        lab.state_dir.display(),
        agent.log_path().display()
    );
    agent
        .wait_for_log(POLICY_APPLIED, Duration::from_secs(30))
        .map_err(anyhow::Error::msg)?;
    for line in agent
        .log()
        .lines()
        .filter(|l| l.contains("attached") || l.contains(POLICY_APPLIED))
    {
        println!("agent: {line}");
    }
    check_interrupted()?;

    let mut story = Story::default();
    let me = lab.ns_ip();
    let fast = Duration::from_millis(200);

    let ping = lab.ping(me, 3, fast, Duration::from_secs(2));
    story.step(
        "ping from 198.18.0.2 (rule `ping` allows ICMP)",
        "3/3 replies",
        &format!("{}/{} replies", ping.received, ping.transmitted),
        ping.received == 3,
    )?;

    let web = lab.tcp_connect(me, WEB_PORT, Duration::from_secs(3));
    story.step(
        "TCP 198.18.0.2 -> 198.18.0.1:8080 (rule `web` allows 8080, within its rate limit)",
        "connected",
        &describe(&web),
        web == Connect::Connected,
    )?;

    let ping = lab.ping(SCANNER, 3, fast, Duration::from_secs(1));
    story.step(
        "ping from the scanner 203.0.113.7 (rule `block-scanners`: deny wins over `ping`)",
        "0/3 replies (dropped in XDP)",
        &format!("{}/{} replies", ping.received, ping.transmitted),
        ping.received == 0,
    )?;

    let web = lab.tcp_connect(SCANNER, WEB_PORT, Duration::from_secs(2));
    story.step(
        "TCP from the scanner to 8080 (deny wins over `web`)",
        "no answer (timed out)",
        &describe(&web),
        web == Connect::TimedOut,
    )?;

    let ssh = lab.tcp_connect(OFFICE, SSH_PORT, Duration::from_secs(3));
    story.step(
        "SSH (TCP 22) from the office 198.51.100.10 (rule `ssh-from-office`)",
        "reaches the host (connected, or refused if nothing listens)",
        &describe(&ssh),
        ssh.reached_host(),
    )?;

    let ssh = lab.tcp_connect(me, SSH_PORT, Duration::from_secs(2));
    story.step(
        "SSH from 198.18.0.2, not the office (no rule allows it: defaultAction deny)",
        "no answer (timed out)",
        &describe(&ssh),
        ssh == Connect::TimedOut,
    )?;

    // Over the limit: bare ACKs to 8080 at ~1000/s. Each one that passes gets a RST back
    // (no connection), so hping3's "received" counts the packets the limit let through.
    let before = lab.counters();
    let count = 1500u64;
    let started = Instant::now();
    let flood = lab.ns_run(&[
        "hping3",
        "-q",
        "-A",
        "-p",
        "8080",
        "-i",
        "u1000",
        "-c",
        &count.to_string(),
        "198.18.0.1",
    ]);
    let elapsed = started.elapsed().as_secs_f64();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&flood.stdout),
        String::from_utf8_lossy(&flood.stderr)
    );
    let replies = hping_received(&text);
    let after = lab.counters();
    let passed = after.packets("web", "pass", "policy") - before.packets("web", "pass", "policy");
    let limited =
        after.packets("web", "drop", "ratelimit") - before.packets("web", "drop", "ratelimit");
    story.step(
        &format!("{count} TCP packets to 8080 from 198.18.0.2 in {elapsed:.1}s (rule `web`: 100 pps, burst 100, per source)"),
        "about 100 (burst) + 100/s pass, the rest dropped as rate-limited",
        &format!(
            "{} answered; counters: web pass +{passed}, web ratelimit drop +{limited}",
            replies.map_or("?".to_string(), |n| n.to_string())
        ),
        passed >= 50 && (passed as f64) < 100.0 + 100.0 * elapsed * 1.5 && limited >= count / 2,
    )?;

    // L7: the orders API behind the gateway on 198.18.0.1:18000 (examples/l7).
    let api = "http://api.example.com:18000/v1/orders";
    let resolve = "api.example.com:18000:198.18.0.1";
    let key = format!("X-Api-Key: {DEMO_API_KEY}");
    let r = curl_in(&lab, &["--resolve", resolve, api]);
    story.step(
        "GET /v1/orders from 198.18.0.2 without an API key (AuthPolicy orders-auth)",
        "401 with WWW-Authenticate",
        &format!(
            "{} {}",
            r.status,
            r.header("www-authenticate").unwrap_or("(no challenge)")
        ),
        r.status == 401 && r.header("www-authenticate").is_some(),
    )?;
    let r = curl_in(&lab, &["--resolve", resolve, "-H", &key, api]);
    let backend = r.header("x-backend").unwrap_or("?").to_owned();
    story.step(
        "GET /v1/orders with the demo API key (90% orders, 10% orders-canary)",
        "200 from an orders backend, consumer demo-app",
        &format!(
            "{} from {backend}, backend saw X-Tollgate-Consumer: {}",
            r.status,
            if r.status == 200 {
                r.seen_header("x-tollgate-consumer").unwrap_or_default()
            } else {
                String::new()
            }
        ),
        r.status == 200 && backend.starts_with("orders"),
    )?;
    let r = curl_in(
        &lab,
        &[
            "--resolve",
            resolve,
            "-H",
            &key,
            "http://api.example.com:18000/v0/orders/7",
        ],
    );
    story.step(
        "GET /v0/orders/7 (the old API: RequestRedirect)",
        "301 to /v1/orders/7",
        &format!(
            "{} {}",
            r.status,
            r.header("location").unwrap_or("(no Location)")
        ),
        r.status == 301
            && r.header("location")
                .is_some_and(|l| l.ends_with("/v1/orders/7")),
    )?;
    // 60 requests on one keep-alive connection (curl's URL globbing), as fast as they go.
    let burst = lab
        .ns_command(
            "curl",
            &[
                "-s",
                "--max-time",
                "20",
                "-w",
                "\nCODE:%{http_code}\n",
                "--resolve",
                resolve,
                "-H",
                &key,
                &format!("{api}?n=[1-60]"),
            ],
        )
        .output()
        .context("curl in the lab")?;
    let mut codes = std::collections::BTreeMap::new();
    for code in String::from_utf8_lossy(&burst.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("CODE:"))
    {
        *codes.entry(code.to_owned()).or_insert(0u32) += 1;
    }
    story.step(
        "60 quick requests with the key on one connection (RateLimitPolicy orders-limits: 20/s, burst 40, per client)",
        "about 40 answered 200 (the burst), the rest 429",
        &format!("{codes:?}"),
        codes.get("429").copied().unwrap_or(0) >= 10 && codes.get("200").copied().unwrap_or(0) >= 35,
    )?;

    let explain_request = command(
        bin.to_str().unwrap_or("tollgate"),
        [
            "explain",
            "--source",
            "examples",
            "--request",
            "GET http://api.example.com:18000/v1/orders",
        ],
    )
    .current_dir(root())
    .output();
    if let Ok(out) = explain_request {
        println!("\n$ tollgate explain --source examples --request 'GET http://api.example.com:18000/v1/orders'");
        print!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let explain = command(
        bin.to_str().unwrap_or("tollgate"),
        [
            "explain",
            "--source",
            "examples",
            "--packet",
            "tcp 203.0.113.7:51000 -> 198.18.0.1:22",
        ],
    )
    .current_dir(root())
    .output();
    if let Ok(out) = explain {
        println!("\n$ tollgate explain --source examples --packet 'tcp 203.0.113.7:51000 -> 198.18.0.1:22'");
        print!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    println!(
        "\n$ tollgate counters --pin-dir {} --state-dir {}",
        lab.pin_dir.display(),
        lab.state_dir.display()
    );
    let counters = command(
        bin.to_str().unwrap_or("tollgate"),
        [
            OsStr::new("counters"),
            OsStr::new("--pin-dir"),
            lab.pin_dir.as_os_str(),
        ],
    )
    .args([OsStr::new("--state-dir"), lab.state_dir.as_os_str()])
    .output()
    .context("tollgate counters")?;
    print!(
        "{}{}",
        String::from_utf8_lossy(&counters.stdout),
        String::from_utf8_lossy(&counters.stderr)
    );

    println!("\ncleaning up: agent, pins, namespace, veth, bpffs");
    drop(agent);
    drop(lab);
    if story.surprises == 0 {
        println!("demo: all {} steps as expected", story.steps);
        Ok(())
    } else {
        bail!(
            "demo: {} of {} steps did not go as expected",
            story.surprises,
            story.steps
        )
    }
}

fn describe(outcome: &Connect) -> String {
    match outcome {
        Connect::Connected => "connected".into(),
        Connect::Refused => "refused (RST: reached the host)".into(),
        Connect::TimedOut => "no answer (timed out)".into(),
        Connect::Error(e) => format!("error: {e}"),
    }
}

/// "1500 packets tramitted, 212 packets received, 86% packet loss" (hping3's spelling).
fn hping_received(output: &str) -> Option<u64> {
    let line = output.lines().find(|l| l.contains("packets received"))?;
    let before = line.split("packets received").next()?;
    before.rsplit(',').next()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------------
// bench and crds

fn bench() -> Result<()> {
    // The benchmarks live in gateway-user/benches/bench.rs (they use the agent's library and the
    // eBPF objects build.rs embeds). They need root (eBPF, network namespaces), run their peers
    // in the same run, and write their tables into docs/benchmarks.md.
    setup()?;
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "gateway-user", "--bench", "bench"]);
    run(cmd)
}

fn crds() -> Result<()> {
    let dir = root().join("manifests/crds");
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "gateway-user",
        "--bin",
        "tollgate",
        "--",
        "crds",
        "--out-dir",
    ]);
    cmd.arg(&dir);
    run(cmd)
}

#[cfg(test)]
mod tests {
    use super::hping_received;

    #[test]
    fn hping_summary_is_read() {
        let out = "--- 198.18.0.1 hping statistic ---\n1500 packets tramitted, 212 packets received, 86% packet loss\n";
        assert_eq!(hping_received(out), Some(212));
        assert_eq!(hping_received("nothing"), None);
    }
}
