//! `cargo xtask image`: the agent's OCI image, built without a container daemon or a registry.
//!
//! The root file system is made from scratch, distroless-style: the release binary, the shared
//! libraries it links (as `ldd` lists them: the C library, libgcc_s, the dynamic loader), the CA
//! certificates, an `/etc/passwd` and `/etc/group` with `root` and `nonroot` (65532), a minimal
//! `/etc/nsswitch.conf`, an empty `/tmp`. Nothing else: no shell, no package manager. It goes
//! into one layer (GNU tar, sorted, owned by root, dated at the commit), umoci turns it into an
//! OCI image layout, and the layout is written as an OCI archive
//! (`target/image/tollgate-<version>.oci.tar`) that `skopeo copy oci-archive:...` pushes.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::{cargo, command, probe, root, run, target_dir, WithArg};

/// The Debian packages the image build needs: umoci (the OCI layout), tar (the layer), the CA
/// certificates that go into the image, and skopeo to push the archive (docs/install.md).
pub const PACKAGES: &[&str] = &["umoci", "skopeo", "tar", "ca-certificates"];

/// The workspace version: the image's tag, and the tag the manifests name.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the agent is in the image.
pub const BINARY_IN_IMAGE: &str = "/usr/bin/tollgate";

/// The image's default user: `nonroot` (uid 65532, as distroless names it). The agent's
/// DaemonSet runs it as root without root's powers (capabilities dropped but a few); every
/// other use of the image (`tollgate validate` in CI, say) needs no privilege at all.
pub const IMAGE_USER: &str = "65532:65532";

/// Where the CA certificates are, on the build host (Debian's ca-certificates) and in the image.
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

const PASSWD: &str = "root:x:0:0:root:/root:/sbin/nologin\n\
                      nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnonroot:x:65532:\n";
// Without this file glibc asks DNS before /etc/hosts.
const NSSWITCH: &str = "hosts: files dns\n";

/// The archive `cargo xtask image` writes.
pub fn archive_path() -> PathBuf {
    target_dir()
        .join("image")
        .join(format!("tollgate-{VERSION}.oci.tar"))
}

/// Builds the release binary, then the image; prints how to push it.
pub fn image() -> Result<()> {
    missing_tools()?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "gateway-user",
        "--bin",
        "tollgate",
    ]);
    run(build)?;
    let binary = target_dir().join("release/tollgate");
    let archive = archive_path();
    assemble(&binary, &archive, &target_dir().join("image/work"))?;
    let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "xtask image: wrote {} ({:.1} MiB), tag {VERSION}\n\
         push it with: skopeo copy oci-archive:{}:{VERSION} docker://REGISTRY/tollgate:{VERSION}\n\
         and name it in manifests/install/base/kustomization.yaml (images: newName: REGISTRY/tollgate)",
        archive.display(),
        size as f64 / (1024.0 * 1024.0),
        archive.display()
    );
    Ok(())
}

/// An error naming the tools that are missing, and what installs them.
fn missing_tools() -> Result<()> {
    let missing: Vec<&str> = [("umoci", "--version"), ("tar", "--version")]
        .into_iter()
        .filter(|(tool, arg)| probe(tool, &[arg]).is_none())
        .map(|(tool, _)| tool)
        .collect();
    ensure!(
        missing.is_empty() && Path::new(CA_BUNDLE).is_file(),
        "the image build needs {} and {CA_BUNDLE}: run `cargo xtask setup` (Debian packages {})",
        missing.join(", "),
        PACKAGES.join(" ")
    );
    Ok(())
}

