//! Developer automation for Tollgate: `cargo xtask <command>` (the alias is in
//! `.cargo/config.toml`). It runs things; it does not hide the build: the eBPF programs are
//! built by `gateway-user/dataplane/build.rs`, so a plain `cargo build` builds everything.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod demo;
mod deps;
mod gateway_api;
mod image;
mod manifests;

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
    /// Build the workspace (the eBPF programs are built by gateway-user/dataplane/build.rs).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Setup, then the checks (fmt, clippy, dependency direction) and every test level: unit,
    /// property, eBPF program tests, the fuzz targets for a few seconds each
    /// (TOLLGATE_FUZZ_SECONDS; TOLLGATE_SKIP_FUZZ=1 skips them), end-to-end (root).
    Test,
    /// Setup, build, and show Tollgate enforcing examples/ on a throw-away lab.
    Demo,
    /// Benchmarks against peers measured in the same run; tables go to docs/benchmarks.md (root).
    Bench,
    /// Check that the pipeline crates' dependencies point one way (run by `test` too).
    Deps,
    /// Build the fuzz targets (gateway-user/fuzz, nightly) and run each for a while, as `test`
    /// does; installs cargo-fuzz when it is missing. No root needed.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = FUZZ_SECONDS)]
        seconds: u64,
    },
    /// Regenerate manifests/crds/ (one file per Tollgate kind) from the Rust types.
    Crds,
    /// Build the release binary and the agent's OCI image (umoci, no daemon), written as an
    /// OCI archive: target/image/tollgate-<version>.oci.tar (docs/install.md: how to push it).
    Image,
    /// Run the Gateway API conformance scenarios (tests/conformance/) against the debug binary
    /// and write docs/conformance/report.yaml (root; docs/conformance/README.md).
    Conformance,
    /// Validate the install manifests (kubectl kustomize | kubernetes-validate --strict) and
    /// the example custom resources against the CRDs, and check the model's Gateway API fields
    /// against the Gateway API's types (run by `test` too).
    Manifests,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup(),
        Cmd::Build { release } => build(release),
        Cmd::Test => test(),
        Cmd::Demo => demo::demo(),
        Cmd::Bench => bench(),
        Cmd::Deps => deps::check(),
        Cmd::Fuzz { seconds } => ensure_cargo_fuzz().and_then(|()| {
            let step = fuzz_step(seconds, None);
            if step.ok {
                Ok(())
            } else {
                bail!("{} fuzz target(s) failed", step.failed)
            }
        }),
        Cmd::Crds => crds(),
        Cmd::Conformance => conformance(),
        Cmd::Image => image::image(),
        Cmd::Manifests => manifests::validate_kustomizations()
            .and_then(|()| manifests::validate_custom_resources())
            .and_then(|()| gateway_api::check()),
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

/// `Command::arg` by value, so that a command can be built in one expression.
trait WithArg {
    fn with_arg(self, arg: impl AsRef<OsStr>) -> Self;
}

