//! Writing status: only to `/status`, with field manager [`FIELD_MANAGER`], at most once per
//! object per [`MIN_INTERVAL`] (changes in between are coalesced into the next write), never
//! when the status already says the same, and after a failure not before a backoff.
//!
//! Two ways, by who else writes the status:
//! - A GatewayClass's, a Gateway's, a Backend's and an L4Policy's status belong to this
//!   controller alone: server-side apply (`force`), so that the API server merges by the list
//!   keys the CRDs declare (conditions by `type`, listeners by `name`).
//! - A route's (HTTPRoute, GRPCRoute) `status.parents` and a policy's `status.ancestors` are shared with other
//!   controllers (one entry each per parent and controller), and the Gateway API CRD declares
//!   `parents` without list keys: an atomic list, which server-side apply would hand whole to
//!   one manager (taking other controllers' entries away, or conflicting with them). So these
//!   are read-modify-write: our entries replaced, everyone else's kept, sent as a merge patch
//!   carrying the `resourceVersion` read, which the API server turns into a precondition (409
//!   when someone wrote in between; then read again and merge again).
use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Map, Value};
use tracing::{debug, warn};

use crate::desired::{Desired, ObjectKey, Plan};
use crate::merge::merge;
use crate::FIELD_MANAGER;

/// At most one write per object per this interval.
pub const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// The first retry after a failed write...
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// ...doubling up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `Gateway`, `HTTPRoute`, ...
    pub kind: String,
}

/// The controller's metrics.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Status writes that succeeded, by kind.
    pub writes: Family<KindLabel, Counter>,
    /// Status writes that failed, by kind.
    pub errors: Family<KindLabel, Counter>,
    /// Writes put off by the per-object interval (coalesced into a later one).
    pub deferred: Counter,
    /// Rounds of compile-and-compare.
    pub rounds: Counter,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Lease reads and writes that failed (other than losing a race for it).
    pub lease_errors: Counter,
}

impl Metrics {
    /// Registers every family into `registry` (prefix `tollgate_controller`).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("tollgate_controller");
        r.register(
            "status_writes",
            "Status writes that succeeded, by kind",
            self.writes.clone(),
        );
        r.register(
            "status_write_errors",
            "Status writes that failed (retried with backoff), by kind",
            self.errors.clone(),
        );
        r.register(
            "status_writes_deferred",
            "Status writes put off to keep one write per object per 10 s",
            self.deferred.clone(),
        );
        r.register(
            "rounds",
            "Rounds of compile-and-compare",
            self.rounds.clone(),
        );
        r.register(
            "leader",
            "1 while this replica holds the lease and writes status",
            self.leader.clone(),
        );
        r.register(
            "lease_errors",
            "Lease reads and writes that failed (retried every renewal period)",
            self.lease_errors.clone(),
        );
    }
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The API server refused or could not be reached.
    #[error("{object}: {source}")]
    Api {
        /// `Kind/namespace/name`.
        object: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// A kind the controller has no resource for (a bug).
    #[error("{0}: no resource known for this kind")]
    UnknownKind(String),
}

/// Per object: when it was last written, what we wrote (the store may not have it yet), and
/// failures.
#[derive(Debug, Default)]
struct Pace {
    last_write: Option<Instant>,
    written: Option<(u64, Value)>,
    failures: u32,
    retry_at: Option<Instant>,
}

/// Writes status for the desired states it is given, paced.
pub struct StatusWriter {
    client: kube::Client,
    resources: HashMap<String, (ApiResource, bool)>,
    pace: HashMap<ObjectKey, Pace>,
    metrics: Metrics,
}

impl StatusWriter {
    /// A writer for `kinds` (resource, namespaced), counting into `metrics`.
    pub fn new(client: kube::Client, kinds: Vec<(ApiResource, bool)>, metrics: Metrics) -> Self {
        StatusWriter {
            client,
            resources: kinds
                .into_iter()
                .map(|(r, n)| (r.kind.clone(), (r, n)))
                .collect(),
            pace: HashMap::new(),
            metrics,
        }
    }

