//! The controller: the one owner of what this node enforces. It holds the revision in force,
//! the parse cache and the retry schedule; reads the source and compiles on a blocking thread
//! (a Git fetch or a 100,000-rule compile never stalls the admin server or the proxy); and
//! enforces a compiled revision in one place ([`Controller::enforce`]). `/status` and the
//! metrics are written from here, never read back.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_compile::l4::failsafe::{self, Failsafe};
use tollgate_compile::snapshot::{compile_documents_for_node, Snapshot};
use tollgate_dataplane::{ChangeCause, Dataplane, IfaceChange, IfaceState};
use tollgate_model::{Documents, ParseCache};
use tollgate_proxy::Proxy;
use tollgate_source::last_good;
use tollgate_source::poll::{Next, PolicySource, Poll, Refusal, RefusalKind};
use tracing::{error, info, warn};

use super::schedule::RetrySchedule;
use crate::telemetry::{self, CounterNames, InterfaceStatus, RevisionStatus, Shared};

/// The revision in force.
#[derive(Debug, Clone)]
struct Applied {
    id: String,
}

/// What a read and compile found (the blocking part of a pass).
struct Compiled {
    poll: Poll,
    /// The compiled revision, when the source gave a new one; `Err` when the compiler refused it.
    snapshot: Option<Result<(Documents, Snapshot), Refusal>>,
    compile: Duration,
}

/// Reads the source, compiles, enforces and reports; see the module comment.
pub struct Controller {
    interfaces: Vec<String>,
    /// Lock-out protection: compiled into every revision, next to the interfaces, with the API
    /// server's endpoints of the revision's EndpointSlices (see [`failsafe_for`]).
    failsafe: Vec<Failsafe>,
    /// The API server's endpoints read at start: used while a revision carries none.
    failsafe_at_start: Vec<Failsafe>,
    state_dir: PathBuf,
    describe: String,
    /// Moved to the blocking thread for the duration of a read, and back.
    source: Option<Box<dyn PolicySource>>,
    /// Likewise: what every policy file parsed into, so a revision parses only what changed.
    cache: Option<ParseCache>,
    dp: Dataplane,
    proxy: Proxy,
    shared: Arc<Shared>,
    applied: Option<Applied>,
    /// The message of the last refusal, so that the same broken revision is logged once.
    last_refusal: Option<String>,
    /// The revision whose compiler warnings were logged last, with what it left out, so that
    /// they are logged once per revision (not on every re-read of the same one), and again
    /// when the same revision leaves out something else (a file under --tls-secrets-dir came
    /// or went: same id, other acceptance).
    warned: Option<String>,
    schedule: RetrySchedule,
}

impl Controller {
    /// A controller for `source`, enforcing through `dp` and `proxy`, reporting into `shared`.
    pub fn new(
        source: Box<dyn PolicySource>,
        dp: Dataplane,
        proxy: Proxy,
        shared: Arc<Shared>,
        interfaces: Vec<String>,
        state_dir: PathBuf,
        interval: Duration,
    ) -> Self {
        Controller {
            describe: source.describe(),
            interfaces,
            failsafe: Vec::new(),
            failsafe_at_start: Vec::new(),
            state_dir,
            source: Some(source),
            cache: Some(ParseCache::default()),
            dp,
            proxy,
            shared,
            applied: None,
            last_refusal: None,
            warned: None,
            schedule: RetrySchedule::new(interval),
        }
    }

    /// Sets the failsafe endpoints (before the first pass): `fixed` for the run, `at_start`
    /// (the API server's endpoints read at start) until a revision carries the EndpointSlices
    /// of `default/kubernetes`; logs them and shows them on `/status` (which then shows those
    /// of the revision in force).
    pub fn set_failsafe(&mut self, fixed: Vec<Failsafe>, at_start: Vec<Failsafe>) {
        let all: Vec<Failsafe> = fixed.iter().chain(&at_start).cloned().collect();
        let (kept, warnings) = failsafe::in_force(&all);
        for w in &warnings {
            warn!("{}", w.message);
        }
        for f in &kept {
            info!(endpoint = %f, "lock-out protection: TCP replies from this endpoint pass whatever the L4 policy says");
        }
        self.shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .failsafe = kept;
        self.failsafe = fixed;
        self.failsafe_at_start = at_start;
    }