impl WithArg for Command {
    fn with_arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.arg(arg);
        self
    }
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
    // redis-server and redis-cli: the shared counters of cluster-wide rate limits
    // (tests/tests/l7_cluster_ratelimit*.rs start their own on loopback ports: standalone, a
    // Redis Cluster, a Sentinel with `redis-server --sentinel`).
    "redis-server",
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
    // The L7 benchmark's second peer (gateway-user/benches/l7.rs; nginx is the first).
    "haproxy",
    // JWTs and JWKS made independently of the agent (tests/tests/l7_jwt.rs): PyJWT with
    // cryptography makes the RSA, EC P-256 and Ed25519 keys, the JWKS and the tokens.
    "python3-jwt",
    "python3-cryptography",
    // The L7 hardening tests (tests/tests/l7_hardening.rs): slowloris and slow bodies, and an
    // HTTP/2 rapid-reset client.
    "slowhttptest",
    "python3-h2",
    // The manifests' checks (xtask/src/manifests.rs): kubectl kustomize, and a venv for
    // kubernetes-validate and jsonschema.
    "kubectl",
    "python3-venv",
    // setpriv: the capability test runs the agent with the DaemonSet's capabilities only.
    "util-linux",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz, which builds and runs the libFuzzer targets in gateway-user/fuzz (nightly).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn setup() -> Result<()> {
    if !tollgate_tests::is_root() {
        bail!(
            "setup must run as root: it installs Debian packages, and the tests create network \
             namespaces and load eBPF programs (try: sudo -E cargo xtask setup)"
        );
    }
    let mut failures: Vec<String> = Vec::new();

    // 1. Debian packages (LLVM first: bpf-linker is built against it).
    let wanted: Vec<&str> = LLVM_PACKAGES
        .iter()
        .chain(TOOL_PACKAGES)
        .chain(image::PACKAGES)
        .copied()
        .collect();
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

    // 4. cargo-fuzz, for the fuzz targets (`cargo xtask test` runs them briefly).
    if let Err(error) = ensure_cargo_fuzz() {
        failures.push(format!("{error:#}"));
    }

    // 5. kubernetes-validate (and jsonschema) in a venv, for the manifests' checks, and
    //    grpcio, for the GRPCRoute end-to-end test.
    if let Err(error) = manifests::ensure_python_tools() {
        failures.push(format!("{error:#}"));
    }

    // 6. The Gateway API's TypeScript types and tsc (npm), for the Gateway API field check.
    if let Err(error) = gateway_api::ensure_npm_tools() {
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

fn ensure_cargo_fuzz() -> Result<()> {
    if let Some(version) = probe("cargo-fuzz", &["--version"]) {
        if version.split_whitespace().any(|w| w == CARGO_FUZZ_VERSION) {
            eprintln!("setup: cargo-fuzz {CARGO_FUZZ_VERSION}: present");
            return Ok(());
        }
        eprintln!(
            "setup: cargo-fuzz: found {}, want {CARGO_FUZZ_VERSION}",
            version.trim()
        );
    }
    eprintln!("setup: cargo-fuzz {CARGO_FUZZ_VERSION}: installing");
    let mut install = cargo();
    install.args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]);
    run(install).with_context(|| format!("cargo-fuzz {CARGO_FUZZ_VERSION}"))
}

// ---------------------------------------------------------------------------------------------
// build and test

/// gateway-ebpf is only ever built for the BPF target, by gateway-user/dataplane/build.rs.
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
    /// The failed tests' names, so that the summary (the tail CI shows) says which.
    failures: Vec<String>,
}

