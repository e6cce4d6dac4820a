//! Builds the eBPF programs (`gateway-ebpf`) for the BPF target with aya-build: nightly,
//! `-Z build-std=core` and bpf-linker. `cargo xtask setup` installs what this needs.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    // AYA_BUILD_SKIP=1 builds the agent without the kernel programs (for work on the userspace
    // side only): an empty object is left where the programs go, and loading them fails with a
    // clear error at run time.
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if matches!(
        std::env::var("AYA_BUILD_SKIP").as_deref(),
        Ok("1") | Ok("true")
    ) {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
        std::fs::write(out.join("gateway-ebpf"), b"").context("write placeholder object")?;
        std::fs::write(out.join("bench"), b"").context("write placeholder object")?;
        return Ok(());
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "gateway-ebpf")
        .ok_or_else(|| anyhow!("gateway-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("gateway-ebpf manifest has no parent directory"))?
        .as_str()
        .to_owned();
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: &root_dir,
        ..Default::default()
    };
    // The eBPF programs keep the release profile's defaults whatever the agent's binary is
    // built with: with the workspace's fat LTO and one codegen unit, LLVM merged two map value
    // pointers with an `or`, which the verifier refuses ("R6 pointer |= pointer prohibited").
    // aya-build's cargo inherits this environment, and these variables override Cargo.toml.
    std::env::set_var("CARGO_PROFILE_RELEASE_LTO", "false");
    std::env::set_var("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
    share_ebpf_target_dir(package.name)?;
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom("nightly")).map_err(|e| {
        anyhow!("building the eBPF programs failed (run `cargo xtask setup` first: it installs the nightly rust-src component and bpf-linker): {e:#}")
    })
}

/// aya-build builds the programs in a target directory under this script's `OUT_DIR`, which
/// is new for every build of this crate with other features or another profile (`cargo build`,
/// `cargo clippy`, `cargo test` and the end-to-end tests' build each have their own): each of
/// them built `core` and the programs from scratch, about 40 s of compilation every time. The
/// programs are always built the same way (release, the BPF target, the same flags), so that
/// directory is made a link to one shared by all of them (`<target dir>/ebpf-build`), where the
/// inner cargo finds its work done and returns at once. The objects are still copied into each
/// `OUT_DIR`, and the inner cargo's lock on the shared directory keeps two builds at once apart.
fn share_ebpf_target_dir(package: &str) -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
    // OUT_DIR is <target dir>[/<triple>]/<profile>/build/<package>-<hash>/out.
    let Some(shared_parent) = out.ancestors().nth(4) else {
        return Ok(());
    };
    let shared = shared_parent.join("ebpf-build");
    // aya-build's `--target-dir`: `OUT_DIR/aya-build/target/<package>`.
    let link_parent = out.join("aya-build").join("target");
    let link = link_parent.join(package);
    std::fs::create_dir_all(&shared).with_context(|| format!("create {}", shared.display()))?;
    std::fs::create_dir_all(&link_parent)
        .with_context(|| format!("create {}", link_parent.display()))?;
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            if std::fs::read_link(&link).ok().as_deref() == Some(shared.as_path()) {
                return Ok(());
            }
            std::fs::remove_file(&link).with_context(|| format!("remove {}", link.display()))?;
        }
        // A directory of its own, from a build before this link existed.
        Ok(_) => {
            std::fs::remove_dir_all(&link).with_context(|| format!("remove {}", link.display()))?
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&shared, &link)
        .with_context(|| format!("link {} to {}", link.display(), shared.display()))
}
