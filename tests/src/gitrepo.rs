//! Git helpers for the tests: a working repository driven with the real `git`, and `git daemon`
//! on loopback.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::l4_policy;

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

/// `git daemon` serving every repository under a base directory on 127.0.0.1, killed on drop.
pub struct GitDaemon {
    child: Child,
    base: PathBuf,
    port: u16,
}

impl GitDaemon {
    /// Starts it and waits until it accepts connections. Any daemon left on `port` by an earlier,
    /// killed run is stopped first.
    pub fn start(base: &Path, port: u16) -> GitDaemon {
        // The git-daemon program itself: `git daemon` would leave it running when killed.
        let exec_path = git(base, &["--exec-path"]);
        let _ = Command::new("pkill")
            .args(["-f", &format!("git-daemon.*--port={port}")])
            .status();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
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
            .expect("git daemon");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon {
            child,
            base: base.to_owned(),
            port,
        }
    }

    /// The `git://` URL of the repository `name` under the base directory.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// Stops it (the server going down); [`GitDaemon::start`] again brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The directory it serves.
    pub fn base(&self) -> &Path {
        &self.base
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
    }
}
