//! Helpers for Tollgate's privileged end-to-end tests (network namespaces, real packets, the real binary; docs/testing.md).
//!
//! A [`Lab`] is one throw-away network namespace joined to the root namespace by a veth pair,
//! with its own addresses, its own bpffs (so pins never mix with another lab's or the host's)
//! and its own state and source directories. The agent ([`Agent`]) runs the real `tollgate`
//! binary in the ROOT namespace, attached to the root-side end of the pair: `ip netns exec`
//! gives a fresh `/sys`, so a bpffs mounted in the root namespace would not be visible from
//! inside a test namespace. Test traffic is sent from inside the namespace towards the root-side
//! address, and listeners for it live in the test process itself (which is in the root namespace).
//!
//! Everything a lab creates is removed in `Drop`, also when the test panics, and a stale lab with
//! the same name left by a killed earlier run is removed before a new one is built.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub mod admin;
pub mod cgroup;
pub mod cluster_limits;
pub mod conformance;
pub mod gitrepo;
pub mod gitserver;
pub mod kube_controller;
pub mod kube_fake;
pub mod l7;
pub mod l7_raw;

mod agent;
mod counters;
mod lab;
mod traffic;

pub use admin::{http_get, metric_value};
pub use agent::Agent;
pub use counters::Counters;
pub use lab::{Lab, LabConfig};
pub use traffic::{parse_sent, Connect, PingStats, TcpServer, UdpCounter};

/// Debian's python3. `python3-scapy` is installed for it, and a pyenv shim earlier on `PATH`
/// may point at another interpreter without it.
pub const PYTHON: &str = "/usr/bin/python3";

/// True when the process runs as root (every test here needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails the test, loudly and with the reason, when it does not run as root: every test here
/// creates network namespaces, veths and eBPF programs, and one that "passed" without doing so
/// would say nothing. (This crate is outside the workspace's default members: a plain
/// `cargo test` does not run it; `cargo xtask test` does, as root.)
#[macro_export]
macro_rules! require_root {
    () => {
        assert!(
            $crate::is_root(),
            "this end-to-end test needs root (network namespaces, veth pairs, eBPF): run it as root, e.g. `sudo -E cargo xtask test`"
        );
    };
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// The `tollgate` binary under test: `$TOLLGATE_BIN`, else the one built beside this test
/// executable (`<target>/debug/tollgate`, which follows `CARGO_TARGET_DIR`), else
/// `<workspace>/target/debug/tollgate`.
pub fn tollgate_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TOLLGATE_BIN") {
        return PathBuf::from(bin);
    }
    // A test executable lives in <target>/<profile>/deps/.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            let candidate = profile_dir.join("tollgate");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    workspace_root().join("target/debug/tollgate")
}

/// Runs a command to completion; panics (with the command line) only if it cannot be started.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{program} {}`: {e}", args.join(" ")))
}

/// Runs a command and returns its stdout; panics with its stderr when it fails.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    if !out.status.success() {
        panic!(
            "`{program} {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command for cleanup: failures are expected (the thing may already be gone) and ignored.
pub(crate) fn run_quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Formats an `L4Policy` document (the helpers below keep the tests' policies short).
/// The value a test stores under a Secret or ConfigMap data key: for the keys read as PEM
/// (`tls.crt`, `ca.crt`: a certificate; `tls.key`: a private key) `marker` wrapped in a PEM
/// block of that kind, which the sources take as well-formed (they read PEM blocks, not the
/// DER inside); other keys as they are.
pub fn pem_of(key: &str, marker: &str) -> String {
    use base64::Engine as _;
    let label = match key {
        "tls.crt" | "ca.crt" => "CERTIFICATE",
        "tls.key" => "PRIVATE KEY",
        _ => return marker.to_owned(),
    };
    let body = base64::engine::general_purpose::STANDARD.encode(marker);
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
}

pub fn l4_policy(name: &str, default_action: &str, rules_yaml: &str) -> String {
    let mut doc = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: L4Policy\nmetadata:\n  name: {name}\nspec:\n  mode: enforce\n  defaultAction: {default_action}\n"
    );
    if rules_yaml.trim().is_empty() {
        doc.push_str("  rules: []\n");
    } else {
        doc.push_str("  rules:\n");
        for line in rules_yaml.trim_matches('\n').lines() {
            doc.push_str("    ");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    doc
}

/// How long tests wait for the agent to enforce a revision.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The log line the agent prints once a revision is enforced.
pub const POLICY_APPLIED: &str = "policy applied";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents_indent_their_rules() {
        let doc = l4_policy(
            "p",
            "allow",
            "- name: r\n  action: deny\n  from: [203.0.113.0/24]\n",
        );
        assert!(
            doc.contains("  rules:\n    - name: r\n      action: deny\n"),
            "{doc}"
        );
    }
}