fn test() -> Result<()> {
    setup()?;
    // Build once: the binary the end-to-end tests run, then every test target.
    build(false)?;
    let bin = target_dir().join("debug/tollgate");

    let mut steps = Vec::new();
    // The checks: they fail the run, but the tests still run, so one run shows everything.
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    // The fuzz targets are a workspace of their own.
    let mut fmt_fuzz = cargo();
    fmt_fuzz.args([
        "fmt",
        "--check",
        "--manifest-path",
        "gateway-user/fuzz/Cargo.toml",
    ]);
    steps.push(check_step("cargo fmt --check", || {
        run(fmt)?;
        run(fmt_fuzz)
    }));
    let mut clippy = cargo();
    clippy
        .arg("clippy")
        .args(WORKSPACE)
        .args(["--all-targets", "--", "-D", "warnings"]);
    steps.push(check_step("clippy -D warnings", || run(clippy)));
    steps.push(check_step("dependency direction (xtask deps)", deps::check));
    steps.push(check_step(
        "install manifests (kubernetes-validate)",
        manifests::validate_kustomizations,
    ));
    steps.push(check_step(
        "example custom resources vs CRD schemas",
        manifests::validate_custom_resources,
    ));
    steps.push(check_step(
        "model fields vs Gateway API standard channel",
        gateway_api::check,
    ));
    // Unit and property tests, and the eBPF program tests (BPF_PROG_TEST_RUN, root). Tests
    // that need root are #[ignore]d with the reason, so that a plain `cargo test` shows them
    // as skipped; here, as root, they run.
    let mut unit = cargo();
    unit.args(["test", "--no-fail-fast"]).args(WORKSPACE).args([
        "--exclude",
        "tollgate-tests",
        "--",
        "--include-ignored",
    ]);
    steps.push(cargo_test_step(
        "unit, property and eBPF program tests",
        unit,
    ));
    // The fuzz targets, a few seconds each (TOLLGATE_FUZZ_SECONDS), on by default:
    // TOLLGATE_SKIP_FUZZ=1 skips them while developing. They build and run beside the
    // end-to-end tests, which mostly wait on the product's windows and timers (5 of CI's ~30
    // minutes saved), at the lowest CPU priority and with their output in a log printed after.
    let fuzz = if std::env::var_os("TOLLGATE_SKIP_FUZZ").is_some_and(|v| v == "1") {
        eprintln!("xtask: fuzz targets skipped (TOLLGATE_SKIP_FUZZ=1)");
        None
    } else {
        let seconds = std::env::var("TOLLGATE_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(FUZZ_SECONDS);
        let log_path = target_dir().join("fuzz-step.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        eprintln!(
            "xtask: fuzz targets: building and running in the background (log: {})",
            log_path.display()
        );
        let step = std::thread::spawn(move || fuzz_step(seconds, Some(log)));
        Some((step, log_path))
    };
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
    let e2e = cargo_test_step("end-to-end tests (network namespaces)", e2e);
    if let Some((step, log_path)) = fuzz {
        let step = step.join().unwrap_or_else(|_| StepResult {
            name: "fuzz targets (libFuzzer)",
            ok: false,
            elapsed: Duration::ZERO,
            passed: 0,
            failed: 1,
            ignored: 0,
            failures: vec!["(xtask's fuzz thread panicked)".to_string()],
        });
        eprintln!("xtask: the fuzz targets' output ({}):", log_path.display());
        match std::fs::read_to_string(&log_path) {
            Ok(text) => eprint!("{text}"),
            Err(error) => eprintln!("xtask: cannot read {}: {error}", log_path.display()),
        }
        steps.push(step);
    }
    steps.push(e2e);

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
        for failure in &s.failures {
            eprintln!("           failed: {failure}");
        }
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

/// Builds the agent, then runs the conformance test with TOLLGATE_CONFORMANCE_WRITE=1, which
/// writes docs/conformance/report.yaml from this run instead of comparing it with the committed
/// one (what `cargo xtask test` does).
fn conformance() -> Result<()> {
    // The agent's binary is all the run needs (the test target is built by `cargo test`).
    let mut bin = cargo();
    bin.args(["build", "-p", "gateway-user"]);
    run(bin)?;
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "tollgate-tests",
        "--test",
        "conformance",
        "--",
        "--test-threads=1",
    ])
    .env("TOLLGATE_BIN", target_dir().join("debug/tollgate"))
    .env("TOLLGATE_CONFORMANCE_WRITE", "1");
    run(cmd)
}

/// The cargo-fuzz targets of gateway-user/fuzz (see its Cargo.toml).
const FUZZ_TARGETS: &[&str] = &["policy", "http_path", "http_head"];
/// Seconds each fuzz target runs in `cargo xtask test` (TOLLGATE_FUZZ_SECONDS overrides).
const FUZZ_SECONDS: u64 = 10;

/// How `cargo xtask test` builds the fuzz targets: the dev profile of gateway-user/fuzz, which
/// optimises only the crates the inputs go through, and no sanitizer (the code under test has no
/// `unsafe`; an overflow or a bad index still panics). About half the time of cargo-fuzz's
/// default (release, AddressSanitizer) on a cold CI machine, at 1,000 to 100,000 inputs a
/// second. `cargo +nightly fuzz run <target>` by hand keeps the default.
const FUZZ_BUILD: [&str; 3] = ["--dev", "--sanitizer", "none"];