    /// The data plane (attach, drift checks).
    pub fn dataplane(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    /// The proxy (drain at exit).
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    /// Gives the dataplane back (at exit, to detach).
    pub fn into_dataplane(self) -> Dataplane {
        self.dp
    }

    /// Makes the next pass read the current revision even when it has not changed (SIGHUP).
    pub fn rescan(&mut self) {
        if let Some(s) = self.source.as_mut() {
            s.rescan();
        }
    }

    /// The revision a source with history must not move backwards from: the one in force, or
    /// before the first apply of this run, the last good one saved on the node (so that a
    /// restart does not open the door to a rewind).
    fn history_anchor(&self) -> Option<String> {
        self.applied.as_ref().map(|a| a.id.clone()).or_else(|| {
            last_good::load(&self.state_dir)
                .ok()
                .flatten()
                .map(|d| d.revision.id)
        })
    }

    /// Starts a pass: the source's read and the compile run on a blocking thread. Await the
    /// returned [`PendingPass`] (the controller stays free meanwhile: interfaces can be
    /// reconciled while a slow fetch runs), then hand its result to
    /// [`Controller::finish_pass`].
    pub fn begin_pass(&mut self) -> PendingPass {
        PendingPass {
            started: Instant::now(),
            job: self.read_and_compile(),
        }
    }

    /// Ends a pass begun with [`Controller::begin_pass`]: enforces a new valid revision.
    /// Returns when the next pass is due.
    pub fn finish_pass(&mut self, pass: PassRead) -> Instant {
        let PassRead { started, joined } = pass;
        let compiled = match joined {
            Ok((source, cache, compiled)) => {
                self.source = Some(source);
                self.cache = Some(cache);
                compiled
            }
            // The closure catches the compiler's panics; a panic in the source's read is a bug
            // that leaves no source to read: stop rather than run without one.
            Err(e) => panic!("the source's read stopped: {e}"),
        };
        if let Some(fetch) = compiled.poll.fetch {
            self.shared
                .metrics
                .git_fetch_duration
                .observe(fetch.as_secs_f64());
        }
        let unavailable = match compiled.poll.outcome {
            Ok(Next::Unchanged) => false,
            Err(refusal) => {
                let unavailable = refusal.unavailable;
                self.refused(refusal);
                unavailable
            }
            Ok(Next::Revision(_)) => {
                match compiled.snapshot {
                    Some(Ok((docs, snapshot))) => {
                        let timing = Timing {
                            fetch: compiled.poll.fetch.unwrap_or_default(),
                            read: compiled.poll.read,
                            compile: compiled.compile,
                            started,
                        };
                        if let Err(refusal) = self.enforce(&docs, &snapshot, timing) {
                            self.refused(refusal);
                            // A revision that could not be applied may apply later (a port
                            // freed, a certificate fixed): read it again next time.
                            self.rescan();
                        }
                    }
                    Some(Err(refusal)) => self.refused(refusal),
                    None => unreachable!("a new revision is always compiled"),
                }
                false
            }
        };
        self.after_pass(unavailable)
    }

    /// The blocking part of a pass, on a blocking thread: the source's read (a Git fetch) and
    /// the compile. A panic in the compiler refuses the revision instead of taking the source
    /// and the agent down with it.
    fn read_and_compile(&mut self) -> ReadJob {
        let mut source = self
            .source
            .take()
            .expect("the source is home between passes");
        let mut cache = self.cache.take().expect("the cache is home between passes");
        let anchor = self.history_anchor();
        let interfaces = self.interfaces.clone();
        let (fixed, at_start) = (self.failsafe.clone(), self.failsafe_at_start.clone());
        tokio::task::spawn_blocking(move || {
            let poll = source.next(anchor.as_deref());
            let mut compile = Duration::ZERO;
            let snapshot = match &poll.outcome {
                Ok(Next::Revision(docs)) => {
                    let compile_started = Instant::now();
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let failsafe = failsafe_for(&fixed, &at_start, docs, false);
                        compile_documents_for_node(&mut cache, docs, Some(&interfaces), &failsafe)
                    }));
                    compile = compile_started.elapsed();
                    let id = docs.revision.id.clone();
                    Some(match result {
                        Ok(Ok(snapshot)) => Ok((docs.clone(), snapshot)),
                        Ok(Err(errors)) => {
                            Err(Refusal::refused(RefusalKind::Invalid, errors).of(&id))
                        }
                        Err(_) => {
                            // The cache may be half-updated: start it over.
                            cache = ParseCache::default();
                            Err(Refusal::refused(
                                RefusalKind::Invalid,
                                "internal error: the compiler panicked on this revision (a bug; please report it with the revision)",
                            )
                            .of(&id))
                        }
                    })
                }
                _ => None,
            };
            (
                source,
                cache,
                Compiled {
                    poll,
                    snapshot,
                    compile,
                },
            )
        })
    }

    /// Enforces a compiled revision: the proxy's new ports are bound and its files loaded
    /// first (a port that cannot be bound refuses the revision before the kernel side
    /// changes), then the kernel tables flip, then the proxy switches, then it is saved as the
    /// last good revision and reported.
    fn enforce(
        &mut self,
        docs: &Documents,
        snapshot: &Snapshot,
        timing: Timing,
    ) -> Result<(), Refusal> {
        let id = snapshot.revision.id.clone();
        let refused =
            |e: &dyn std::fmt::Display| Refusal::refused(RefusalKind::Apply, e.to_string()).of(&id);
        let prepared = self.proxy.prepare(&snapshot.l7).map_err(|e| refused(&e))?;
        let stats = self.dp.apply(&snapshot.l4).map_err(|e| refused(&e))?;
        self.proxy.commit(prepared, &id);
        self.publish_counter_names();
        if let Err(e) = last_good::save(&self.state_dir, docs) {
            warn!(revision = %id, error = %e, "could not save the last good revision in the state directory");
        }
        self.applied(
            snapshot,
            &self.describe.clone(),
            timing.started.elapsed(),
            true,
        );
        info!(
            revision = %id,
            policies = snapshot.policies.len(),
            rules = snapshot.l4.rules.len(),
            http_listeners = snapshot.l7.policy.listeners.len(),
            http_routes = snapshot.l7.policy.routes.len(),
            source_entries = snapshot.l4.source_entries(),
            port_entries = snapshot.l4.port_entries(),
            writes = stats.writes,
            fetch_ms = ms(timing.fetch),
            read_ms = ms(timing.read),
            compile_ms = ms(timing.compile),
            to_enforced_ms = ms(stats.to_flip),
            "policy applied"
        );
        Ok(())
    }

    /// Records a revision in force: controller state, metrics, `/status`. `read` is false for
    /// the last good revision enforced at start, which was not read from the source (the last
    /// attempt and its error stay as they were).
    fn applied(&mut self, snapshot: &Snapshot, source: &str, took: Duration, read: bool) {
        let id = snapshot.revision.id.clone();
        let acceptance = &snapshot.acceptance;
        let problems = tollgate_model::PolicyErrors(acceptance.problems());
        let warned = format!("{id}\n{problems}");
        if self.warned.as_deref() != Some(warned.as_str()) {
            for w in &snapshot.warnings {
                warn!(revision = %id, "policy warning (the revision is enforced): {w}");
            }
            if !acceptance.complete() {
                warn!(
                    revision = %id,
                    left_out = acceptance.left_out.len(),
                    partial = acceptance.partial.len(),
                    "revision applied in part: the objects and rules below are left out (or answer 500), everything else is enforced:\n{problems}"
                );
            }
            self.warned = Some(warned);
        }
        self.applied = Some(Applied { id: id.clone() });
        if read {
            self.last_refusal = None;
        }
        self.shared.metrics.applied(source, &id, took.as_secs_f64());
        self.shared.metrics.acceptance(&snapshot.acceptance);
        let revision = RevisionStatus {
            id,
            source: source.to_owned(),
            at_unix: telemetry::unix_now(),
            refused: None,
        };
        let mut s = self
            .shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner());
        s.applied = Some(revision.clone());
        if read {
            s.attempted = Some(revision);
            s.last_error = None;
        }
        s.rules = snapshot.l4.rules.len();
        s.source_entries = snapshot.l4.source_entries();
        s.port_entries = snapshot.l4.port_entries();
        s.fast_path = self.dp.fast_path();
        s.http_ports = self.proxy.ports();
        s.routes = snapshot.l7.policy.routes.len();
        s.not_served = telemetry::NotServed::of(&snapshot.acceptance);
        s.l4_not_for_this_node = snapshot.not_for_this_node.iter().cloned().collect();
        // Logged as the API server's endpoints come and go (its EndpointSlices).
        let same = |a: &Failsafe, b: &Failsafe| a.addr == b.addr && a.port == b.port;
        for f in &snapshot.l4.failsafe {
            if !s.failsafe.iter().any(|o| same(o, f)) {
                info!(endpoint = %f, "lock-out protection: TCP replies from this endpoint pass whatever the L4 policy says");
            }
        }
        for f in &s.failsafe {
            if !snapshot.l4.failsafe.iter().any(|n| same(n, f)) {
                info!(endpoint = %f, "lock-out protection no longer covers this endpoint");
            }
        }
        s.failsafe = snapshot.l4.failsafe.clone();
        s.objects = snapshot
            .object_counts
            .iter()
            .map(|(k, n)| ((*k).to_owned(), *n))
            .collect();
        s.listeners = telemetry::ListenerStatus::of(&snapshot.l7.policy);
        s.time_to_enforce_ms = read.then_some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
        drop(s);
        self.shared.status_changed.notify_one();
    }

    /// Reports a refused revision (or a source that could not be read): the revision in force
    /// stays enforced. The same refusal twice in a row is logged and counted once.
    fn refused(&mut self, refusal: Refusal) {
        let Refusal {
            kind,
            message,
            revision,
            ..
        } = refusal;
        let applied = self
            .applied
            .as_ref()
            .map_or("none".to_owned(), |a| a.id.clone());
        if self.last_refusal.as_deref() != Some(message.as_str()) {
            // Never claim a revision stays in force when none is (a first start).
            let nothing = if self.dp.adopted_state() {
                "the revision pinned by the previous run stays enforced"
            } else {
                "no revision was applied before: nothing is enforced yet"
            };
            if kind == RefusalKind::Apply {
                let keeps = if self.applied.is_some() {
                    "the previous revision stays enforced"
                } else {
                    nothing
                };
                warn!(source = %self.describe, revision = revision.as_deref().unwrap_or("-"), applied = %applied, reason = kind.as_str(), "apply failed; {keeps}:\n{message}");
            } else {
                let keeps = if self.applied.is_some() {
                    "the last good revision stays enforced"
                } else {
                    nothing
                };
                error!(source = %self.describe, applied = %applied, reason = kind.as_str(), "revision refused; {keeps}:\n{message}");
            }
            self.shared.metrics.failed(kind.as_str());
        }
        let mut status = self
            .shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner());
        status.last_error = Some(message.clone());
        // A revision that was read and refused is the last attempted one; a source that could
        // not be read leaves the last attempt as it was.
        if let Some(id) = revision {
            status.attempted = Some(RevisionStatus {
                id,
                source: self.describe.clone(),
                at_unix: telemetry::unix_now(),
                refused: Some(kind.as_str().to_owned()),
            });
        }
        self.last_refusal = Some(message);
        drop(status);
        self.shared.status_changed.notify_one();
    }

    /// Records a pass in the schedule and in `/status`; returns when the next one is due.
    fn after_pass(&mut self, source_unavailable: bool) -> Instant {
        let before = self.schedule.failures();
        self.schedule.record(source_unavailable);
        let delay = self.schedule.delay();
        let next = Instant::now() + delay;
        if self.schedule.failures() > 0 {
            warn!(
                consecutive_failures = self.schedule.failures(),
                retry_in_s = delay.as_secs_f64(),
                "the source cannot be read; retrying with backoff"
            );
        } else if before > 0 {
            info!(after_failures = before, "the source can be read again");
        }
        let mut s = self
            .shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner());
        s.consecutive_failures = self.schedule.failures();
        s.next_attempt = Some(next);
        drop(s);
        self.shared.status_changed.notify_one();
        next
    }

    /// Whether a revision is in force.
    pub fn has_applied(&self) -> bool {
        self.applied.is_some()
    }

    /// At start, when the source gives no valid revision: enforce the last good one saved in
    /// the state directory (the pinned maps may hold it already; after a reboot they do not).
    pub fn enforce_last_good(&mut self) {
        let docs = match last_good::load(&self.state_dir) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, dir = %self.state_dir.display(), "the saved last good revision is unreadable");
                return;
            }
        };
        let id = docs.revision.id.clone();
        let mut cache = ParseCache::default();
        let failsafe = failsafe_for(&self.failsafe, &self.failsafe_at_start, &docs, true);
        let snapshot = match compile_documents_for_node(
            &mut cache,
            &docs,
            Some(&self.interfaces),
            &failsafe,
        ) {
            Ok(s) => s,
            Err(e) => {
                warn!(revision = %id, "the saved last good revision does not compile for these interfaces:\n{e}");
                return;
            }
        };
        let prepared = match self.proxy.prepare(&snapshot.l7) {
            Ok(p) => p,
            Err(e) => {
                warn!(revision = %id, error = %e, "could not apply the saved last good revision");
                return;
            }
        };
        match self.dp.apply(&snapshot.l4) {
            Ok(_) => {
                self.proxy.commit(prepared, &id);
                self.publish_counter_names();
                let source = format!(
                    "{} (last good, from {})",
                    docs.revision.source,
                    self.state_dir.display()
                );
                self.applied(&snapshot, &source, Duration::ZERO, false);
                warn!(revision = %id, "the source gives no valid revision: enforcing the last good revision saved in the state directory; policy applied");
            }
            Err(e) => {
                warn!(revision = %id, error = %e, "could not apply the saved last good revision")
            }
        }
    }

    /// Puts back kernel map entries changed behind the agent's back.
    pub fn repair_drift(&mut self) {
        let revision = self
            .applied
            .as_ref()
            .map(|a| a.id.clone())
            .unwrap_or_default();
        match self.dp.repair_drift() {
            Ok(report) if report.is_empty() => {}
            Ok(report) => {
                self.shared
                    .metrics
                    .drift_corrections
                    .inc_by(report.corrected as u64);
                let maps = report
                    .maps
                    .iter()
                    .map(|(m, n)| format!("{m}:{n}"))
                    .collect::<Vec<_>>()
                    .join(",");
                let rules = report.rules.iter().cloned().collect::<Vec<_>>().join(",");
                warn!(revision = %revision, corrected = report.corrected, maps = %maps, rules = %rules, "drift corrected: kernel map entries were changed behind the agent's back and are put back");
            }
            Err(e) => {
                warn!(revision = %revision, error = %e, "could not check the kernel maps for drift")
            }
        }
    }

    /// Looks at every configured interface and puts the program back where it is missing
    /// (see `Dataplane::reconcile_interfaces`): on every link event and every drift check.
    /// Logs what changed, counts a program detached behind the agent's back as drift, and
    /// reports every interface in `/status` and the metrics.
    pub fn reconcile_interfaces(&mut self) {
        let revision = self
            .applied
            .as_ref()
            .map(|a| a.id.clone())
            .unwrap_or_default();
        for change in self.dp.reconcile_interfaces() {
            let IfaceChange {
                name,
                before,
                after,
                cause,
            } = change;
            let ifindex = after.ifindex().unwrap_or(0);
            let mode = after.mode_str();
            match (cause, &after) {
                (ChangeCause::Gone, _) => warn!(
                    interface = %name,
                    was_ifindex = before.ifindex().unwrap_or(0),
                    "the interface is gone: nothing is enforced on it until it comes back (not ready)"
                ),
                (ChangeCause::Appeared, _) => {
                    info!(interface = %name, ifindex, mode, "enforcing on interface (it appeared)")
                }
                (ChangeCause::Reattached, _) => {
                    self.shared.metrics.drift_corrections.inc();
                    warn!(revision = %revision, interface = %name, ifindex, mode, "drift corrected: the program had been detached from the interface behind the agent's back and is attached again");
                }
                (ChangeCause::Failed, IfaceState::NotAttached { reason, .. }) => error!(
                    interface = %name,
                    ifindex,
                    "could not attach to the interface; nothing is enforced on it (not ready), retrying at every check: {reason}"
                ),
                (ChangeCause::Failed, _) => {}
            }
        }
        self.report_interfaces();
    }

    /// Writes every configured interface's state into `/status` and the metrics.
    pub fn report_interfaces(&self) {
        let states = self.dp.interface_states();
        for (name, state) in &states {
            self.shared
                .metrics
                .interface_enforced(name, state.is_enforced());
        }
        let mut s = self
            .shared
            .status
            .write()
            .unwrap_or_else(|p| p.into_inner());
        s.interfaces = states
            .into_iter()
            .map(|(name, state)| InterfaceStatus::new(name, &state))
            .collect();
        drop(s);
        self.shared.status_changed.notify_one();
    }

    /// Publishes the names of the counter slots for the metrics collector.
    pub fn publish_counter_names(&self) {
        let names: CounterNames = self
            .dp
            .ids()
            .rules
            .iter()
            .map(|(p, r, id)| (p.to_owned(), r.clone(), id))
            .collect();
        if let Ok(mut n) = self.shared.counter_names.write() {
            *n = Arc::new(names);
        }
    }
}

