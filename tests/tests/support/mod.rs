//! Helpers shared by the Git source, webhook and signed-commit tests (a module of each test
//! crate that includes it with `mod support;`; not a test target of its own).
#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate_tests::l4_policy;

/// Runs git in `dir` (with an identity, and without signing unless `extra` asks for it);
/// returns its stdout, trimmed. Panics with git's stderr when it fails.
pub fn git_with(dir: &Path, extra: &[&str], args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(extra)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// [`git_with`] without extra settings.
pub fn git(dir: &Path, args: &[&str]) -> String {
    git_with(dir, &[], args)
}

/// Writes `file` and commits it, signed with the SSH key file `signing_key` (by git and
/// ssh-keygen) or unsigned; returns the commit id.
pub fn commit(repo: &Path, file: &str, content: &str, signing_key: Option<&Path>) -> String {
    let path = repo.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    git(repo, &["add", "-A"]);
    match signing_key {
        Some(key) => {
            let key = format!("user.signingkey={}", key.display());
            git_with(
                repo,
                &["-c", "gpg.format=ssh", "-c", &key],
                &["commit", "-q", "-S", "-m", "signed change"],
            )
        }
        None => git(repo, &["commit", "-q", "-m", "change"]),
    };
    git(repo, &["rev-parse", "HEAD"])
}

/// A policy `edge` that denies `cidr` and allows the rest.
pub fn deny(cidr: &str) -> String {
    l4_policy(
        "edge",
        "allow",
        &format!("- name: blocked\n  action: deny\n  from: [{cidr}]\n"),
    )
}

/// An HTTP/1.1 POST to `path` on loopback `port`: status code and body. With `body: None`,
/// only the headers are sent (a `Content-Length` among `headers` announces a body that never
/// comes): the answer to the headers alone.
pub fn post(port: u16, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    if let Some(body) = body {
        s.write_all(body).unwrap();
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The GitHub-style signature header value of `body`: `sha256=<hex HMAC-SHA256>`, computed by
/// the openssl command (an implementation independent of the agent's).
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .trim()
        .rsplit("= ")
        .next()
        .unwrap_or_else(|| panic!("openssl printed {text:?}"));
    assert_eq!(hex.len(), 64, "openssl printed {text:?}");
    format!("sha256={hex}")
}

/// The agent's `/status`.
pub fn status(admin: u16) -> serde_json::Value {
    let (code, body) = tollgate_tests::http_get(admin, "/status", "").expect("admin server");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
}

/// The revision in force, from `/status`.
pub fn applied(admin: u16) -> String {
    status(admin)["applied"]["id"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Waits until `/status` shows `commit` in force; returns how long it took.
pub fn wait_applied(admin: u16, commit: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if applied(admin) == commit {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "{commit} not applied after {timeout:?}; /status: {}",
            status(admin)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A value of the agent's `/metrics` (0 when the series is absent).
pub fn metric(admin: u16, prefix: &str) -> u64 {
    let (_, text) = tollgate_tests::http_get(admin, "/metrics", "").expect("admin server");
    tollgate_tests::metric_value(&text, prefix).unwrap_or(0)
}

/// `git daemon` serving every repository under `base` on loopback `port`; killed on drop.
pub struct Daemon(Child);

impl Daemon {
    /// Starts it and waits until it accepts connections.
    pub fn start(base: &Path, port: u16) -> Daemon {
        // The git-daemon program itself: `git daemon` would leave it running when killed.
        let exec_path = git(base, &["--exec-path"]);
        let daemon = Daemon(
            Command::new(Path::new(&exec_path).join("git-daemon"))
                .args([
                    "--reuseaddr",
                    "--export-all",
                    "--listen=127.0.0.1",
                    &format!("--port={port}"),
                ])
                .arg(format!("--base-path={}", base.display()))
                .arg(base)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("git daemon"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