/// Builds the image of `binary` into the OCI archive `archive`, using `work` (emptied first)
/// for the root file system, the layer and the layout.
pub fn assemble(binary: &Path, archive: &Path, work: &Path) -> Result<()> {
    ensure!(
        binary.is_file(),
        "no binary at {} (build it first)",
        binary.display()
    );
    if work.exists() {
        std::fs::remove_dir_all(work).with_context(|| format!("empty {}", work.display()))?;
    }
    let rootfs = work.join("rootfs");
    std::fs::create_dir_all(&rootfs).with_context(|| format!("create {}", rootfs.display()))?;
    let epoch = source_date_epoch();
    let root_dir = root().display().to_string();
    let revision = probe("git", &["-C", root_dir.as_str(), "rev-parse", "HEAD"])
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();

    stage_rootfs(binary, &rootfs)?;

    // The layer: sorted, owned by root, dated at the commit, so that one commit gives one
    // layer digest.
    let layer = work.join("layer.tar");
    let mut tar = tar_command(&layer, epoch);
    tar.arg("-C").arg(&rootfs);
    let mut top: Vec<String> = std::fs::read_dir(&rootfs)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    top.sort();
    tar.args(&top);
    run(tar)?;

    let layout = work.join("layout");
    let image = format!("{}:{VERSION}", layout.display());
    let created = iso8601(epoch);
    run(command("umoci", ["init", "--layout"]).with_arg(&layout))?;
    run(command("umoci", ["new", "--image", image.as_str()]))?;
    run(command(
        "umoci",
        [
            "raw",
            "add-layer",
            "--image",
            image.as_str(),
            "--history.created",
            created.as_str(),
            "--history.created_by",
            "cargo xtask image",
        ],
    )
    .with_arg(&layer))?;
    let ssl_cert_file = format!("SSL_CERT_FILE={CA_BUNDLE}");
    let mut config = command(
        "umoci",
        [
            "config",
            "--image",
            image.as_str(),
            "--created",
            created.as_str(),
            "--architecture",
            "amd64",
            "--os",
            "linux",
            "--no-history",
            "--config.user",
            IMAGE_USER,
            "--config.entrypoint",
            BINARY_IN_IMAGE,
            "--config.cmd",
            "--help",
            "--config.env",
            "PATH=/usr/bin",
            // The vendored OpenSSL of the Git client looks for CAs under its own prefix;
            // point it at the image's bundle.
            "--config.env",
            ssl_cert_file.as_str(),
            "--config.workingdir",
            "/",
        ],
    );
    for (key, value) in labels(&created, &revision) {
        config
            .arg("--config.label")
            .arg(format!("{key}={value}"))
            .arg("--manifest.annotation")
            .arg(format!("{key}={value}"));
    }
    run(config)?;
    // umoci leaves the blob of the image it replaced; gc keeps the archive to the one image.
    run(command("umoci", ["gc", "--layout"]).with_arg(&layout))?;

    if let Some(dir) = archive.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    // An OCI archive is a tar of the layout (oci-layout, index.json, blobs/).
    let mut tar = tar_command(archive, epoch);
    tar.arg("-C")
        .arg(&layout)
        .args(["oci-layout", "index.json", "blobs"]);
    run(tar)?;
    Ok(())
}

/// The image's labels (also the manifest's annotations), in the OCI image spec's names.
fn labels(created: &str, revision: &str) -> Vec<(&'static str, String)> {
    let mut labels = vec![
        ("org.opencontainers.image.title", "tollgate".to_owned()),
        (
            "org.opencontainers.image.description",
            "Tollgate, a node-level API gateway: XDP L4 policy and an L7 proxy, policy from Git or Kubernetes".to_owned(),
        ),
        ("org.opencontainers.image.version", VERSION.to_owned()),
        ("org.opencontainers.image.created", created.to_owned()),
        // The eBPF programs are MIT OR GPL-2.0 (GPL-only helpers), the rest MIT OR Apache-2.0.
        (
            "org.opencontainers.image.licenses",
            "(MIT OR Apache-2.0) AND (MIT OR GPL-2.0)".to_owned(),
        ),
    ];
    if !revision.is_empty() {
        labels.push(("org.opencontainers.image.revision", revision.to_owned()));
    }
    labels
}

