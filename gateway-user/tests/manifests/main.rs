//! Checks of the manifests an operator installs, without a cluster: what they name must be what
//! the agent and the controller do.
//!
//! - The monitoring manifests in `manifests/monitoring/` (monitoring.rs): the Grafana dashboard
//!   and the Prometheus Operator monitors. The metric names are a contract (README, "Metrics and
//!   the admin port"): a dashboard query that names a metric the agent does not export fails here.
//! - The install manifests: the kustomize base in `manifests/install/base/` (Kubernetes mode) and
//!   the overlay `manifests/install/overlays/configmap-source/` (policies from a ConfigMap). What
//!   the kustomizations list exists and parses; the DaemonSet agrees with itself (arguments, ports,
//!   probes, mounts, the least-privilege security context), with the monitors, the RBAC and the
//!   admission policy (install.rs), and the overlay with its ConfigMap (overlay.rs); the
//!   controller's Deployment and RBAC (controller.rs). (`cargo xtask test` also renders every
//!   kustomization and validates it with kubernetes-validate.)
//!
//! One test target, one module per group of manifests; objects.rs reads and walks them.

mod controller;
mod install;
mod monitoring;
mod objects;
mod overlay;
