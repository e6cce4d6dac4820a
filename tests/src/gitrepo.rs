//! Git helpers for the tests: a working repository driven with the real `git`, and `git daemon`
//! on loopback.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `git ARGS` in `dir` (as user "test", unsigned) and returns its trimmed stdout; panics
/// with git's stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
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

/// Writes `file` (relative to `repo`) and commits everything; returns the commit id.
pub fn commit(repo: &Path, file: &str, content: &str, message: &str) -> String {
    let path = repo.join(file);
    std::fs::create_dir_all(path.parent().expect("a file in a directory")).expect("mkdir");
    std::fs::write(path, content).expect("write");
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
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