/// The blocking read and compile of a pass; it hands the source and the parse cache back.
type ReadJob = tokio::task::JoinHandle<(Box<dyn PolicySource>, ParseCache, Compiled)>;

/// A pass whose read and compile are running; await it for a [`PassRead`].
pub struct PendingPass {
    started: Instant,
    job: ReadJob,
}

/// The read and compile of a pass, done.
pub struct PassRead {
    started: Instant,
    joined: Result<(Box<dyn PolicySource>, ParseCache, Compiled), tokio::task::JoinError>,
}

impl std::future::Future for PendingPass {
    type Output = PassRead;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<PassRead> {
        let started = self.started;
        std::pin::Pin::new(&mut self.job)
            .poll(cx)
            .map(|joined| PassRead { started, joined })
    }
}

/// What the steps of a pass took, for the "policy applied" line.
#[derive(Debug, Clone, Copy)]
struct Timing {
    fetch: Duration,
    read: Duration,
    compile: Duration,
    started: Instant,
}

/// Milliseconds, to a tenth, for the logs.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

/// The failsafe endpoints a revision is compiled with: the `fixed` ones, and the API server's
/// endpoints of its EndpointSlices of `default/kubernetes` (Kubernetes mode), so that lock-out
/// protection follows an API server that moves. A revision without them (a directory or Git
/// one, or a cluster whose slices of that Service cannot be read) keeps those read `at_start`;
/// so does the last good revision enforced at start (`restoring`), whose slices were saved
/// with it and may be stale: then both count.
fn failsafe_for(
    fixed: &[Failsafe],
    at_start: &[Failsafe],
    docs: &Documents,
    restoring: bool,
) -> Vec<Failsafe> {
    let mut out = fixed.to_vec();
    let of_cluster = docs
        .cluster
        .as_deref()
        .and_then(tollgate_kubernetes::failsafe::of_cluster);
    if restoring || of_cluster.is_none() {
        out.extend(at_start.iter().cloned());
    }
    for sa in of_cluster.unwrap_or_default() {
        out.push(Failsafe::new(
            sa.ip(),
            sa.port(),
            "EndpointSlice default/kubernetes",
        ));
    }
    out
}

