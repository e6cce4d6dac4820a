//! One watcher and one reflector store per kind, and the debounced wake-up of the agent.
//!
//! Each kind's task lists and watches its objects as `DynamicObject`s (so that one object with
//! a field this agent does not know never fails the list of its kind: it reaches the model,
//! which refuses it by name), turns each into a [`Stored`] (its text; managedFields, status
//! and annotations dropped) and applies the event to the kind's store. An event that changes
//! only an object's status (same uid, same `generation`) is not applied: the store keeps the
//! object as it was, so the revision, whose id is made of the stored resourceVersions, does not
//! change either. A kind whose resource the API server does not know (404: its CRD is not
//! installed) counts as synced and empty, is logged once, and is listed again with the
//! watcher's backoff until it appears.
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use tollgate_model::source::Waker;
use tracing::{debug, info, warn};

use crate::object::{Stored, WatchedKind};

/// A change this long after the one before wakes the agent at once; changes closer together
/// are a burst, which wakes the agent this long after its last change...
pub const QUIET: Duration = Duration::from_millis(100);
/// ...and never later than this after the first change it held back.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// What the watch tasks tell [`crate::KubernetesSource::next`].
#[derive(Debug, Default)]
pub(crate) struct State {
    pub kinds: Vec<KindState>,
    /// The client could not be made: nothing will ever sync.
    pub fatal: Option<String>,
}

/// One kind's progress.
#[derive(Debug, Default)]
pub(crate) struct KindState {
    /// Its first list completed (or it is known to be absent).
    pub synced: bool,
    /// The API server answered 404 for its resource (the CRD is not installed).
    pub absent: bool,
    /// The last error of its list or watch, while it is failing.
    pub error: Option<String>,
    /// Which run of its watch this state belongs to: a kind watched [on
    /// demand](crate::WatchedKind::on_demand) is stopped and started again, and a stopped
    /// watch's task (aborted, but perhaps mid-step on another thread) must not report into its
    /// successor's state.
    pub epoch: u64,
}

impl State {
    pub fn all_synced(&self) -> bool {
        self.kinds.iter().all(|k| k.synced)
    }
}

/// Shared between the source and its tasks.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// Signalled when a kind syncs or fails, for `next`'s wait for the first sync.
    pub progress: Condvar,
    /// A store changed (the debouncer's input).
    pub changed: tokio::sync::Notify,
    pub waker: Mutex<Option<Waker>>,
}

impl Shared {
    pub fn new(kinds: usize) -> Self {
        Shared {
            state: Mutex::new(State {
                kinds: (0..kinds).map(|_| KindState::default()).collect(),
                fatal: None,
            }),
            progress: Condvar::new(),
            changed: tokio::sync::Notify::new(),
            waker: Mutex::new(None),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.progress.notify_all();
    }

    pub fn fail(&self, message: String) {
        self.update(|s| s.fatal = Some(message));
    }
}

/// Lists and watches one kind into `writer` until the task is aborted.
pub(crate) async fn watch_kind(
    client: kube::Client,
    index: usize,
    kind: WatchedKind,
    mut writer: Writer<Stored>,
    shared: Arc<Shared>,
    server: String,
    epoch: u64,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.resource);
    let reader = writer.as_reader();
    let name = kind.resource_name();
    let mut events = watcher(api).boxed();
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => {
                let (event, changed) = filter(&kind, &reader, event);
                let Some(event) = event else { continue };
                let done = matches!(event, Event::InitDone);
                writer.apply_watcher_event(&event);
                if done {
                    shared.update(|s| {
                        let k = &mut s.kinds[index];
                        if k.epoch != epoch {
                            return;
                        }
                        if k.absent {
                            info!(resource = %name, "the resource is served now: watching it");
                        } else if k.error.is_some() {
                            info!(resource = %name, "listed again after errors");
                        }
                        *k = KindState {
                            synced: true,
                            absent: false,
                            error: None,
                            epoch,
                        };
                    });
                }
                if changed {
                    shared.changed.notify_one();
                }
            }
            Err(e) if is_not_found(&e) => {
                let emptied = !reader.is_empty();
                if emptied {
                    // The resource went away (its CRD was deleted): so did its objects.
                    writer.apply_watcher_event(&Event::Init);
                    writer.apply_watcher_event(&Event::InitDone);
                }
                let mut first = false;
                shared.update(|s| {
                    let k = &mut s.kinds[index];
                    if k.epoch != epoch {
                        return;
                    }
                    first = !k.absent;
                    *k = KindState {
                        synced: true,
                        absent: true,
                        error: None,
                        epoch,
                    };
                });
                if first {
                    warn!(resource = %name, server = %server, "the API server does not serve this resource (its CRD is not installed?): read as empty, listed again with backoff");
                    shared.changed.notify_one();
                } else if emptied {
                    shared.changed.notify_one();
                }
            }
            Err(e) => {
                let message = format!("{name} from {server}: {e}");
                let mut repeated = false;
                shared.update(|s| {
                    let k = &mut s.kinds[index];
                    if k.epoch != epoch {
                        return;
                    }
                    repeated = k.error.as_deref() == Some(message.as_str());
                    k.error = Some(message.clone());
                });
                if repeated {
                    debug!("watch error (again): {message}");
                } else {
                    warn!("watch error, retrying with backoff: {message}");
                }
            }
        }
    }
}