    /// Writes what differs of `desired` from `current` (resourceVersion and status per object;
    /// objects not in it are gone and skipped), as far as pacing allows, while `leading()`.
    /// Returns when the next write that was put off is due.
    pub async fn round(
        &mut self,
        desired: &[Desired],
        current: &std::collections::BTreeMap<ObjectKey, (String, Option<Value>)>,
        leading: &(dyn Fn() -> bool + Sync),
    ) -> Option<Instant> {
        self.metrics.rounds.inc();
        self.pace.retain(|k, _| current.contains_key(k));
        let mut next: Option<Instant> = None;
        for d in desired {
            let Some((rv, status)) = current.get(&d.key) else {
                continue;
            };
            let pace = self.pace.entry(d.key.clone()).or_default();
            // What we wrote last, while the store still shows an older version.
            let stored_rv: u64 = rv.parse().unwrap_or(0);
            let (rv, status) = match &pace.written {
                Some((w_rv, w_status)) if *w_rv > stored_rv => {
                    (w_rv.to_string(), Some(w_status.clone()))
                }
                _ => (rv.clone(), status.clone()),
            };
            let now_text = timestamp();
            let Some(fields) = merge(&d.plan, status.as_ref(), &now_text) else {
                pace.failures = 0;
                pace.retry_at = None;
                continue;
            };
            let now = Instant::now();
            let due = [pace.last_write.map(|t| t + MIN_INTERVAL), pace.retry_at]
                .into_iter()
                .flatten()
                .max();
            if let Some(due) = due.filter(|d| *d > now) {
                self.metrics.deferred.inc();
                next = Some(next.map_or(due, |n| n.min(due)));
                continue;
            }
            if !leading() {
                return None;
            }
            let label = KindLabel {
                kind: d.key.kind.clone(),
            };
            match self.write(&d.key, &d.plan, fields, &rv).await {
                Ok(written) => {
                    self.metrics.writes.get_or_create(&label).inc();
                    let pace = self.pace.entry(d.key.clone()).or_default();
                    pace.last_write = Some(Instant::now());
                    pace.failures = 0;
                    pace.retry_at = None;
                    let w_rv = written
                        .metadata
                        .resource_version
                        .as_deref()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    pace.written = written.data.get("status").cloned().map(|s| (w_rv, s));
                    debug!(object = %d.key.label(), "status written");
                }
                Err(e) => {
                    self.metrics.errors.get_or_create(&label).inc();
                    let pace = self.pace.entry(d.key.clone()).or_default();
                    pace.failures += 1;
                    let backoff = FIRST_BACKOFF
                        .saturating_mul(1 << pace.failures.min(7).saturating_sub(1))
                        .min(MAX_BACKOFF);
                    let at = Instant::now() + backoff;
                    pace.retry_at = Some(at);
                    next = Some(next.map_or(at, |n| n.min(at)));
                    warn!(error = %e, retry_in = ?backoff, "status write failed");
                }
            }
        }
        next
    }

    fn api(&self, key: &ObjectKey) -> Result<Api<DynamicObject>, WriteError> {
        let (resource, namespaced) = self
            .resources
            .get(&key.kind)
            .ok_or_else(|| WriteError::UnknownKind(key.label()))?;
        Ok(match (&key.namespace, namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, resource),
            _ => Api::all_with(self.client.clone(), resource),
        })
    }

    /// One write of `fields` (from [`merge`] against the status at `rv`).
    async fn write(
        &self,
        key: &ObjectKey,
        plan: &Plan,
        fields: Map<String, Value>,
        rv: &str,
    ) -> Result<DynamicObject, WriteError> {
        let api = self.api(key)?;
        let err = |source| WriteError::Api {
            object: key.label(),
            source,
        };
        match plan {
            Plan::Owned(_) | Plan::Release => {
                let (resource, _) = &self.resources[&key.kind];
                let mut metadata = json!({"name": key.name});
                if let Some(ns) = &key.namespace {
                    metadata["namespace"] = ns.clone().into();
                }
                let mut body = json!({
                    "apiVersion": resource.api_version,
                    "kind": resource.kind,
                    "metadata": metadata,
                });
                // Release: no status at all, so that the apply owns nothing of it.
                if let Plan::Owned(_) = plan {
                    body["status"] = Value::Object(fields);
                }
                let params = PatchParams::apply(FIELD_MANAGER).force();
                api.patch_status(&key.name, &params, &Patch::Apply(body))
                    .await
                    .map_err(err)
            }
            Plan::Shared { .. } => {
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                };
                let body = json!({"metadata": {"resourceVersion": rv}, "status": fields});
                match api
                    .patch_status(&key.name, &params, &Patch::Merge(body))
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        // Someone wrote in between: merge again onto what is there now
                        // (the object, not its /status: the same data, and the RBAC role
                        // then needs no `get` on the subresource).
                        let fresh = api.get(&key.name).await.map_err(err)?;
                        let rv = fresh.metadata.resource_version.clone().unwrap_or_default();
                        let Some(fields) = merge(plan, fresh.data.get("status"), &timestamp())
                        else {
                            return Ok(fresh);
                        };
                        let body = json!({"metadata": {"resourceVersion": rv}, "status": fields});
                        api.patch_status(&key.name, &params, &Patch::Merge(body))
                            .await
                            .map_err(err)
                    }
                    other => other.map_err(err),
                }
            }
        }
    }
}

/// Now, as metav1.Time writes it (RFC 3339, whole seconds, UTC).
pub fn timestamp() -> String {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    serde_json::to_value(now)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