#[cfg(test)]
mod failsafe_tests {
    use super::*;
    use std::sync::Arc;
    use tollgate_model::cluster::{
        AddressType, Cluster, Endpoint, EndpointSlice, Protocol, SlicePort,
    };

    fn api_server_at(ip: &str) -> Documents {
        let mut docs = Documents::inline(&[]);
        docs.cluster = Some(Arc::new(Cluster {
            slices: vec![Arc::new(EndpointSlice {
                namespace: "default".into(),
                name: "kubernetes".into(),
                service: "kubernetes".into(),
                address_type: AddressType::IPv4,
                ports: vec![SlicePort {
                    name: "https".into(),
                    port: 6443,
                    protocol: Protocol::Tcp,
                    app_protocol: None,
                }]
                .into(),
                endpoints: vec![Endpoint {
                    address: ip.parse().unwrap(),
                    ready: None,
                    serving: None,
                    terminating: None,
                }]
                .into(),
            })],
            ..Cluster::default()
        }));
        docs
    }

    fn addrs(list: &[Failsafe]) -> Vec<String> {
        list.iter()
            .map(|f| format!("{}:{}", f.addr, f.port))
            .collect()
    }

    #[test]
    fn the_revisions_slices_replace_the_endpoints_read_at_start() {
        let fixed = vec![Failsafe::new("10.96.0.1".parse().unwrap(), 443, "connect")];
        let at_start = vec![Failsafe::new("192.0.2.1".parse().unwrap(), 6443, "start")];
        let moved = api_server_at("192.0.2.2");
        assert_eq!(
            addrs(&failsafe_for(&fixed, &at_start, &moved, false)),
            ["10.96.0.1:443", "192.0.2.2:6443"]
        );
        // The last good revision at start: its saved slices may be stale, both count.
        assert_eq!(
            addrs(&failsafe_for(&fixed, &at_start, &moved, true)),
            ["10.96.0.1:443", "192.0.2.1:6443", "192.0.2.2:6443"]
        );
        // A revision without the slices (a directory, or slices not readable).
        assert_eq!(
            addrs(&failsafe_for(
                &fixed,
                &at_start,
                &Documents::inline(&[]),
                false
            )),
            ["10.96.0.1:443", "192.0.2.1:6443"]
        );
    }
}
