//! The Tollgate agent binary as a library: the wiring of the pipeline and the report side.
//!
//! ```text
//! tollgate-source     -> Documents { revision, files }     what the operator wrote
//! tollgate-model      -> typed objects, errors with file/object/field
//! tollgate-compile    -> Snapshot (immutable)               validation + semantics, pure
//! tollgate-dataplane  -> the kernel enforces the Snapshot's L4 tables, atomically
//! tollgate-proxy      -> the L7 gateway serves the Snapshot's route table
//! this crate          -> agent (the loop), telemetry (status, metrics, admin), cli
//! ```
//! Each stage is its own crate, so Cargo keeps the data flowing one way; this crate is the only
//! one that sees them all (`cargo xtask test` checks the direction, see `xtask deps`).
pub mod agent;
pub mod alloc;
pub mod bans;
pub mod cli;
pub mod telemetry;
