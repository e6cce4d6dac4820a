//! The Gateway API conformance runner's library: the scenarios of `tests/conformance/` (written
//! for Tollgate from the upstream suite's HTTPRoute and GRPCRoute tests, see
//! `docs/conformance/README.md`),
//! the checks of each request's expectations, and the `ConformanceReport` (the upstream shape,
//! `conformance/apis/v1` of kubernetes-sigs/gateway-api) built from the outcomes. The run
//! itself (agent, backends, reloads) is `tests/tests/conformance.rs`.
use std::path::PathBuf;

pub mod client;
pub mod grpc;
pub mod h2c;
mod report;
mod run;
mod scenario;
pub mod status;

pub use report::{report, without_date, Implementation, Outcome};
pub use run::{port_open, request_of, request_ports, run_request, BackendPorts, Context};
pub use scenario::{
    echo_backends, load_scenario, load_scenarios, load_skip_list, qualified, EchoBackend, Scenario,
    SkipList, Skipped,
};

/// The Gateway API release and channel the scenarios were written against.
pub const GATEWAY_API_VERSION: &str = "v1.6.0";
/// The channel: only standard-channel features are claimed.
pub const GATEWAY_API_CHANNEL: &str = "standard";
/// The features every GATEWAY-HTTP implementation must support; a test that needs any other
/// feature is an Extended one.
pub const CORE_FEATURES: [&str; 3] = ["Gateway", "HTTPRoute", "ReferenceGrant"];
/// The same for the GATEWAY-GRPC profile, whose tests are those that need `GRPCRoute`.
pub const GRPC_CORE_FEATURES: [&str; 3] = ["Gateway", "GRPCRoute", "ReferenceGrant"];

/// The conformance profile a test with `features` belongs to, and its core features.
pub fn profile(features: &[String]) -> (&'static str, &'static [&'static str]) {
    if features.iter().any(|f| f == "GRPCRoute") {
        ("GATEWAY-GRPC", &GRPC_CORE_FEATURES)
    } else {
        ("GATEWAY-HTTP", &CORE_FEATURES)
    }
}
/// The namespace of the base Gateways and of the backends a scenario names without one.
pub const INFRA_NAMESPACE: &str = "gateway-conformance-infra";
/// The port of Gateway `same-namespace`, where requests go unless they say otherwise.
pub const DEFAULT_PORT: u16 = 28080;

/// `tests/conformance/` of the workspace.
pub fn data_dir() -> PathBuf {
    crate::workspace_root().join("tests/conformance")
}
