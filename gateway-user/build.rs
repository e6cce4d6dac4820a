//! Link options of the `tollgate` binary.
//!
//! Packed relative relocations (`-z pack-relative-relocs`, DT_RELR): the binary is a PIE, and
//! every pointer in its read-only data (vtables, string tables, static slices) needs a
//! relocation at start. As RELA entries those were megabytes of `.rela.dyn` that the dynamic
//! loader reads once and that then stay mapped, resident, for the life of the agent; packed,
//! they are a few KB (docs/benchmarks-issue13.md, "Agent memory"). Needs GNU ld >= 2.38 or lld to
//! link and glibc >= 2.36 to run; the image carries the glibc of the machine that built it
//! (docs/install.md), so the two always match there.
fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
