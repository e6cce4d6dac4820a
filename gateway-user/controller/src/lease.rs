//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does it:
//! the holder renews the Lease every [`LeaseConfig::renew_every`]; a candidate takes it over when
//! it is free or when its record has not changed for a whole lease duration *as measured on the
//! candidate's own monotonic clock* (so that clock skew between nodes never shortens a lease);
//! every write is a PUT conditional on the `resourceVersion` read, so that of two candidates
//! only one wins. The holder counts itself leader only until [`LeaseConfig::renew_deadline`]
//! after the start of its last successful renewal (shorter than the lease duration), so it
//! stops writing before anyone else may start, even when it cannot reach the API server.
//!
//! Written here rather than taken from a crate: kube-leader-election 0.44 needs kube 4, and
//! kube-lease-manager 0.13 (kube 5) keeps reporting leadership while its renewals fail (its
//! channel only changes on a successful call) and judges expiry by the holder's wall clock.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::FIELD_MANAGER;

/// Which Lease, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease (the controller's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process (the pod's name): the Lease's `holderIdentity` while it leads.
    pub identity: String,
    /// `leaseDurationSeconds`: how long a record must stay unchanged before another candidate
    /// takes the Lease over.
    pub duration: Duration,
    /// How often the holder renews (and a candidate looks).
    pub renew_every: Duration,
    /// How long after the start of its last successful renewal the holder still counts itself
    /// leader: shorter than `duration`, so that it stops before anyone else may start.
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    /// The defaults: a 15 s lease renewed every 2 s, leadership kept 10 s after a renewal.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }

    /// The same with another lease duration; the renewal period and deadline follow (a
    /// seventh and two thirds of it, at least a second).
    pub fn with_duration(mut self, duration: Duration) -> Self {
        let duration = duration.max(Duration::from_secs(3));
        self.duration = duration;
        self.renew_every = (duration / 7).max(Duration::from_secs(1));
        self.renew_deadline = duration * 2 / 3;
        self
    }
}

/// Whether this process leads now; shared by the elector and the status writer.
#[derive(Debug)]
pub struct Leadership {
    until: Mutex<Option<Instant>>,
    changed: watch::Sender<bool>,
}

impl Default for Leadership {
    fn default() -> Self {
        Leadership {
            until: Mutex::new(None),
            changed: watch::channel(false).0,
        }
    }
}

impl Leadership {
    /// Leads now: renewed less than the renew deadline ago.
    pub fn is_leader(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| Instant::now() < t)
    }

    /// Wakes whenever leadership is gained or given up.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changed.subscribe()
    }

    fn hold_until(&self, until: Instant) {
        let was = self.is_leader();
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
        if !was {
            self.changed.send_replace(true);
        }
    }

    fn give_up(&self) {
        let was = self.is_leader();
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if was {
            self.changed.send_replace(false);
        }
    }
}

/// What a candidate does after reading the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// There is no Lease: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// It is free (no holder) or expired: take it over.
    Acquire,
    /// Someone else holds it.
    Wait,
}

