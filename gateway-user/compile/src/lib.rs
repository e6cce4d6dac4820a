//! The compile stage: parsed objects -> one immutable [`snapshot::Snapshot`] of everything a
//! node enforces: the L4 tables the kernel's maps must hold ([`l4`]) and the L7 route table the
//! proxy serves ([`l7`]). Every problem of a revision is reported at once, each with its file,
//! object and field.
//!
//! Pure: no I/O, no clock, no sockets. What this crate accepts is exactly what a node would
//! enforce, so `tollgate validate` in CI, `tollgate explain` and the agent all go through
//! [`snapshot::compile_documents`]. It depends on the model only, and builds and tests on
//! stable Rust without nightly, bpf-linker, OpenSSL or libgit2.
pub mod l4;
pub mod l7;
mod selector;
pub mod snapshot;

pub use tollgate_model::{Location, PolicyError, PolicyErrors};