/// The kind's list-and-watch stream, retried with kube's default backoff (0.8 s doubling to
/// 30 s, with jitter).
fn watcher(
    api: Api<DynamicObject>,
) -> impl futures_util::Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send {
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

pub(crate) fn is_not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code == 404,
        watcher::Error::WatchError(s) => s.code == 404,
        _ => false,
    }
}

/// The event to apply to the store (none: a status-only change), and whether the store's
/// content may change by it.
fn filter(
    kind: &WatchedKind,
    reader: &Store<Stored>,
    event: Event<DynamicObject>,
) -> (Option<Event<Stored>>, bool) {
    let kept = |s: &Stored| {
        let mut key = ObjectRef::<Stored>::new(&s.metadata.name);
        key.namespace = s.metadata.namespace.as_deref().map(str::to_owned);
        reader.get(&key).filter(|old| s.same_spec(old))
    };
    match event {
        Event::Apply(o) => {
            let s = Stored::of(kind, o);
            if kept(&s).is_some() {
                (None, false)
            } else {
                (Some(Event::Apply(s)), true)
            }
        }
        // A relist (the first, or after a 410): an object whose spec did not change keeps what
        // the store had, resourceVersion included, so that a relist alone is no new revision.
        Event::InitApply(o) => {
            let s = Stored::of(kind, o);
            let s = kept(&s).map(|old| (*old).clone()).unwrap_or(s);
            (Some(Event::InitApply(s)), false)
        }
        Event::Delete(o) => (Some(Event::Delete(Stored::of(kind, o))), true),
        Event::Init => (Some(Event::Init), false),
        Event::InitDone => (Some(Event::InitDone), true),
    }
}

