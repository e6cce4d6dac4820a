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

/// The agent is woken this long after the last change of a burst...
pub const QUIET: Duration = Duration::from_millis(100);
/// ...and never later than this after its first change.
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
                        if k.absent {
                            info!(resource = %name, "the resource is served now: watching it");
                        } else if k.error.is_some() {
                            info!(resource = %name, "listed again after errors");
                        }
                        *k = KindState {
                            synced: true,
                            absent: false,
                            error: None,
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
                    first = !k.absent;
                    *k = KindState {
                        synced: true,
                        absent: true,
                        error: None,
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
        let mut key = ObjectRef::<Stored>::new_with(
            s.metadata.name.as_deref().unwrap_or_default(),
            kind.resource.clone(),
        );
        key.namespace = s.metadata.namespace.clone();
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

/// Wakes the agent after a burst of changes: [`QUIET`] after the last one, and at most
/// [`MAX_DELAY`] after the first; only once every kind has synced (before that, `next` has
/// nothing to give).
pub(crate) async fn debounce(shared: Arc<Shared>) {
    loop {
        shared.changed.notified().await;
        let cap = Instant::now() + MAX_DELAY;
        loop {
            let quiet = (Instant::now() + QUIET).min(cap);
            tokio::select! {
                _ = shared.changed.notified() => {
                    if Instant::now() >= cap {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(quiet.into()) => break,
            }
        }
        if !shared.lock().all_synced() {
            continue;
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
