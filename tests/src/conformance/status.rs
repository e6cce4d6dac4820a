//! Status scenarios (`mode: status`): upstream tests that check only the status a controller
//! writes. They run against the fake API server of this crate, the real `tollgate controller`
//! and a real agent in Kubernetes mode: the base objects (`base.yaml`, with Tollgate's
//! GatewayClass `tollgate`, the test certificates' Secrets and CA ConfigMap) and a scenario's
//! objects are stored in the fake, the agent enforces them and reports its node
//! (`TollgateNode`, which the controller's `Programmed` conditions count), the controller (the
//! one replica, so the leader) writes their status, and each check waits for it:
//!
//! ```yaml
//! status:
//!   - { kind: HTTPRoute, namespace: NS, name: R, parent: same-namespace, conditions: { Accepted: "True", ResolvedRefs: "True" } }
//!   - kind: Gateway
//!     namespace: NS
//!     name: G
//!     conditions: { Accepted: { status: "False", reason: ListenersNotValid } }
//!     listeners:
//!       - { name: http, supportedKinds: [HTTPRoute], attachedRoutes: 1, conditions: { Programmed: "True" } }
//! ```
//!
//! Every check also requires, as upstream's `...MustHaveLatestConditions` do, that each
//! condition of the object (for a route: of each `status.parents` entry; for a Gateway: its
//! own and its listeners') carries its current `metadata.generation` as `observedGeneration`. A `then` step stores
//! its objects again, and each object a step's checks name must have a new generation (the
//! step changed its spec) before its checks count.
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{run_request, Context, Scenario};
use crate::kube_fake::{tollgate_kinds, FakeApiServer};
use crate::{Agent, Lab, APPLY_TIMEOUT, POLICY_APPLIED};

/// The controller's name, in routes' `status.parents` and the GatewayClass.
const CONTROLLER: &str = "tollgate.dev/gateway-controller";
/// Tollgate's GatewayClass, which the base Gateways name (a directory source needs none).
const GATEWAY_CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: { name: tollgate }\nspec:\n  controllerName: tollgate.dev/gateway-controller\n";
/// The Gateway API's group, of the route kinds a listener supports.
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// How long a check waits: the controller writes one object at most once per 10 s.
const WAIT: Duration = Duration::from_secs(30);

/// The name of the node the status scenarios' agent reports as (its `TollgateNode`).
pub const NODE: &str = "conformance-node";

