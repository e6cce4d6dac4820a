//! [`Agent`]: the real `tollgate run` a test starts on a lab, its log, and the signals a test
//! sends it. Apart from the lab because it is the process under test, not the network around it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::lab::PID_FILE;
use crate::{cgroup, tollgate_bin, Lab};

/// The real `tollgate run`, started in the root namespace on a lab's root-side veth, with
/// stdout and stderr captured to a file. Dropping it kills it (SIGKILL).
pub struct Agent {
    child: Child,
    log_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Agent {
    /// Starts `tollgate run --interface <lab veth> --source <lab source> --pin-dir <lab pins>
    /// --state-dir <lab state> --log-format text <extra_args>` with [`tollgate_bin`].
    pub fn start(lab: &Lab, extra_args: &[&str]) -> Agent {
        Agent::start_with(&tollgate_bin(), lab, extra_args)
    }

    /// As [`Agent::start`], with extra environment variables (settings read from the
    /// environment, such as a secret named by `--git-password-env`).
    pub fn start_with_env(lab: &Lab, extra_args: &[&str], env: &[(&str, &str)]) -> Agent {
        Agent::spawn(&tollgate_bin(), lab, extra_args, env)
    }

    /// As [`Agent::start`], with another binary (the demo runs the release build).
    pub fn start_with(bin: &Path, lab: &Lab, extra_args: &[&str]) -> Agent {
        Agent::spawn(bin, lab, extra_args, &[])
    }

    /// As [`Agent::start`], inside `cgroup` (moved there as soon as it is started, before it
    /// has read its policy).
    pub fn start_in(cgroup: &cgroup::MemoryCgroup, lab: &Lab, extra_args: &[&str]) -> Agent {
        let agent = Agent::spawn(&tollgate_bin(), lab, extra_args, &[]);
        cgroup.add(agent.pid());
        agent
    }

    fn spawn(bin: &Path, lab: &Lab, extra_args: &[&str], env: &[(&str, &str)]) -> Agent {
        assert!(
            bin.is_file(),
            "no tollgate binary at {} (build it first)",
            bin.display()
        );
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--interface", lab.iface(), "--source"])
            .arg(&lab.source_dir)
            .arg("--pin-dir")
            .arg(&lab.pin_dir)
            .arg("--state-dir")
            .arg(&lab.state_dir)
            .args(["--log-format", "text"])
            .args(extra_args)
            .envs(env.iter().copied());
        Agent::start_command(lab, cmd)
    }

    /// Starts `cmd`, a `tollgate run` the test put together itself (through a wrapper such as
    /// `unshare`, or with other directories), with its output in the lab's next agent log.
    pub fn start_command(lab: &Lab, mut cmd: Command) -> Agent {
        let log_path = lab.next_agent_log();
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("clone the log file");
        cmd.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        // Recorded so that a later run can end this agent if this run is killed.
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(lab.config.base_dir.join(PID_FILE))
        {
            let _ = writeln!(f, "{}", child.id());
        }
        Agent {
            child,
            log_path,
            exited: None,
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The number of log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<(), String> {
        self.wait_for_log_count(needle, 1, timeout)
    }

    /// Waits until at least `count` log lines contain `needle`. Fails early, with the log,
    /// when the agent exits.
    pub fn wait_for_log_count(
        &mut self,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_count(needle) >= count {
                return Ok(());
            }
            if !self.is_running() {
                return Err(format!(
                    "the agent exited ({:?}) before logging {count} x {needle:?}; its log:\n{}",
                    self.exited,
                    self.log()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no {count} x {needle:?} in the agent's log after {timeout:?}; its log:\n{}",
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: plain kill(2) on our own child, which has not been reaped (is_running checks).
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        if self.is_running() {
            self.signal(libc::SIGKILL);
        }
        if let Ok(status) = self.child.wait() {
            self.exited.get_or_insert(status);
        }
    }

    /// SIGTERM, and wait at most `timeout` for it to exit.
    pub fn sigterm(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.is_running() {
            self.signal(libc::SIGTERM);
        }
        self.wait_exit(timeout)
    }

    /// SIGHUP: re-read the source directory now.
    pub fn sighup(&mut self) {
        assert!(
            self.is_running(),
            "SIGHUP to an agent that has exited:\n{}",
            self.log()
        );
        self.signal(libc::SIGHUP);
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.exited
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- last lines of the agent's log ({}):",
                self.log_path.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            eprintln!("---");
        }
        self.kill9();
    }
}
