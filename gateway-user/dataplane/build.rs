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
    aya_build::build_ebpf([package], aya_build::Toolchain::Custom("nightly")).map_err(|e| {
        anyhow!("building the eBPF programs failed (run `cargo xtask setup` first: it installs the nightly rust-src component and bpf-linker): {e:#}")
    })
}