/// Decides from the record read: `unchanged_for` is how long this process has seen the same
/// `resourceVersion` (its own clock; zero when it just changed).
pub(crate) fn decide(
    lease: Option<&Lease>,
    identity: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Action {
    let Some(lease) = lease else {
        return Action::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    match spec.holder_identity.as_deref() {
        Some(h) if h == identity => Action::Renew,
        None | Some("") => Action::Acquire,
        Some(_) => {
            // The holder's own duration when it declares one (it renews to that promise).
            let duration = spec
                .lease_duration_seconds
                .filter(|s| *s > 0)
                .map_or(default_duration, |s| Duration::from_secs(s as u64));
            if unchanged_for >= duration {
                Action::Acquire
            } else {
                Action::Wait
            }
        }
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

/// The elector: runs until `stop` turns true, then gives the Lease up if it holds it (so that
/// the other replica takes over at once instead of a lease duration later).
pub async fn run(
    api: Api<Lease>,
    config: LeaseConfig,
    leadership: Arc<Leadership>,
    errors: prometheus_client::metrics::counter::Counter,
    mut stop: watch::Receiver<bool>,
) {
    let mut observed: Option<(String, Instant)> = None;
    // The Lease as this replica last wrote it while holding it: the next renewal is a PUT
    // conditional on it, without reading first (a 409 says someone else wrote; then read).
    let mut ours: Option<Lease> = None;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    loop {
        if *stop.borrow() {
            break;
        }
        let started = Instant::now();
        match step(&api, &config, &params, &mut observed, &mut ours, started).await {
            Ok(true) => {
                if !leadership.is_leader() {
                    info!(lease = %format!("{}/{}", config.namespace, config.name), identity = %config.identity, "leading: this replica writes status");
                }
                leadership.hold_until(started + config.renew_deadline);
            }
            Ok(false) => {
                if leadership.is_leader() {
                    warn!(lease = %format!("{}/{}", config.namespace, config.name), "lost the lease: no longer writing status");
                }
                leadership.give_up();
            }
            // Leadership, if held, runs out at its deadline by itself.
            Err(e) => {
                errors.inc();
                warn!(lease = %format!("{}/{}", config.namespace, config.name), error = %e, "lease: retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.renew_every) => {}
            _ = stop.changed() => {}
        }
    }
    let held = leadership.is_leader();
    leadership.give_up();
    if held {
        match release(&api, &config, &params).await {
            Ok(()) => info!(lease = %config.name, "lease released"),
            Err(e) => {
                warn!(lease = %config.name, error = %e, "could not release the lease: the other replica takes over when it expires")
            }
        }
    }
}

/// One round; `Ok(true)` when we hold the Lease after it.
async fn step(
    api: &Api<Lease>,
    config: &LeaseConfig,
    params: &PostParams,
    observed: &mut Option<(String, Instant)>,
    ours: &mut Option<Lease>,
    started: Instant,
) -> Result<bool, kube::Error> {
    let current = match ours.take() {
        Some(lease) => Some(lease),
        None => api.get_opt(&config.name).await?,
    };
    let rv = current
        .as_ref()
        .and_then(|l| l.metadata.resource_version.clone())
        .unwrap_or_default();
    let unchanged_for = match observed {
        Some((seen, since)) if *seen == rv => started.saturating_duration_since(*since),
        _ => {
            *observed = Some((rv.clone(), started));
            Duration::ZERO
        }
    };
    let action = decide(
        current.as_ref(),
        &config.identity,
        unchanged_for,
        config.duration,
    );
    debug!(?action, rv = %rv, ?unchanged_for, "lease");
    let stamp = now();
    let result = match action {
        Action::Wait => return Ok(false),
        Action::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(seconds(config.duration)),
                    acquire_time: Some(stamp.clone()),
                    renew_time: Some(stamp),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(params, &lease).await
        }
        Action::Renew | Action::Acquire => {
            let mut lease = current.expect("a lease was read");
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if action == Action::Acquire {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(stamp.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.renew_time = Some(stamp);
            spec.lease_duration_seconds = Some(seconds(config.duration));
            // Conditional on the resourceVersion read: another candidate's write in between
            // makes this one fail (409) instead of both believing they lead.
            api.replace(&config.name, params, &lease).await
        }
    };
    match result {
        Ok(written) => {
            *observed = written
                .metadata
                .resource_version
                .clone()
                .map(|rv| (rv, started));
            *ours = Some(written);
            if action != Action::Renew {
                info!(lease = %config.name, identity = %config.identity, ?action, "acquired the lease");
            }
            Ok(true)
        }
        // Someone else wrote first (409), or created it first (409 AlreadyExists): not ours.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up: no holder, and a renew time of now so that the next candidate may
/// take it at once.
async fn release(
    api: &Api<Lease>,
    config: &LeaseConfig,
    params: &PostParams,
) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(now());
    api.replace(&config.name, params, &lease).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>, duration: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                resource_version: Some("5".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_lease_is_taken_only_when_free_or_unchanged_for_its_whole_duration() {
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "me", Duration::ZERO, d), Action::Create);
        let mine = held_by(Some("me"), Some(15));
        assert_eq!(decide(Some(&mine), "me", Duration::ZERO, d), Action::Renew);
        let free = held_by(None, None);
        assert_eq!(
            decide(Some(&free), "me", Duration::ZERO, d),
            Action::Acquire
        );
        let theirs = held_by(Some("other"), Some(15));
        assert_eq!(
            decide(Some(&theirs), "me", Duration::from_secs(14), d),
            Action::Wait
        );
        assert_eq!(
            decide(Some(&theirs), "me", Duration::from_secs(15), d),
            Action::Acquire
        );
        // The holder's declared duration counts, not ours.
        let long = held_by(Some("other"), Some(60));
        assert_eq!(
            decide(Some(&long), "me", Duration::from_secs(30), d),
            Action::Wait
        );
    }

    #[test]
    fn leadership_ends_at_its_deadline_without_any_call() {
        let l = Leadership::default();
        let mut changes = l.subscribe();
        assert!(!l.is_leader());
        l.hold_until(Instant::now() + Duration::from_secs(60));
        assert!(l.is_leader());
        assert!(changes.has_changed().unwrap());
        assert!(*changes.borrow_and_update());
        l.hold_until(Instant::now() - Duration::from_millis(1));
        assert!(!l.is_leader());
        l.give_up();
        assert!(!l.is_leader());
    }

    #[test]
    fn the_timings_follow_the_duration() {
        let c = LeaseConfig::new("ns", "l", "me").with_duration(Duration::from_secs(6));
        assert_eq!(c.renew_every, Duration::from_secs(1));
        assert_eq!(c.renew_deadline, Duration::from_secs(4));
        let d = LeaseConfig::new("ns", "l", "me");
        assert!(d.renew_deadline < d.duration && d.renew_every < d.renew_deadline);
    }

    /// The elector's requests against kube's mocked API server.
    mod requests {
        use super::*;
        use http::{Request, Response};
        use kube::client::Body;
        use serde_json::{json, Value};

        type Mock = tower_test::mock::Handle<Request<Body>, Response<Body>>;

        fn api() -> (Api<Lease>, Mock) {
            let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            let client = kube::Client::new(service, "default");
            (Api::namespaced(client, "ns"), handle)
        }

        async fn next(
            handle: &mut Mock,
        ) -> (
            String,
            String,
            Value,
            tower_test::mock::SendResponse<Response<Body>>,
        ) {
            let (request, send) =
                tokio::time::timeout(Duration::from_secs(5), handle.next_request())
                    .await
                    .expect("a request")
                    .expect("open");
            let method = request.method().to_string();
            let uri = request.uri().to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (method, uri, body, send)
        }

        fn answer(send: tower_test::mock::SendResponse<Response<Body>>, code: u16, body: Value) {
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }

        fn lease(holder: &str, rv: &str) -> Value {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "l", "namespace": "ns", "resourceVersion": rv},
                   "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": 2,
                            "renewTime": "2026-01-01T00:00:00.000000Z"}})
        }

        fn params() -> PostParams {
            PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            }
        }

        #[tokio::test]
        async fn a_lease_held_by_another_is_taken_over_by_a_conditional_put_once_expired() {
            let (api, mut handle) = api();
            let config = LeaseConfig::new("ns", "l", "me");
            let server = tokio::spawn(async move {
                // First look: held by "other", just seen: wait.
                let (method, uri, _, send) = next(&mut handle).await;
                assert_eq!(
                    (method.as_str(), uri.as_str()),
                    ("GET", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l")
                );
                answer(send, 200, lease("other", "7"));
                // Second look, the same record a lease duration later: take it over.
                let (_, _, _, send) = next(&mut handle).await;
                answer(send, 200, lease("other", "7"));
                let (method, uri, body, send) = next(&mut handle).await;
                assert_eq!(method, "PUT");
                assert_eq!(uri, "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l?&fieldManager=tollgate-controller");
                assert_eq!(
                    body["metadata"]["resourceVersion"], "7",
                    "the PUT is conditional"
                );
                assert_eq!(body["spec"]["holderIdentity"], "me");
                assert_eq!(body["spec"]["leaseTransitions"], 3);
                assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
                assert!(
                    body["spec"]["acquireTime"].is_string()
                        && body["spec"]["renewTime"].is_string()
                );
                let mut written = body.clone();
                written["metadata"]["resourceVersion"] = "8".into();
                answer(send, 200, written);
                // The renewal: no read first, conditional on what was written; a conflict
                // (someone else wrote) means not leading.
                let (method, _, body, send) = next(&mut handle).await;
                assert_eq!(method, "PUT");
                assert_eq!(body["metadata"]["resourceVersion"], "8");
                answer(
                    send,
                    409,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "reason": "Conflict", "code": 409, "message": "modified"}),
                );
            });
            let mut observed = None;
            let mut ours = None;
            let t0 = Instant::now();
            assert!(
                !step(&api, &config, &params(), &mut observed, &mut ours, t0)
                    .await
                    .unwrap()
            );
            let later = t0 + config.duration;
            assert!(
                step(&api, &config, &params(), &mut observed, &mut ours, later)
                    .await
                    .unwrap()
            );
            assert!(ours.is_some());
            assert!(!step(
                &api,
                &config,
                &params(),
                &mut observed,
                &mut ours,
                later + config.renew_every
            )
            .await
            .unwrap());
            assert!(
                ours.is_none(),
                "after a conflict the next round reads again"
            );
            server.await.unwrap();
        }

        #[tokio::test]
        async fn a_missing_lease_is_created_holding_it_and_released_with_no_holder() {
            let (api, mut handle) = api();
            let config = LeaseConfig::new("ns", "l", "me");
            let server = tokio::spawn(async move {
                let (_, _, _, send) = next(&mut handle).await;
                answer(
                    send,
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                          "reason": "NotFound", "code": 404, "message": "not found"}),
                );
                let (method, uri, body, send) = next(&mut handle).await;
                assert_eq!(method, "POST");
                assert!(
                    uri.starts_with("/apis/coordination.k8s.io/v1/namespaces/ns/leases?"),
                    "{uri}"
                );
                assert!(uri.contains("fieldManager=tollgate-controller"), "{uri}");
                assert_eq!(body["spec"]["holderIdentity"], "me");
                let mut written = body.clone();
                written["metadata"]["resourceVersion"] = "1".into();
                answer(send, 201, written.clone());
                // Release: read, then a conditional PUT without a holder.
                let (method, _, _, send) = next(&mut handle).await;
                assert_eq!(method, "GET");
                answer(send, 200, written);
                let (method, _, body, send) = next(&mut handle).await;
                assert_eq!(method, "PUT");
                assert_eq!(body["metadata"]["resourceVersion"], "1");
                assert!(
                    body["spec"]
                        .get("holderIdentity")
                        .is_none_or(Value::is_null),
                    "{body}"
                );
                answer(send, 200, body);
            });
            let mut observed = None;
            let mut ours = None;
            assert!(step(
                &api,
                &config,
                &params(),
                &mut observed,
                &mut ours,
                Instant::now()
            )
            .await
            .unwrap());
            release(&api, &config, &params()).await.unwrap();
            server.await.unwrap();
        }
    }
}