/// Wakes the agent when the stores change, only once every kind has synced (before that,
/// `next` has nothing to give).
///
/// A change after a quiet spell (no change for [`QUIET`]) wakes the agent at once: a single
/// `kubectl apply` costs no waiting. The changes that follow it closely are a burst and are
/// coalesced: they wake the agent once, [`QUIET`] after the last of them, and never later than
/// [`MAX_DELAY`] after the first of them, so `kubectl apply -f dir/` of many objects is two
/// rebuilds (the first object at once, the rest together) rather than one per object, and a
/// change that never stops still reaches the agent every second.
pub(crate) async fn debounce(shared: Arc<Shared>) {
    loop {
        // Quiet: the first change is served at once.
        shared.changed.notified().await;
        wake(&shared);
        // A burst lasts as long as changes come less than QUIET apart.
        loop {
            tokio::select! {
                _ = shared.changed.notified() => {}
                _ = tokio::time::sleep(QUIET) => break,
            }
            // tokio's clock (not std's), so that the tests can pause it.
            let cap = tokio::time::Instant::now() + MAX_DELAY;
            loop {
                let quiet = (tokio::time::Instant::now() + QUIET).min(cap);
                tokio::select! {
                    _ = shared.changed.notified() => {
                        if tokio::time::Instant::now() >= cap {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(quiet) => break,
                }
            }
            wake(&shared);
        }
    }
}

/// Calls the agent's waker, if every kind has synced and the agent has set one.
fn wake(shared: &Shared) {
    if !shared.lock().all_synced() {
        return;
    }
    let waker = shared
        .waker
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(wake) = waker {
        wake();
    }
}

/// Waits until every kind has synced, or one that has not is failing (or the client could not
/// be made), or `timeout` passed.
pub(crate) fn wait_for_sync(shared: &Shared, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut state = shared.lock();
    loop {
        let failing = state.kinds.iter().any(|k| !k.synced && k.error.is_some());
        if state.all_synced() || failing || state.fatal.is_some() {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        state = match shared.progress.wait_timeout(state, deadline - now) {
            Ok((s, _)) => s,
            Err(p) => p.into_inner().0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// A debouncer over `kinds` kinds (all synced unless told), and the times it woke the agent,
    /// relative to `start`.
    struct Rig {
        shared: Arc<Shared>,
        wakes: Arc<Mutex<Vec<Duration>>>,
        start: Instant,
    }

    impl Rig {
        fn new(synced: bool) -> Rig {
            let shared = Arc::new(Shared::new(2));
            shared.update(|s| s.kinds.iter_mut().for_each(|k| k.synced = synced));
            let wakes = Arc::new(Mutex::new(Vec::new()));
            let start = Instant::now();
            let log = wakes.clone();
            *shared.waker.lock().unwrap() = Some(Arc::new(move || {
                log.lock().unwrap().push(start.elapsed());
            }));
            tokio::spawn(debounce(shared.clone()));
            Rig {
                shared,
                wakes,
                start,
            }
        }

        /// A store changes at `at` (after `start`).
        async fn change_at(&self, at: Duration) {
            tokio::time::sleep_until(self.start + at).await;
            self.shared.changed.notify_one();
        }

        /// The wake-ups so far, once the clock reached `at`.
        async fn wakes_at(&self, at: Duration) -> Vec<Duration> {
            tokio::time::sleep_until(self.start + at).await;
            // Let the debouncer run what became due at `at`.
            tokio::task::yield_now().await;
            self.wakes.lock().unwrap().clone()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_after_a_quiet_spell_wakes_the_agent_at_once() {
        let rig = Rig::new(true);
        rig.change_at(ms(1000)).await;
        assert_eq!(rig.wakes_at(ms(1000)).await, [ms(1000)]);
        // Nothing more comes of it.
        assert_eq!(rig.wakes_at(ms(3000)).await, [ms(1000)]);
        // Another lone change, after a quiet spell: at once again.
        rig.change_at(ms(3000)).await;
        assert_eq!(rig.wakes_at(ms(5000)).await, [ms(1000), ms(3000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn changes_close_behind_the_first_are_one_wake_up_after_the_quiet() {
        let rig = Rig::new(true);
        // `kubectl apply -f dir/`: ten objects 5 ms apart.
        for i in 0..10 {
            rig.change_at(ms(1000 + 5 * i)).await;
        }
        // The first at once; the other nine together, QUIET after the last of them.
        assert_eq!(rig.wakes_at(ms(1200)).await, [ms(1000), ms(1045) + QUIET]);
        // A change just under QUIET after that wake-up still belongs to the burst.
        rig.change_at(ms(1045) + QUIET + ms(90)).await;
        assert_eq!(
            rig.wakes_at(ms(4000)).await,
            [
                ms(1000),
                ms(1045) + QUIET,
                ms(1045) + QUIET + ms(90) + QUIET
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_that_never_pauses_reaches_the_agent_within_max_delay() {
        let rig = Rig::new(true);
        // A change every 30 ms for 3 s: the quiet period never comes.
        let changes: Vec<Duration> = (0..100).map(|i| ms(1000 + 30 * i)).collect();
        for &at in &changes {
            rig.change_at(at).await;
        }
        let wakes = rig.wakes_at(ms(6000)).await;
        assert_eq!(wakes[0], ms(1000), "the first change at once: {wakes:?}");
        // Every change is in a revision at most MAX_DELAY (plus one step of the burst) later.
        for at in &changes {
            let next = wakes.iter().find(|w| *w >= at);
            assert!(
                next.is_some_and(|w| *w - *at <= MAX_DELAY + ms(30)),
                "the change at {at:?} waited for {next:?}: {wakes:?}"
            );
        }
        // Coalesced: a few wake-ups for 100 changes.
        assert!(wakes.len() <= 5, "{wakes:?}");
        // The last one: QUIET after the last change.
        assert_eq!(wakes.last(), Some(&(changes[99] + QUIET)), "{wakes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_wakes_the_agent_before_every_kind_has_synced() {
        let rig = Rig::new(false);
        rig.change_at(ms(100)).await;
        assert!(rig.wakes_at(ms(2000)).await.is_empty());
        // The last kind syncs: its InitDone is a change, which wakes the agent at once.
        rig.shared
            .update(|s| s.kinds.iter_mut().for_each(|k| k.synced = true));
        rig.change_at(ms(2000)).await;
        assert_eq!(rig.wakes_at(ms(2000)).await, [ms(2000)]);
    }
}