/// `tar` writing `out`, deterministic: sorted names, root owner, one date, no access times.
fn tar_command(out: &Path, epoch: u64) -> Command {
    let mut tar = Command::new("tar");
    tar.args([
        "--create",
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--format=posix",
        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
    ])
    .arg(format!("--mtime=@{epoch}"))
    .arg("--file")
    .arg(out);
    tar
}

/// Copies the binary, its libraries and the few files of `/etc` into `rootfs`.
fn stage_rootfs(binary: &Path, rootfs: &Path) -> Result<()> {
    let put = |path: &str, mode: u32, from: Option<&Path>, content: &str| -> Result<()> {
        let dest = rootfs.join(path.trim_start_matches('/'));
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        match from {
            Some(src) => {
                std::fs::copy(src, &dest)
                    .with_context(|| format!("copy {} to {}", src.display(), dest.display()))?;
            }
            None => std::fs::write(&dest, content)
                .with_context(|| format!("write {}", dest.display()))?,
        }
        set_mode(&dest, mode)
    };
    put(BINARY_IN_IMAGE, 0o755, Some(binary), "")?;
    for lib in shared_libraries(binary)? {
        // std::fs::copy follows symbolic links: the image gets the file under the name the
        // loader asks for.
        put(&lib.to_string_lossy(), 0o755, Some(&lib), "")?;
    }
    put(CA_BUNDLE, 0o644, Some(Path::new(CA_BUNDLE)), "")?;
    put("/etc/passwd", 0o644, None, PASSWD)?;
    put("/etc/group", 0o644, None, GROUP)?;
    put("/etc/nsswitch.conf", 0o644, None, NSSWITCH)?;
    let tmp = rootfs.join("tmp");
    std::fs::create_dir_all(&tmp)?;
    set_mode(&tmp, 0o1777)?;
    let home = rootfs.join("home/nonroot");
    std::fs::create_dir_all(&home)?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The shared libraries `binary` loads, the dynamic loader included, as absolute paths.
pub fn shared_libraries(binary: &Path) -> Result<BTreeSet<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot start ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static binary: "not a dynamic executable" (on stderr), and nothing to copy.
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not a dynamic executable") {
            return Ok(BTreeSet::new());
        }
        bail!("ldd {} failed: {}", binary.display(), err.trim());
    }
    parse_ldd(&text)
}

