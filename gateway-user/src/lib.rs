//! The Tollgate agent as a library. One module per pipeline stage, data flowing one way:
//!
//! ```text
//! source  -> Documents { revision, files }        what the operator wrote
//! model   -> typed objects (CRD types), errors with file/object/field
//! compile -> Snapshot (immutable)                  validation + semantics
//! apply   -> dataplane: the node enforces the Snapshot atomically
//! report  -> logs now; metrics/status in telemetry
//! ```
//! Nothing below `compile` sees raw YAML; nothing above `dataplane` touches a map.
pub mod agent;
pub mod bans;
pub mod cli;
pub mod compile;
pub mod dataplane;
pub mod model;
pub mod proxy;
pub mod source;
pub mod telemetry;
