//! Developer automation for Tollgate: `cargo xtask <command>` (the alias is in
//! `.cargo/config.toml`). It runs things; it does not hide the build: the eBPF programs are
//! built by `gateway-user/dataplane/build.rs`, so a plain `cargo build` builds everything.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod demo;
mod deps;
mod gateway_api;
mod image;
mod manifests;
mod testing;

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
        #[arg(long, default_value_t = testing::FUZZ_SECONDS)]
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
        Cmd::Test => testing::test(),
        Cmd::Demo => demo::demo(),
        Cmd::Bench => bench(),
        Cmd::Deps => deps::check(),
        Cmd::Fuzz { seconds } => ensure_cargo_fuzz().and_then(|()| {
            let step = testing::fuzz_step(seconds, None);
            if step.ok {
                Ok(())
            } else {
                bail!("{} fuzz target(s) failed", step.failed)
            }
        }),
        Cmd::Crds => crds(),
        Cmd::Conformance => testing::conformance(),
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