/// Reads `ldd`'s lines: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)` and `linux-vdso.so.1 (0x...)` (in the kernel, skipped).
fn parse_ldd(text: &str) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("=> not found") {
            bail!("ldd: a library is missing on this host: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Seconds since the epoch the image is dated at: `$SOURCE_DATE_EPOCH`, else the commit's
/// time, else 0 (the same inputs always give the same image).
fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .or_else(|| {
            let root_dir = root().display().to_string();
            probe(
                "git",
                &["-C", root_dir.as_str(), "log", "-1", "--format=%ct"],
            )
            .and_then(|s| s.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `epoch` as RFC 3339 UTC (`2026-12-04T11:50:00Z`), the form the OCI image spec wants.
fn iso8601(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_the_libraries_and_the_loader_but_not_the_vdso() {
        let libs = parse_ldd(
            "\tlinux-vdso.so.1 (0x00007ffd1b5f2000)\n\
             \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0e1c9d4000)\n\
             \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c7f3000)\n\
             \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1d9a2000)\n",
        )
        .unwrap();
        let libs: Vec<&str> = libs.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
    }

    /// A JSON blob of the layout, by its digest (`sha256:<hex>`).
    fn blob(layout: &Path, digest: &str) -> serde_json::Value {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        let path = layout.join("blobs/sha256").join(hex);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn ok(cmd: &mut Command) -> String {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The image as `cargo xtask image` makes it, from the binary `cargo xtask test` built
    /// (the release one when there is one): its archive unpacks with umoci, `tollgate
    /// --version` runs from its root file system alone (chroot), as root and as the image's
    /// user, and its config names the entrypoint, the user and the labels.
    #[test]
    #[ignore = "needs root (chroot), umoci and a built tollgate binary; cargo xtask test runs it"]
    fn the_image_runs_tollgate_from_its_own_root_file_system() {
        let binary = std::env::var_os("TOLLGATE_BIN")
            .map(PathBuf::from)
            .into_iter()
            .chain([
                target_dir().join("release/tollgate"),
                target_dir().join("debug/tollgate"),
            ])
            .find(|p| p.is_file())
            .expect("no tollgate binary: cargo build -p gateway-user first");
        let dir = target_dir().join("image-test");
        let _ = std::fs::remove_dir_all(&dir);
        let archive = dir.join("tollgate.oci.tar");
        assemble(&binary, &archive, &dir.join("work"))
            .unwrap_or_else(|e| panic!("build the image of {}: {e:#}", binary.display()));

        // Unpack as a user of the archive would: the archive is a plain tar of the layout.
        let layout = dir.join("layout");
        std::fs::create_dir_all(&layout).unwrap();
        ok(Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout));
        let bundle = dir.join("bundle");
        ok(Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:{VERSION}", layout.display()))
            .arg(&bundle));
        let rootfs = bundle.join("rootfs");

        let version = ok(Command::new("chroot")
            .arg(&rootfs)
            .args([BINARY_IN_IMAGE, "--version"]));
        assert_eq!(version.trim(), format!("tollgate {VERSION}"));
        // As the image's own user, a real command: validate the example policy.
        std::fs::copy(
            root().join("examples/edge.yaml"),
            rootfs.join("tmp/edge.yaml"),
        )
        .unwrap();
        ok(Command::new("chroot")
            .arg(format!("--userspec={IMAGE_USER}"))
            .arg(&rootfs)
            .args([BINARY_IN_IMAGE, "validate", "/tmp/edge.yaml"]));

        // Nothing but the binary, its libraries and /etc's few files.
        let mut files = Vec::new();
        let mut stack = vec![rootfs.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    files.push(path.strip_prefix(&rootfs).unwrap().display().to_string());
                }
            }
        }
        files.retain(|f| f != "tmp/edge.yaml");
        for f in &files {
            assert!(
                f == "usr/bin/tollgate"
                    || f.starts_with("etc/")
                    || f.starts_with("lib/")
                    || f.starts_with("lib64/"),
                "unexpected file in the image: {f}"
            );
        }
        assert!(files
            .iter()
            .any(|f| f == "etc/ssl/certs/ca-certificates.crt"));
        assert!(!files
            .iter()
            .any(|f| f.ends_with("/sh") || f.ends_with("/bash")));

        // The config: entrypoint, user, labels; the index names the tag skopeo pushes.
        let index: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(layout.join("index.json")).unwrap())
                .unwrap();
        let manifests = index["manifests"]
            .as_array()
            .expect("index.json: manifests");
        assert_eq!(manifests.len(), 1, "{index}");
        assert_eq!(
            manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
            VERSION
        );
        let manifest = blob(&layout, manifests[0]["digest"].as_str().unwrap());
        assert_eq!(
            manifest["layers"].as_array().unwrap().len(),
            1,
            "{manifest}"
        );
        let config = blob(&layout, manifest["config"]["digest"].as_str().unwrap());
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        let c = &config["config"];
        assert_eq!(c["User"], IMAGE_USER);
        assert_eq!(c["Entrypoint"], serde_json::json!([BINARY_IN_IMAGE]));
        let labels = &c["Labels"];
        assert_eq!(labels["org.opencontainers.image.title"], "tollgate");
        assert_eq!(labels["org.opencontainers.image.version"], VERSION);
        assert!(labels["org.opencontainers.image.created"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z')));
        assert_eq!(
            manifest["annotations"]["org.opencontainers.image.version"],
            VERSION
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601(1_796_384_247), "2026-12-04T11:37:27Z");
    }
}