/// Builds the fuzz targets (nightly, `FUZZ_BUILD`; in `<target dir>/fuzz`) and runs each for a few
/// seconds from its committed seeds plus what earlier runs found (kept in
/// `<target dir>/fuzz-corpus`), with its dictionary (gateway-user/fuzz/dicts) if it has one. A crash fails the step; libFuzzer leaves the input in
/// gateway-user/fuzz/artifacts/<target>/ and `cargo +nightly fuzz run <target> <file>`
/// replays it.
fn fuzz_step(seconds: u64, log: Option<std::fs::File>) -> StepResult {
    let name = "fuzz targets (libFuzzer)";
    let started = Instant::now();
    let fuzz_dir = root().join("gateway-user/fuzz");
    let fuzz_target_dir = target_dir().join("fuzz");
    // Where the step's output goes: the terminal, or the log file when it runs beside others.
    let quiet = log_clone(&log);
    let mut log = log;
    let mut say = |line: &str| match log.as_mut() {
        Some(file) => {
            let _ = writeln!(file, "{line}");
        }
        None => eprintln!("{line}"),
    };
    // cargo-fuzz needs the nightly toolchain: ask rustup for it, whatever toolchain runs xtask.
    // In the background, at the lowest CPU priority: the tests beside it keep their timing.
    let fuzz = |args: &[&OsStr]| {
        let mut cmd = if quiet.is_some() {
            Command::new("nice").with_arg("-n19").with_arg("rustup")
        } else {
            Command::new("rustup")
        };
        cmd.env("RUSTUP_SELF_UPDATE", "disable")
            .args(["run", "nightly", "cargo", "fuzz"])
            .args(args)
            .arg("--target-dir")
            .arg(&fuzz_target_dir)
            .current_dir(&fuzz_dir)
            .env_remove("CARGO")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR");
        if let Some(file) = &quiet {
            if let (Ok(out), Ok(err)) = (file.try_clone(), file.try_clone()) {
                cmd.stdout(out).stderr(err);
            }
        }
        cmd
    };
    let mut result = StepResult {
        name,
        ok: false,
        elapsed: Duration::ZERO,
        passed: 0,
        failed: 0,
        ignored: 0,
        failures: Vec::new(),
    };
    let mut build = fuzz(&["build".as_ref()]);
    build.args(FUZZ_BUILD);
    say(&format!("xtask: $ {}", show(&build)));
    match build.status() {
        Ok(status) if status.success() => {}
        outcome => {
            say(&format!("xtask: {name}: the build failed ({outcome:?})"));
            result.failed = FUZZ_TARGETS.len() as u64;
            result.failures.push("(build)".to_string());
            result.elapsed = started.elapsed();
            return result;
        }
    }
    let mut report = Vec::new();
    for target in FUZZ_TARGETS {
        let corpus = target_dir().join("fuzz-corpus").join(target);
        if let Err(error) = std::fs::create_dir_all(&corpus) {
            say(&format!(
                "xtask: {name}: create {}: {error}",
                corpus.display()
            ));
            result.failed += 1;
            result.failures.push((*target).to_string());
            continue;
        }
        let seeds = fuzz_dir.join("corpus").join(target);
        let mut cmd = fuzz(&["run".as_ref()]);
        cmd.args(FUZZ_BUILD).arg(target);
        cmd.arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            // An input that takes this long is a hang, reported as a failure with its input.
            .arg("-timeout=20");
        // The words of the input language, when the target has a dictionary.
        let dict = fuzz_dir.join("dicts").join(format!("{target}.dict"));
        if dict.is_file() {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        cmd.stderr(Stdio::piped());
        say(&format!("xtask: $ {}", show(&cmd)));
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(error) => {
                say(&format!("xtask: cannot start cargo fuzz: {error}"));
                result.failed += 1;
                result.failures.push((*target).to_string());
                continue;
            }
        };
        // libFuzzer reports on stderr; its last line says how many inputs it ran:
        // "Done 39852 runs in 61 second(s)".
        let mut done = None;
        let stderr = child.stderr.take().expect("piped stderr");
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            say(&line);
            if let Some(rest) = line.strip_prefix("Done ") {
                done = Some(rest.to_owned());
            }
        }
        let ok = child.wait().map(|s| s.success()).unwrap_or(false);
        if ok {
            result.passed += 1;
        } else {
            result.failed += 1;
            result.failures.push((*target).to_string());
        }
        report.push(format!(
            "  {target}: {} ({})",
            done.as_deref().unwrap_or("no run count"),
            if ok { "ok" } else { "FAILED" }
        ));
    }
    say("xtask: fuzz runs:");
    for line in &report {
        say(line);
    }
    result.ok = result.failed == 0;
    result.elapsed = started.elapsed();
    result
}

fn log_clone(log: &Option<std::fs::File>) -> Option<std::fs::File> {
    log.as_ref().and_then(|f| f.try_clone().ok())
}

/// Runs a check that passes or fails as a whole.
fn check_step(name: &'static str, check: impl FnOnce() -> Result<()>) -> StepResult {
    let started = Instant::now();
    let ok = match check() {
        Ok(()) => true,
        Err(error) => {
            eprintln!("xtask: {name}: {error:#}");
            false
        }
    };
    StepResult {
        name,
        ok,
        elapsed: started.elapsed(),
        passed: u64::from(ok),
        failed: u64::from(!ok),
        ignored: 0,
        failures: Vec::new(),
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
        failures: Vec::new(),
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
        // "test some::name ... FAILED"
        if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            result.failures.push(name.to_string());
        }
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
