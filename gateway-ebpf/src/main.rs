//! Tollgate's kernel programs. Built for `bpfel-unknown-none` by `gateway-user/dataplane/build.rs`; on the
//! host this file compiles to an empty program so that workspace-wide commands do not fail.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod index;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod prog;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
