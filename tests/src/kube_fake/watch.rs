//! WATCH streams: newline-delimited JSON watch events, bookmarks, the streaming-list end
//! marker, the server-side timeout, and the count of open watch connections.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use serde_json::{json, Value};
use tokio::sync::mpsc::{self, error::TryRecvError, UnboundedReceiver};

use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Store, WatchStart};
use super::Kind;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Error,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
            EventType::Error => "ERROR",
        }
    }
}

/// What the store sends to an open watch.
#[derive(Debug)]
pub enum WatchMsg {
    /// One event line, at resourceVersion `rv`.
    Event { rv: u64, line: Bytes },
    /// History compacted under the watch: send a 410 ERROR event and end.
    Expired(ApiError),
    /// End the stream cleanly.
    Close,
}

/// `{"type":..,"object":..}\n`.
pub fn event_line(ty: EventType, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": ty.as_str(), "object": object}))
        .expect("a JSON value serializes");
    line.push(b'\n');
    Bytes::from(line)
}

/// Which objects a list or watch sees: namespace, label and field selectors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchFilter {
    /// The namespace of a namespaced request (None: all namespaces).
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
}

impl WatchFilter {
    /// True when the object is in view.
    pub fn matches(&self, obj: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }

    /// True when no selector narrows the view (then a list reports remainingItemCount).
    pub fn is_empty(&self) -> bool {
        *self
            == WatchFilter {
                namespace: self.namespace.clone(),
                ..WatchFilter::default()
            }
    }

    /// The event this watch sees for a change, as the real server's watch cache decides it:
    /// an object that enters the view is ADDED, one that leaves it is DELETED.
    pub fn event_for<'a>(
        &self,
        event: EventType,
        object: &'a Value,
        previous: Option<&Value>,
    ) -> Option<(EventType, &'a Value)> {
        let now = self.matches(object);
        match event {
            EventType::Added => now.then_some((EventType::Added, object)),
            EventType::Deleted => now.then_some((EventType::Deleted, object)),
            EventType::Modified => {
                let before = previous.is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some((EventType::Modified, object)),
                    (false, true) => Some((EventType::Added, object)),
                    (true, false) => Some((EventType::Deleted, object)),
                    (false, false) => None,
                }
            }
            EventType::Bookmark | EventType::Error => None,
        }
    }
}

/// A BOOKMARK event: only kind, apiVersion and metadata.resourceVersion (and, at the end of a
/// streaming list's initial events, the `k8s.io/initial-events-end` annotation).
fn bookmark_line(kind: &Kind, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        EventType::Bookmark,
        &json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata}),
    )
}

/// The response body of a watch: frames from the task that runs the watch.
pub struct WatchBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// Unregisters a watch when its task ends, whatever ends it.
struct Registration {
    store: Arc<Mutex<Store>>,
    id: Option<u64>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            if let Ok(mut store) = self.store.lock() {
                store.unregister_watch(id);
            }
        }
    }
}

/// How a watch runs once started.
pub struct WatchRun {
    pub kind: Kind,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub bookmark_interval: Duration,
}

/// Spawns the task that feeds one watch connection and returns its body. The task ends when
/// the client goes away, at the timeout (after a last bookmark), on compaction (after a 410
/// ERROR event) or on [`Store::close_watches`].
pub fn spawn(
    store: Arc<Mutex<Store>>,
    start: WatchStart,
    events: UnboundedReceiver<WatchMsg>,
    run: WatchRun,
) -> WatchBody {
    let (out, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(feed(store, start, events, run, out));
    WatchBody { rx }
}

async fn feed(
    store: Arc<Mutex<Store>>,
    start: WatchStart,
    mut events: UnboundedReceiver<WatchMsg>,
    run: WatchRun,
    out: mpsc::Sender<Bytes>,
) {
    let registration = Registration {
        store: store.clone(),
        id: start.id,
    };
    for line in start.initial {
        if out.send(line).await.is_err() {
            return;
        }
    }
    if registration.id.is_none() {
        return;
    }
    if let Some(rv) = start.initial_events_end {
        if out.send(bookmark_line(&run.kind, rv, true)).await.is_err() {
            return;
        }
    }
    let mut at = start.at;
    let deadline = tokio::time::sleep(run.timeout);
    tokio::pin!(deadline);
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + run.bookmark_interval,
        run.bookmark_interval,
    );
    loop {
        tokio::select! {
            msg = events.recv() => match msg {
                Some(WatchMsg::Event { rv, line }) => {
                    at = at.max(rv);
                    if out.send(line).await.is_err() {
                        break;
                    }
                }
                Some(WatchMsg::Expired(err)) => {
                    let _ = out.send(event_line(EventType::Error, &err.to_status())).await;
                    break;
                }
                Some(WatchMsg::Close) | None => break,
            },
            _ = ticks.tick(), if run.bookmarks => {
                let Some(rv) = bookmark_version(&store, &mut events, &out, &mut at).await else { break };
                if out.send(bookmark_line(&run.kind, rv, false)).await.is_err() {
                    break;
                }
            }
            _ = &mut deadline => {
                if run.bookmarks {
                    if let Some(rv) = bookmark_version(&store, &mut events, &out, &mut at).await {
                        let _ = out.send(bookmark_line(&run.kind, rv, false)).await;
                    }
                }
                break;
            }
            _ = out.closed() => break,
        }
    }
    drop(registration);
}

/// The resourceVersion a bookmark may carry now: the store's current version, once every
/// event up to it has been sent (they are queued before the version is read, under the
/// store's lock). None when the stream must end instead.
async fn bookmark_version(
    store: &Arc<Mutex<Store>>,
    events: &mut UnboundedReceiver<WatchMsg>,
    out: &mpsc::Sender<Bytes>,
    at: &mut u64,
) -> Option<u64> {
    let current = store.lock().ok()?.resource_version();
    loop {
        match events.try_recv() {
            Ok(WatchMsg::Event { rv, line }) => {
                *at = (*at).max(rv);
                out.send(line).await.ok()?;
            }
            Ok(WatchMsg::Expired(err)) => {
                let _ = out
                    .send(event_line(EventType::Error, &err.to_status()))
                    .await;
                return None;
            }
            Ok(WatchMsg::Close) | Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => break,
        }
    }
    *at = (*at).max(current);
    Some(*at)
}
