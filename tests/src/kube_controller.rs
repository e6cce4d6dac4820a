//! Helpers of the `tollgate controller` end-to-end tests (`tests/kube_controller*.rs`): the
//! controller process, the fake API server it talks to, and readers of the statuses it writes.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::kube_fake::{tollgate_kinds, FakeApiServer, RequestRecord};
use crate::{admin, tollgate_bin};

pub const GW: &str = "gateway.networking.k8s.io/v1";
pub const CONTROLLER: &str = "tollgate.dev/gateway-controller";
/// The lease duration the tests run the controllers with: `TOLLGATE_LEASE_SECONDS`, 6 by
/// default (the product's default is 15 s; the figure in docs/kubernetes.md was measured with
/// both).
pub fn lease_seconds() -> u64 {
    std::env::var("TOLLGATE_LEASE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

/// Tollgate's GatewayClass (as manifests/install/base/gatewayclass.yaml has it) and a Gateway
/// of it.
pub const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: tollgate }\nspec:\n  controllerName: tollgate.dev/gateway-controller\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: { name: edge, namespace: apps }\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - { name: http, port: 8080, protocol: HTTP }\n";
pub const BACKEND: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: { name: app, namespace: apps }\nspec:\n  endpoints:\n    - ip: { address: 127.0.0.1, port: 9000 }\n";
/// A node that is ready and serves the Gateway's listener (as its agent writes it).
pub const NODE: &str = "apiVersion: tollgate.dev/v1alpha1\nkind: TollgateNode\nmetadata: { name: node-a }\nspec: {}\nstatus:\n  conditions:\n    - { type: Ready, status: 'True', reason: Enforced, message: enforced, lastTransitionTime: '2026-01-01T00:00:00Z' }\n  listeners:\n    - { address: '0.0.0.0:8080', protocol: HTTP, gatewayListeners: [apps/edge/http] }\n";

pub fn route(name: &str, backend: &str, path: &str) -> String {
    format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: {name}, namespace: apps }}\nspec:\n  parentRefs: [{{ name: edge }}]\n  rules:\n    - matches: [{{ path: {{ type: PathPrefix, value: {path} }} }}]\n      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: {backend} }}]\n")
}

/// A running `tollgate controller`; killed when dropped.
pub struct Controller {
    child: Child,
    /// Its admin port.
    pub admin: u16,
    log: PathBuf,
}

impl Controller {
    pub fn start(kubeconfig: &Path, identity: &str, dir: &Path) -> Controller {
        let admin = free_port();
        let log = dir.join(format!("{identity}.log"));
        let child = Command::new(tollgate_bin())
            .args(["controller", "--kubeconfig"])
            .arg(kubeconfig)
            .args([
                "--lease-namespace",
                "tollgate-system",
                "--identity",
                identity,
            ])
            .args(["--lease-duration-seconds", &lease_seconds().to_string()])
            .args(["--admin-address", &format!("127.0.0.1:{admin}")])
            .env("TOLLGATE_LOG", "info,tollgate_controller=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", tollgate_bin().display()));
        Controller { child, admin, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `tollgate_controller_leader` (None while the admin port does not answer).
    pub fn leader(&self) -> Option<bool> {
        let text = crate::http_get(self.admin, "/metrics", "")?.1;
        crate::metric_value(&text, "tollgate_controller_leader ").map(|v| v == 1)
    }

    pub fn writes(&self) -> u64 {
        let text = admin::metrics(self.admin);
        text.lines()
            .filter(|l| l.starts_with("tollgate_controller_status_writes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn start_fake(dir: &Path) -> (FakeApiServer, PathBuf) {
    let fake = FakeApiServer::start(tollgate_kinds());
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).unwrap();
    (fake, kubeconfig)
}

/// Polls `f` every 100 ms until it gives something, or panics after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out ({timeout:?}) waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn status(fake: &FakeApiServer, kind: &str, name: &str) -> Value {
    fake.get(GW, kind, Some("apps"), name)
        .map(|o| o["status"].clone())
        .unwrap_or(Value::Null)
}

pub fn generation(fake: &FakeApiServer, kind: &str, name: &str) -> i64 {
    fake.get(GW, kind, Some("apps"), name).unwrap()["metadata"]["generation"]
        .as_i64()
        .unwrap()
}

/// Our entry of an HTTPRoute's `status.parents`.
pub fn our_parent(fake: &FakeApiServer, name: &str) -> Option<Value> {
    our_parent_of(fake, "HTTPRoute", name)
}

/// Our entry of a route's (`kind`) `status.parents`.
pub fn our_parent_of(fake: &FakeApiServer, kind: &str, name: &str) -> Option<Value> {
    status(fake, kind, name)["parents"]
        .as_array()?
        .iter()
        .find(|p| p["controllerName"] == CONTROLLER)
        .cloned()
}

/// `doc` (a route) with an entry of another controller in its `status.parents`: ours must keep it.
pub fn with_other_parent(doc: String) -> String {
    format!(
        "{doc}status:\n  parents:\n    - parentRef: {{ name: elsewhere }}\n      controllerName: example.com/other\n      conditions:\n        - {{ type: Accepted, status: 'True', reason: Accepted, message: theirs, lastTransitionTime: '2026-01-01T00:00:00Z' }}\n"
    )
}

/// Fails unless the entry of [`with_other_parent`] is still in the route's `status.parents`.
pub fn assert_other_parent_kept(fake: &FakeApiServer, kind: &str, name: &str) {
    let parents = status(fake, kind, name)["parents"].clone();
    assert!(
        parents
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["controllerName"] == "example.com/other"),
        "another controller's entry was dropped: {parents}"
    );
}

/// The status of the Gateway `name` (of namespace `apps`), once it has its listeners.
pub fn gateway_status(fake: &FakeApiServer, name: &str, timeout: Duration) -> Value {
    wait_for(timeout, &format!("the status of Gateway {name}"), || {
        let s = status(fake, "Gateway", name);
        s["listeners"].is_array().then_some(s)
    })
}

/// The status of the L4Policy `name`, once it has its conditions.
pub fn l4_policy_status(fake: &FakeApiServer, name: &str, timeout: Duration) -> Value {
    wait_for(timeout, &format!("the status of L4Policy {name}"), || {
        let s = fake.get("tollgate.dev/v1alpha1", "L4Policy", None, name)?["status"].clone();
        s["conditions"].is_array().then_some(s)
    })
}

pub fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
    conditions
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions}"))
}

/// The message of a condition ("" when it has none).
pub fn condition_message(conditions: &Value, type_: &str) -> String {
    condition(conditions, type_)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Status writes (to `/status`) in `requests`, and those of one object.
pub fn status_writes(requests: &[RequestRecord]) -> Vec<&RequestRecord> {
    requests
        .iter()
        .filter(|r| r.is_write() && r.path.ends_with("/status"))
        .collect()
}

pub fn lease_holder(fake: &FakeApiServer) -> Option<String> {
    fake.get(
        "coordination.k8s.io/v1",
        "Lease",
        Some("tollgate-system"),
        "tollgate-controller",
    )?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}
