//! The bpffs under the pin directory. Pins need a BPF file system; a plain host (no
//! container runtime, no systemd unit that mounts one) has an empty `/sys/fs/bpf`. Like
//! Cilium's agent, Tollgate then mounts one itself, where it belongs:
//!
//! - a pin directory under `/sys/fs/bpf` gets a bpffs mounted at `/sys/fs/bpf`, the system's
//!   place for it, so `bpftool` and other tools find the pins where they look;
//! - any other pin directory gets one mounted at its parent (`--pin-dir /run/tg/bpf/tollgate`:
//!   at `/run/tg/bpf`), which is created if missing.
//!
//! It mounts only over an empty directory: mounting over one that holds files would hide them
//! (say `--pin-dir /run/tollgate`, whose parent is `/run`). Otherwise it refuses with one line
//! that says what to run.
use std::path::{Path, PathBuf};

/// The file system magic of bpffs (`BPF_FS_MAGIC`, include/uapi/linux/magic.h).
pub const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where the system keeps its bpffs.
pub const SYSTEM_BPFFS: &str = "/sys/fs/bpf";

/// Why no bpffs could be had under the pin directory.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    /// The mount point holds files that a mount would hide.
    #[error("the pin directory {pin_dir} is not on a bpffs, and {mount_point} is not empty, so Tollgate will not mount one over it: run `mount -t bpf bpf {mount_point}` if that is right, or choose another --pin-dir")]
    NotEmpty {
        /// `--pin-dir`.
        pin_dir: String,
        /// Where a bpffs would go.
        mount_point: String,
    },
    /// The mount (or a look at the file system) failed.
    #[error("the pin directory {pin_dir} is not on a bpffs, and mounting one at {mount_point} failed ({source}): run `mount -t bpf bpf {mount_point}`, or choose another --pin-dir")]
    Mount {
        /// `--pin-dir`.
        pin_dir: String,
        /// Where a bpffs would go.
        mount_point: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Where a bpffs for `pin_dir` is mounted when there is none (see the module comment).
pub fn mount_point_for(pin_dir: &Path) -> PathBuf {
    let system = Path::new(SYSTEM_BPFFS);
    if pin_dir.starts_with(system) {
        return system.to_owned();
    }
    match pin_dir.parent() {
        Some(parent) if parent != Path::new("") => parent.to_owned(),
        _ => pin_dir.to_owned(),
    }
}

/// The file system type (`statfs` magic) of `path`, or of its nearest existing ancestor.
fn fs_type(path: &Path) -> std::io::Result<i64> {
    let mut at = path;
    loop {
        match nix::sys::statfs::statfs(at) {
            // `__fsword_t` is i64 on x86_64 and narrower on some other targets.
            #[allow(clippy::unnecessary_cast)]
            Ok(s) => return Ok(s.filesystem_type().0 as i64),
            Err(nix::errno::Errno::ENOENT) => match at.parent() {
                Some(parent) => at = parent,
                None => return Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
            },
            Err(e) => return Err(e.into()),
        }
    }
}

/// Makes sure `pin_dir` is (or will be, once created) on a bpffs: returns `Ok(None)` when it
/// already is, `Ok(Some(mount point))` when a bpffs was mounted there now.
pub fn ensure(pin_dir: &Path) -> Result<Option<PathBuf>, BpffsError> {
    let mount_point = mount_point_for(pin_dir);
    let failed = |source: std::io::Error| BpffsError::Mount {
        pin_dir: pin_dir.display().to_string(),
        mount_point: mount_point.display().to_string(),
        source,
    };
    if fs_type(pin_dir).map_err(failed)? == BPF_FS_MAGIC {
        return Ok(None);
    }
    if mount_point != Path::new(SYSTEM_BPFFS) {
        // /sys/fs/bpf is made by the kernel (sysfs); anywhere else, the directory may not be
        // there yet.
        std::fs::create_dir_all(&mount_point).map_err(failed)?;
    }
    let empty = std::fs::read_dir(&mount_point)
        .map_err(failed)?
        .next()
        .is_none();
    if !empty {
        return Err(BpffsError::NotEmpty {
            pin_dir: pin_dir.display().to_string(),
            mount_point: mount_point.display().to_string(),
        });
    }
    nix::mount::mount(
        Some("bpf"),
        &mount_point,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|e| failed(e.into()))?;
    Ok(Some(mount_point))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_dir_under_sys_fs_bpf_gets_the_system_bpffs() {
        assert_eq!(
            mount_point_for(Path::new("/sys/fs/bpf/tollgate")),
            Path::new("/sys/fs/bpf")
        );
        assert_eq!(
            mount_point_for(Path::new("/sys/fs/bpf/a/b")),
            Path::new("/sys/fs/bpf")
        );
    }

    #[test]
    fn any_other_pin_dir_gets_one_at_its_parent() {
        assert_eq!(
            mount_point_for(Path::new("/run/tg/bpf/tollgate")),
            Path::new("/run/tg/bpf")
        );
        assert_eq!(mount_point_for(Path::new("pins")), Path::new("pins"));
    }

    #[test]
    fn a_directory_that_holds_files_is_never_mounted_over() {
        // A temporary directory is not a bpffs, and its parent (/tmp) is not empty.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep"), b"x").unwrap();
        let pin_dir = dir.path().join("tollgate");
        match ensure(&pin_dir) {
            Err(BpffsError::NotEmpty { mount_point, .. }) => {
                assert_eq!(mount_point, dir.path().display().to_string())
            }
            other => panic!("{other:?}"),
        }
    }
}
