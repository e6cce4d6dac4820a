//! A memory cgroup for one test: the agent runs inside it with the install's memory limit, so
//! that a test can show that hostile input does not get the agent OOM-killed. cgroup v1's
//! memory controller (these machines), or cgroup v2 where the host has it.
use std::fs;
use std::path::{Path, PathBuf};

/// The agent's memory limit in the DaemonSet (manifests/install/base/daemonset.yaml): what the
/// tests hold it to (gateway-user/tests/manifests.rs checks that the two agree).
pub const AGENT_MEMORY_LIMIT: u64 = 512 * 1024 * 1024;

/// Which cgroup hierarchy holds the memory controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A memory cgroup created for a test, removed (its processes killed) when dropped.
#[derive(Debug)]
pub struct MemoryCgroup {
    dir: PathBuf,
    version: Version,
}

impl MemoryCgroup {
    /// Creates `tollgate-test-<tag>-<pid>` with a memory limit of `limit` bytes (and no swap).
    pub fn new(tag: &str, limit: u64) -> MemoryCgroup {
        let (root, version) = if Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            (PathBuf::from("/sys/fs/cgroup/memory"), Version::V1)
        } else if fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
        {
            (PathBuf::from("/sys/fs/cgroup"), Version::V2)
        } else {
            panic!("no cgroup memory controller on this machine (v1 at /sys/fs/cgroup/memory or v2 with memory enabled)");
        };
        let dir = root.join(format!("tollgate-test-{tag}-{}", std::process::id()));
        if dir.exists() {
            let _ = fs::remove_dir(&dir);
        }
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("create cgroup {}: {e}", dir.display()));
        let cg = MemoryCgroup { dir, version };
        match version {
            Version::V1 => {
                cg.write("memory.limit_in_bytes", &limit.to_string());
                // No swap on these machines; where there is, the limit covers it too.
                let _ = fs::write(
                    cg.dir.join("memory.memsw.limit_in_bytes"),
                    limit.to_string(),
                );
            }
            Version::V2 => {
                cg.write("memory.max", &limit.to_string());
                let _ = fs::write(cg.dir.join("memory.swap.max"), "0");
            }
        }
        cg
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        fs::write(&path, value)
            .unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// The file a process writes its pid into to join (for `pre_exec`, before the agent
    /// allocates anything).
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Moves `pid` into the cgroup.
    pub fn add(&self, pid: u32) {
        self.write("cgroup.procs", &pid.to_string());
    }

    /// Processes the kernel's OOM killer ended in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = match self.version {
            Version::V1 => ("memory.oom_control", "oom_kill"),
            Version::V2 => ("memory.events", "oom_kill"),
        };
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The memory the cgroup's processes use now, in bytes (what the OOM killer compares with
    /// the limit: their anonymous memory, page cache and kernel memory such as socket buffers).
    pub fn current(&self) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        };
        self.read(file).trim().parse().unwrap_or(0)
    }

    /// The cgroup's `memory.stat` (where the memory goes: anonymous, page cache, kernel).
    pub fn stat(&self) -> String {
        self.read("memory.stat")
    }

    /// The most memory the cgroup's processes used at once, in bytes (v1; v2 from 5.19 on).
    pub fn peak(&self) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        self.read(file).trim().parse().unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        for pid in self.read("cgroup.procs").lines() {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