/// The fake API server, a controller writing status into it and an agent reading the same
/// objects (whose `TollgateNode` report makes listeners `Programmed`); all stopped when
/// dropped.
pub struct StatusRun {
    fake: FakeApiServer,
    controller: Child,
    agent: Option<Agent>,
    log: PathBuf,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

impl StatusRun {
    /// Stores `base` and the GatewayClass in a new fake API server and starts `tollgate
    /// controller` (the binary of `TOLLGATE_BIN`) against it, its admin server on `admin`.
    pub fn start(base: &str, admin: u16) -> StatusRun {
        let dir = tempfile::tempdir().expect("a directory for the kubeconfig");
        let fake = FakeApiServer::start(tollgate_kinds());
        let kubeconfig = dir.path().join("kubeconfig");
        fake.write_kubeconfig(&kubeconfig)
            .unwrap_or_else(|e| panic!("write {}: {e}", kubeconfig.display()));
        fake.apply_yaml(&format!("{GATEWAY_CLASS}---\n{base}"))
            .unwrap_or_else(|e| panic!("store the base objects in the fake: {e:?}"));
        let log = dir.path().join("controller.log");
        let controller = Command::new(crate::tollgate_bin())
            .args(["controller", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--lease-namespace", "tollgate-system"])
            .args(["--identity", "conformance"])
            .args(["--admin-address", &format!("127.0.0.1:{admin}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the controller's log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", crate::tollgate_bin().display()));
        StatusRun {
            fake,
            controller,
            agent: None,
            log,
            kubeconfig,
            dir,
        }
    }

    /// Starts an agent in Kubernetes mode (`--source kubernetes`) on `lab`, reading the same
    /// fake API server as node [`NODE`], its admin server on `admin`; returns once it has
    /// applied its first revision. Its proxy binds the listeners of the objects stored, and
    /// its `TollgateNode` report is what the controller's `Programmed` conditions count.
    pub fn start_agent(&mut self, lab: &Lab, admin: u16) {
        let admin = format!("127.0.0.1:{admin}");
        let secrets = self.dir.path().join("secrets");
        let mut agent = lab.start_agent(&[
            "--source",
            "kubernetes",
            "--kubeconfig",
            self.kubeconfig.to_str().expect("a UTF-8 path"),
            "--node-name",
            NODE,
            "--admin",
            &admin,
            "--gateway-address",
            "127.0.0.1",
            "--access-log",
            "off",
            "--tls-secrets-dir",
            secrets.to_str().expect("a UTF-8 path"),
        ]);
        agent
            .wait_for_log(POLICY_APPLIED, APPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        self.agent = Some(agent);
    }

    /// Stores more objects (the Secrets the scenarios reference, say) in the fake.
    pub fn store(&self, objects: &str) {
        self.fake
            .apply_yaml(objects)
            .unwrap_or_else(|e| panic!("store objects in the fake: {e:?}"));
    }

    /// Runs one status scenario; the failures. Its objects are deleted afterwards. Its
    /// `requests` (if any) go to the agent once the first step's checks hold.
    pub fn run(&self, s: &Scenario, ctx: &Context) -> Vec<String> {
        let mut failures = Vec::new();
        let steps =
            std::iter::once((&s.objects, &s.requests)).chain(s.then.iter().map(|(o, c)| (o, c)));
        let mut stored = Vec::new();
        for (step, (objects, checks)) in steps.enumerate() {
            let label = if step == 0 {
                String::new()
            } else {
                format!("then[{}]: ", step - 1)
            };
            let before: Vec<Option<i64>> = checks.iter().map(|c| self.generation(c)).collect();
            match self.fake.apply_yaml(objects) {
                Ok(objs) => stored.extend(objs),
                Err(e) => {
                    failures.push(format!("{label}the fake refused the objects: {e:?}"));
                    break;
                }
            }
            for (check, before) in checks.iter().zip(before) {
                if let Err(e) = self.wait_for(check, if step == 0 { None } else { before }) {
                    failures.push(format!("{label}{e}"));
                }
            }
            if failures.is_empty() && step == 0 && !s.status_requests.is_empty() {
                failures.extend(eventually(&s.status_requests, ctx));
            }
            if !failures.is_empty() {
                break;
            }
        }
        for o in stored {
            let m = &o["metadata"];
            let _ = self.fake.delete(
                o["apiVersion"].as_str().unwrap_or_default(),
                o["kind"].as_str().unwrap_or_default(),
                m["namespace"].as_str(),
                m["name"].as_str().unwrap_or_default(),
            );
        }
        if !failures.is_empty() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            failures.push(format!(
                "the controller's last log lines: {:?}",
                last_lines(&log)
            ));
            if let Some(agent) = &self.agent {
                failures.push(format!(
                    "the agent's last log lines: {:?}",
                    last_lines(&agent.log())
                ));
            }
        }
        failures
    }

    fn object(&self, check: &Value) -> Option<Value> {
        let kind = check["kind"].as_str()?;
        self.fake.get(
            api_version(kind),
            kind,
            check["namespace"].as_str(),
            check["name"].as_str()?,
        )
    }

    fn generation(&self, check: &Value) -> Option<i64> {
        self.object(check)?["metadata"]["generation"].as_i64()
    }

    /// Waits until `check` holds; with `older`, also until the object's generation is past it.
    fn wait_for(&self, check: &Value, older: Option<i64>) -> Result<(), String> {
        let what = format!(
            "{} {}{}",
            check["kind"].as_str().unwrap_or_default(),
            check["namespace"]
                .as_str()
                .map(|n| format!("{n}/"))
                .unwrap_or_default(),
            check["name"].as_str().unwrap_or_default()
        );
        let deadline = Instant::now() + WAIT;
        loop {
            let last = match self.object(check) {
                None => format!("{what}: no such object"),
                Some(o) => match verdict(check, &o, older) {
                    Ok(()) => return Ok(()),
                    Err(e) => format!("{what}: {e}"),
                },
            };
            if Instant::now() > deadline {
                return Err(format!("{last} (after {WAIT:?})"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The last five lines of a log, oldest first.
fn last_lines(log: &str) -> Vec<&str> {
    let mut tail: Vec<&str> = log.lines().rev().take(5).collect();
    tail.reverse();
    tail
}

/// Sends `requests` until every answer is as expected, for up to 15 s; the last failures.
fn eventually(requests: &[Value], ctx: &Context) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        ctx.backends.clear();
        let failures: Vec<String> = requests
            .iter()
            .flat_map(|entry| run_request(entry, ctx))
            .collect();
        if failures.is_empty() || Instant::now() > deadline {
            return failures;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for StatusRun {
    fn drop(&mut self) {
        drop(self.agent.take());
        let _ = self.controller.kill();
        let _ = self.controller.wait();
    }
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" => "gateway.networking.k8s.io/v1",
        _ => "tollgate.dev/v1alpha1",
    }
}

/// Whether object `o` passes `check` (and, with `older`, has a newer generation).
fn verdict(check: &Value, o: &Value, older: Option<i64>) -> Result<(), String> {
    let generation = o["metadata"]["generation"].as_i64();
    if let (Some(old), Some(now)) = (older, generation) {
        if now <= old {
            return Err(format!(
                "the step did not change its spec (generation still {now})"
            ));
        }
    }
    let conditions: Vec<Value> = match check["parent"].as_str() {
        // A route: every condition of every entry must be up to date, and ours for `parent`
        // must say what is expected.
        Some(parent) => {
            let parents = o["status"]["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for p in &parents {
                stale(p["conditions"].as_array(), generation)?;
            }
            let ours = parents
                .iter()
                .find(|p| p["controllerName"] == CONTROLLER && p["parentRef"]["name"] == parent)
                .ok_or_else(|| format!("no status.parents entry of {CONTROLLER} for {parent}"))?;
            ours["conditions"].as_array().cloned().unwrap_or_default()
        }
        // A GatewayClass or a Gateway: its conditions, and a Gateway's listeners' too, must
        // be up to date.
        None => {
            let c = o["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            stale(Some(&c), generation)?;
            for l in o["status"]["listeners"].as_array().into_iter().flatten() {
                stale(l["conditions"].as_array(), generation)?;
            }
            c
        }
    };
    conditions_match(&check["conditions"], &conditions)?;
    if let Some(expected) = check["listeners"].as_array() {
        listeners_match(expected, &o["status"]["listeners"])?;
    }
    Ok(())
}

/// Whether `conditions` hold each expected one (type: `True` / `False` / `Any`, or
/// `{status, reason}`).
fn conditions_match(expected: &Value, conditions: &[Value]) -> Result<(), String> {
    for (type_, want) in expected.as_object().into_iter().flatten() {
        let (status, reason) = match want {
            Value::Object(o) => (
                o.get("status").and_then(Value::as_str).unwrap_or("Any"),
                o.get("reason").and_then(Value::as_str),
            ),
            other => (other.as_str().unwrap_or("Any"), None),
        };
        let got = conditions
            .iter()
            .find(|c| c["type"] == type_.as_str())
            .ok_or_else(|| format!("no {type_} condition in {conditions:?}"))?;
        if status != "Any" && got["status"] != status {
            return Err(format!("{type_}: expected {status}, got {got}"));
        }
        if let Some(reason) = reason {
            if got["reason"] != reason {
                return Err(format!("{type_}: expected reason {reason}, got {got}"));
            }
        }
    }
    Ok(())
}

/// Whether a Gateway's `status.listeners` are the expected ones, as upstream's
/// `GatewayStatusMustHaveListeners` compares them: as many listeners, each expected one
/// present by name with each expected route kind among its `supportedKinds` (none at all when
/// `[]` is expected), its `attachedRoutes`, and its expected conditions.
fn listeners_match(expected: &[Value], actual: &Value) -> Result<(), String> {
    let actual = actual.as_array().cloned().unwrap_or_default();
    if actual.len() != expected.len() {
        return Err(format!(
            "expected {} listeners in the status, got {}: {actual:?}",
            expected.len(),
            actual.len()
        ));
    }
    for e in expected {
        let name = e["name"].as_str().unwrap_or_default();
        let a = actual
            .iter()
            .find(|a| a["name"] == name)
            .ok_or_else(|| format!("no status of listener {name}"))?;
        let kinds: Vec<(&str, &str)> = a["supportedKinds"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|k| {
                (
                    k["group"].as_str().unwrap_or(GATEWAY_GROUP),
                    k["kind"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        if let Some(want) = e["supportedKinds"].as_array() {
            if want.is_empty() && !kinds.is_empty() {
                return Err(format!(
                    "listener {name}: expected no supportedKinds, got {kinds:?}"
                ));
            }
            for k in want.iter().filter_map(Value::as_str) {
                if !kinds.contains(&(GATEWAY_GROUP, k)) {
                    return Err(format!(
                        "listener {name}: {k} is not among the supportedKinds {kinds:?}"
                    ));
                }
            }
        }
        if let Some(n) = e["attachedRoutes"].as_u64() {
            if a["attachedRoutes"].as_u64() != Some(n) {
                return Err(format!(
                    "listener {name}: expected attachedRoutes {n}, got {}",
                    a["attachedRoutes"]
                ));
            }
        }
        let conditions = a["conditions"].as_array().cloned().unwrap_or_default();
        conditions_match(&e["conditions"], &conditions)
            .map_err(|err| format!("listener {name}: {err}"))?;
    }
    Ok(())
}

/// An error naming the first condition whose `observedGeneration` is not `generation`.
fn stale(conditions: Option<&Vec<Value>>, generation: Option<i64>) -> Result<(), String> {
    for c in conditions.into_iter().flatten() {
        if c["observedGeneration"].as_i64() != generation {
            return Err(format!(
                "condition {} has observedGeneration {}, the object's generation is {generation:?}",
                c["type"], c["observedGeneration"]
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_check_needs_the_conditions_up_to_date_and_as_expected() {
        let check = json!({"kind": "HTTPRoute", "name": "r", "parent": "gw",
                           "conditions": {"Accepted": "True", "ResolvedRefs": "Any"}});
        let route = |generation: i64, observed: i64, accepted: &str| {
            json!({"metadata": {"generation": generation}, "status": {"parents": [
            {"parentRef": {"name": "gw"}, "controllerName": CONTROLLER, "conditions": [
                {"type": "Accepted", "status": accepted, "observedGeneration": observed},
                {"type": "ResolvedRefs", "status": "False", "observedGeneration": observed},
            ]}]}})
        };
        assert_eq!(verdict(&check, &route(2, 2, "True"), None), Ok(()));
        assert!(verdict(&check, &route(2, 1, "True"), None)
            .unwrap_err()
            .contains("observedGeneration 1"));
        assert!(verdict(&check, &route(2, 2, "False"), None)
            .unwrap_err()
            .contains("expected True"));
        // A step must have changed the spec.
        assert!(verdict(&check, &route(2, 2, "True"), Some(2))
            .unwrap_err()
            .contains("did not change"));
        assert_eq!(verdict(&check, &route(3, 3, "True"), Some(2)), Ok(()));
        let class = json!({"kind": "GatewayClass", "name": "c", "conditions": {"Accepted": "Any"}});
        let gwc = json!({"metadata": {"generation": 1}, "status": {"conditions": [
            {"type": "Accepted", "status": "True", "observedGeneration": 1}]}});
        assert_eq!(verdict(&class, &gwc, None), Ok(()));
        let gw = |listener_generation: i64| {
            json!({"metadata": {"generation": 2}, "status": {
                "conditions": [{"type": "Accepted", "status": "True", "observedGeneration": 2}],
                "listeners": [{"name": "http", "conditions": [
                    {"type": "Accepted", "status": "True", "observedGeneration": listener_generation}]}]}})
        };
        assert_eq!(verdict(&class, &gw(2), None), Ok(()));
        assert!(verdict(&class, &gw(1), None).is_err());
        assert!(verdict(&class, &json!({"metadata": {"generation": 1}}), None).is_err());
    }

    #[test]
    fn listeners_are_compared_by_name_kinds_count_and_conditions_with_reasons() {
        let gw = |kinds: Value, attached: u64, reason: &str| {
            json!({"metadata": {"generation": 1}, "status": {
                "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                                "observedGeneration": 1}],
                "listeners": [{"name": "http", "supportedKinds": kinds, "attachedRoutes": attached,
                    "conditions": [{"type": "ResolvedRefs", "status": "False", "reason": reason,
                                    "observedGeneration": 1}]}]}})
        };
        let http = json!([{"group": GATEWAY_GROUP, "kind": "HTTPRoute"}]);
        let check = |kinds: Value| {
            json!({"kind": "Gateway", "name": "g", "conditions": {"Accepted": {"status": "True", "reason": "Accepted"}},
                   "listeners": [{"name": "http", "supportedKinds": kinds, "attachedRoutes": 0,
                                  "conditions": {"ResolvedRefs": {"status": "False", "reason": "InvalidRouteKinds"}}}]})
        };
        let ok = gw(http.clone(), 0, "InvalidRouteKinds");
        assert_eq!(verdict(&check(json!(["HTTPRoute"])), &ok, None), Ok(()));
        // An empty list expected: none may be there.
        assert!(verdict(&check(json!([])), &ok, None)
            .unwrap_err()
            .contains("no supportedKinds"));
        assert_eq!(
            verdict(
                &check(json!([])),
                &gw(json!([]), 0, "InvalidRouteKinds"),
                None
            ),
            Ok(())
        );
        assert!(verdict(&check(json!(["GRPCRoute"])), &ok, None).is_err());
        assert!(verdict(
            &check(json!(["HTTPRoute"])),
            &gw(http.clone(), 1, "InvalidRouteKinds"),
            None
        )
        .unwrap_err()
        .contains("attachedRoutes"));
        assert!(verdict(
            &check(json!(["HTTPRoute"])),
            &gw(http.clone(), 0, "RefNotPermitted"),
            None
        )
        .unwrap_err()
        .contains("expected reason InvalidRouteKinds"));
        // As many listeners as expected.
        let mut two = check(json!(["HTTPRoute"]));
        two["listeners"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "other"}));
        assert!(verdict(&two, &ok, None)
            .unwrap_err()
            .contains("expected 2 listeners"));
    }
}
