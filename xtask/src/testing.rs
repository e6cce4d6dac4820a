//! `cargo xtask test` (the checks, then every test level, with a summary that names what
//! failed), `cargo xtask fuzz` and `cargo xtask conformance`.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{
    build, cargo, deps, gateway_api, manifests, root, run, rustup, setup, show, target_dir,
    WORKSPACE,
};

/// The outcome of one step of `cargo xtask test`.
pub struct StepResult {
    name: &'static str,
    pub ok: bool,
    elapsed: Duration,
    passed: u64,
    pub failed: u64,
    ignored: u64,
    /// The failed tests' names, so that the summary (the tail CI shows) says which.
    failures: Vec<String>,
}

impl StepResult {
    /// Nothing run yet.
    fn new(name: &'static str) -> Self {
        StepResult {
            name,
            ok: false,
            elapsed: Duration::ZERO,
            passed: 0,
            failed: 0,
            ignored: 0,
            failures: Vec::new(),
        }
    }

    /// A step that passes or fails as a whole, started at `started`.
    fn whole(name: &'static str, ok: bool, started: Instant) -> Self {
        StepResult {
            ok,
            elapsed: started.elapsed(),
            passed: u64::from(ok),
            failed: u64::from(!ok),
            ..StepResult::new(name)
        }
    }
}

