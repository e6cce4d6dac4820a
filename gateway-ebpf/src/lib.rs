//! Nothing to see on the host: the programs are in `main.rs`, built for the BPF target only.
//! This library target exists so that `gateway-user` can list the crate as a build dependency
//! (cargo then rebuilds the agent when the programs change).
#![no_std]