pub fn test() -> Result<()> {
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
    // End-to-end tests: network namespaces and the real binary; one at a time, as they
    // attach programs and change routes. Built first: what runs beside them needs cargo's
    // lock on the target dir, which a build holds and a test run does not.
    let e2e_started = Instant::now();
    let e2e = e2e_commands(&bin);
    // Beside the end-to-end tests, which mostly wait on the product's own windows and timers:
    // clippy and the fuzz targets, CPU work that nothing times, at the lowest CPU priority
    // (the tests keep their timing), each with its output in a log printed after the tests.
    let mut beside = Vec::new();
    let mut clippy = cargo();
    clippy
        .arg("clippy")
        .args(WORKSPACE)
        .args(["--all-targets", "--", "-D", "warnings"]);
    beside.push(Beside::start("clippy -D warnings", "clippy", move |log| {
        command_step("clippy -D warnings", niced(clippy), log)
    })?);
    // The fuzz targets, a few seconds each (TOLLGATE_FUZZ_SECONDS), on by default:
    // TOLLGATE_SKIP_FUZZ=1 skips them while developing.
    if std::env::var_os("TOLLGATE_SKIP_FUZZ").is_some_and(|v| v == "1") {
        eprintln!("xtask: fuzz targets skipped (TOLLGATE_SKIP_FUZZ=1)");
    } else {
        let seconds = std::env::var("TOLLGATE_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(FUZZ_SECONDS);
        beside.push(Beside::start(FUZZ_STEP, "fuzz", move |log| {
            fuzz_step(seconds, Some(log))
        })?);
    }
    const E2E: &str = "end-to-end tests (network namespaces)";
    let e2e = match e2e {
        Ok(cmds) => test_step(E2E, cmds, e2e_started),
        Err(error) => {
            eprintln!("xtask: {E2E}: {error:#}");
            StepResult {
                failures: vec!["(their build)".to_string()],
                ..StepResult::whole(E2E, false, e2e_started)
            }
        }
    };
    for step in beside {
        steps.push(step.finish());
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
pub fn conformance() -> Result<()> {
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
const FUZZ_TARGETS: &[&str] = &["policy", "http_path", "http_head", "backend_response"];
/// Seconds each fuzz target runs in `cargo xtask test` (TOLLGATE_FUZZ_SECONDS overrides).
pub const FUZZ_SECONDS: u64 = 10;

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
pub fn fuzz_step(seconds: u64, log: Option<std::fs::File>) -> StepResult {
    let name = FUZZ_STEP;
    let started = Instant::now();
    let fuzz_dir = root().join("gateway-user/fuzz");
    let fuzz_target_dir = target_dir().join("fuzz");
    // Where the step's output goes: the terminal, or the log file when it runs beside others.
    let quiet = log.as_ref().and_then(|f| f.try_clone().ok());
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
        let mut cmd = rustup();
        cmd.args(["run", "nightly", "cargo", "fuzz"])
            .args(args)
            .arg("--target-dir")
            .arg(&fuzz_target_dir)
            .current_dir(&fuzz_dir)
            .env_remove("CARGO")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR");
        if let Some(file) = &quiet {
            cmd = niced(cmd);
            if let (Ok(out), Ok(err)) = (file.try_clone(), file.try_clone()) {
                cmd.stdout(out).stderr(err);
            }
        }
        cmd
    };
    let mut result = StepResult::new(name);
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

const FUZZ_STEP: &str = "fuzz targets (libFuzzer)";

/// A step running on a thread of its own beside the end-to-end tests, its output in a log.
struct Beside {
    name: &'static str,
    thread: std::thread::JoinHandle<StepResult>,
    log: PathBuf,
}

impl Beside {
    fn start(
        name: &'static str,
        slug: &str,
        step: impl FnOnce(std::fs::File) -> StepResult + Send + 'static,
    ) -> Result<Self> {
        let log = target_dir().join(format!("xtask-{slug}.log"));
        let file =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        eprintln!(
            "xtask: {name}: running beside the end-to-end tests (log: {})",
            log.display()
        );
        Ok(Self {
            name,
            thread: std::thread::spawn(move || step(file)),
            log,
        })
    }

    /// Waits for the step, then prints its log.
    fn finish(self) -> StepResult {
        let result = self.thread.join().unwrap_or_else(|_| StepResult {
            failures: vec!["(its xtask thread panicked)".to_string()],
            ..StepResult::whole(self.name, false, Instant::now())
        });
        eprintln!("xtask: {}: its output ({}):", self.name, self.log.display());
        match std::fs::read_to_string(&self.log) {
            Ok(text) => eprint!("{text}"),
            Err(error) => eprintln!("xtask: cannot read {}: {error}", self.log.display()),
        }
        result
    }
}

/// The same command at the lowest CPU priority (`nice -n19`).
fn niced(cmd: Command) -> Command {
    let mut niced = Command::new("nice");
    niced
        .arg("-n19")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        niced.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => niced.env(key, value),
            None => niced.env_remove(key),
        };
    }
    niced
}

/// Runs a command that passes or fails as a whole, its output to `log`.
fn command_step(name: &'static str, mut cmd: Command, mut log: std::fs::File) -> StepResult {
    check_step(name, move || {
        let _ = writeln!(log, "xtask: $ {}", show(&cmd));
        cmd.stderr(log.try_clone()?);
        let status = cmd.stdout(log).status()?;
        if !status.success() {
            bail!("failed ({status})");
        }
        Ok(())
    })
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
    StepResult::whole(name, ok, started)
}

/// Runs `cargo test ...`, streaming its output, and adds up its "test result:" lines.
fn cargo_test_step(name: &'static str, cmd: Command) -> StepResult {
    test_step(name, vec![cmd], Instant::now())
}

/// Runs test commands one after the other (all of them, whatever fails), streaming their
/// output, and adds up their "test result:" lines.
fn test_step(name: &'static str, cmds: Vec<Command>, started: Instant) -> StepResult {
    let mut result = StepResult {
        ok: true,
        ..StepResult::new(name)
    };
    for mut cmd in cmds {
        eprintln!("xtask: {name}: $ {}", show(&cmd));
        let mut child = match cmd.stdout(Stdio::piped()).spawn() {
            Ok(child) => child,
            Err(error) => {
                eprintln!("xtask: cannot start {}: {error}", show(&cmd));
                result.ok = false;
                continue;
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
        if !child.wait().map(|s| s.success()).unwrap_or(false) {
            result.ok = false;
        }
    }
    result.elapsed = started.elapsed();
    result
}

/// Builds the end-to-end tests (`cargo test --no-run`: cargo holds its lock on the target
/// dir for this only) and returns a command per test binary, in cargo's order (the library's
/// own tests, then the test targets by name), each run as `cargo test` would: from the
/// package's directory, one test at a time.
fn e2e_commands(bin: &Path) -> Result<Vec<Command>> {
    let mut build = cargo();
    build.args([
        "test",
        "--no-run",
        "-p",
        "tollgate-tests",
        "--message-format=json-render-diagnostics",
    ]);
    eprintln!("xtask: $ {}", show(&build));
    let out = build
        .stdout(Stdio::piped())
        .output()
        .context("cannot start cargo")?;
    if !out.status.success() {
        bail!("the end-to-end tests do not build ({})", out.status);
    }
    let mut targets = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = message["executable"].as_str() else {
            continue;
        };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        let lib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "lib"));
        targets.push((!lib, name.to_string(), PathBuf::from(exe)));
    }
    if targets.is_empty() {
        bail!("cargo listed no end-to-end test binary");
    }
    targets.sort();
    let dir = root().join("tests");
    Ok(targets
        .into_iter()
        .map(|(_, _, exe)| {
            let mut cmd = Command::new(exe);
            cmd.arg("--test-threads=1")
                .current_dir(&dir)
                .env("CARGO_MANIFEST_DIR", &dir)
                .env("TOLLGATE_BIN", bin);
            cmd
        })
        .collect())
}
