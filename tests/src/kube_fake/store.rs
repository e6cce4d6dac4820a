//! The fake's state: objects, one global resourceVersion counter (as etcd's revision), the
//! event history that watches and paged lists read, and the open watches.
//!
//! Every write goes through [`Store::write`] or [`Store::commit_delete`], which bump the
//! counter, append to the history and tell every matching watch under the same lock, so a
//! watch that registers under that lock never misses nor repeats an event.

use std::collections::BTreeMap;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::fields;
use super::status::ApiError;
use super::watch::{event_line, EventType, WatchFilter, WatchMsg};
use super::Kind;

/// Where an object lives: its resource (group and plural, whatever the version it was written
/// with), namespace (empty when cluster-scoped) and name. Ordered as etcd keys are.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub(super) fn new(kind: &Kind, namespace: Option<&str>, name: &str) -> Self {
        ObjKey {
            group: kind.group.clone(),
            plural: kind.plural.clone(),
            namespace: if kind.namespaced {
                namespace.unwrap_or_default().to_string()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    fn same_resource(&self, kind: &Kind) -> bool {
        self.group == kind.group && self.plural == kind.plural
    }
}

/// One change in the history.
struct HistoryEntry {
    rv: u64,
    key: ObjKey,
    event: EventType,
    /// The object after the change (the last state, for a deletion).
    object: Value,
    /// The object before it (None for a creation).
    previous: Option<Value>,
}

/// One open watch.
struct Watcher {
    id: u64,
    kind: Kind,
    filter: WatchFilter,
    tx: UnboundedSender<WatchMsg>,
    /// The last resourceVersion sent (for the 410 message on compaction).
    last_rv: u64,
}

/// What a write request carries besides its body.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    /// The field manager (the `fieldManager` parameter, or the User-Agent's product).
    pub manager: String,
    /// `dryRun=All`: validate and answer, change nothing.
    pub dry_run: bool,
}

/// A PATCH body.
pub enum Patch {
    /// `application/merge-patch+json` (RFC 7386; also strategic merge for built-in kinds).
    Merge(Value),
    /// `application/json-patch+json` (RFC 6902).
    Json(json_patch::Patch),
    /// `application/apply-patch+yaml`.
    Apply {
        /// The configuration.
        config: Value,
        /// `force=true`.
        force: bool,
    },
}

/// The parameters of a LIST.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub filter: WatchFilter,
}

/// The parameters of a WATCH.
#[derive(Debug, Clone, Default)]
pub struct WatchQuery {
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub filter: WatchFilter,
}

/// How a watch starts: the lines to send first, then (if registered) the live events.
pub struct WatchStart {
    /// The id to unregister with; None when the watch ends after `initial` (410).
    pub id: Option<u64>,
    /// Event lines to send first.
    pub initial: Vec<Bytes>,
    /// The resourceVersion of the `k8s.io/initial-events-end` bookmark to send after `initial`.
    pub initial_events_end: Option<u64>,
    /// The resourceVersion the watch is at after `initial`.
    pub at: u64,
}

/// Delete preconditions (DeleteOptions.preconditions).
#[derive(Debug, Clone, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// The state.
pub struct Store {
    kinds: Vec<Kind>,
    pub(super) objects: BTreeMap<ObjKey, Value>,
    rv: u64,
    /// The oldest resourceVersion a watch or a list may still start from.
    floor: u64,
    history: Vec<HistoryEntry>,
    watchers: Vec<Watcher>,
    next_watch_id: u64,
    pub(super) uid_seed: u64,
    pub(super) uids: u64,
    peak_watches: usize,
}

/// RFC 3339 UTC, whole seconds, as metadata times are written.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub(super) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

pub(super) fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(key)?.as_str()
}

pub(super) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// The object without metadata and status: what `metadata.generation` counts changes of.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    v
}

/// Copies the server-owned metadata of `from` into `to` (what no client request may change).
pub(super) fn keep_system_metadata(from: &Value, to: &mut Value) {
    let src = from.get("metadata").and_then(Value::as_object).cloned();
    let dst = meta_mut(to);
    for k in fields::SYSTEM_METADATA {
        if k == "managedFields" {
            continue;
        }
        dst.remove(k);
        if let Some(v) = src.as_ref().and_then(|m| m.get(k)) {
            dst.insert(k.to_string(), v.clone());
        }
    }
}

/// The object as served for `kind` (the stored one may have been written with another version).
pub fn present(obj: &Value, kind: &Kind) -> Value {
    let mut v = obj.clone();
    v["apiVersion"] = Value::String(kind.api_version());
    v["kind"] = Value::String(kind.kind.clone());
    v
}

impl Store {
    /// An empty store serving `kinds`.
    pub fn new(kinds: Vec<Kind>) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id());
        Store {
            kinds,
            objects: BTreeMap::new(),
            rv: 0,
            floor: 0,
            history: Vec::new(),
            watchers: Vec::new(),
            next_watch_id: 1,
            uid_seed: seed,
            uids: 0,
            peak_watches: 0,
        }
    }

    /// The kinds served.
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// The kind served at `/{group}/{version}/{plural}`.
    pub fn kind_at(&self, group: &str, version: &str, plural: &str) -> Option<Kind> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .cloned()
    }

    /// The kind an object names by apiVersion and kind.
    pub fn kind_of(&self, api_version: &str, kind: &str) -> Option<Kind> {
        self.kinds
            .iter()
            .find(|k| k.api_version() == api_version && k.kind == kind)
            .cloned()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub(super) fn new_uid(&mut self) -> String {
        self.uids += 1;
        let a = splitmix(self.uid_seed ^ self.uids);
        let b = splitmix(a);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// GET one object.
    pub fn get(&self, kind: &Kind, ns: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&ObjKey::new(kind, ns, name))
            .map(|o| present(o, kind))
            .ok_or_else(|| ApiError::not_found(&kind.resource(), name))
    }

    /// The objects of `kind` as they were at `at` (history rolled back), in key order. By
    /// reference: a paged list of a large kind reads this once per page, and copying every
    /// object each time made listing 10,000 objects take seconds.
    fn snapshot(&self, kind: &Kind, at: u64) -> BTreeMap<&ObjKey, &Value> {
        let mut state: BTreeMap<&ObjKey, &Value> = self
            .objects
            .iter()
            .filter(|(k, _)| k.same_resource(kind))
            .collect();
        for e in self.history.iter().rev().take_while(|e| e.rv > at) {
            if !e.key.same_resource(kind) {
                continue;
            }
            match &e.previous {
                Some(prev) => state.insert(&e.key, prev),
                None => state.remove(&e.key),
            };
        }
        state
    }

    /// LIST, with resourceVersion semantics, selectors and `limit`/`continue` paging served
    /// from a consistent snapshot.
    pub fn list(&self, kind: &Kind, ns: Option<&str>, q: &ListQuery) -> Result<Value, ApiError> {
        let rv_param = q.resource_version.as_deref().filter(|s| !s.is_empty());
        if let Some(m) = &q.resource_version_match {
            if rv_param.is_none() {
                return Err(ApiError::invalid(
                    "ListOptions.meta.k8s.io",
                    "",
                    "resourceVersionMatch",
                    "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if m != "NotOlderThan" && m != "Exact" {
                return Err(ApiError::invalid(
                    "ListOptions.meta.k8s.io",
                    "",
                    "resourceVersionMatch",
                    &format!("Unsupported value: \"{m}\""),
                ));
            }
        }
        let exact = q.resource_version_match.as_deref() == Some("Exact");
        let mut limit = q.limit.filter(|l| *l > 0);
        let (at, start) = if let Some(token) = &q.continue_token {
            if rv_param.is_some() {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (at, start) = decode_continue(token)?;
            if at < self.floor {
                return Err(ApiError::continue_expired());
            }
            (at, Some(start))
        } else {
            match rv_param {
                None => (self.rv, None),
                Some("0") if exact => {
                    return Err(ApiError::invalid(
                        "ListOptions.meta.k8s.io",
                        "",
                        "resourceVersionMatch",
                        "Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                    ))
                }
                // "Any": served from the watch cache, which ignores `limit`.
                Some("0") => {
                    limit = None;
                    (self.rv, None)
                }
                Some(text) => {
                    let n = parse_rv(text)?;
                    if n > self.rv {
                        return Err(ApiError::too_large(n, self.rv));
                    }
                    if exact {
                        if n < self.floor {
                            return Err(ApiError::too_old(n, self.floor));
                        }
                        (n, None)
                    } else {
                        (self.rv, None)
                    }
                }
            }
        };
        let matching: Vec<(&ObjKey, &Value)> = self
            .snapshot(kind, at)
            .into_iter()
            .filter(|(k, v)| {
                ns.is_none_or(|ns| k.namespace == ns)
                    && q.filter.matches(v)
                    && start
                        .as_ref()
                        .is_none_or(|(sns, sname)| (&k.namespace, &k.name) > (sns, sname))
            })
            .collect();
        let total = matching.len();
        let page: Vec<&(&ObjKey, &Value)> = matching.iter().take(limit.unwrap_or(total)).collect();
        let mut metadata = json!({"resourceVersion": at.to_string()});
        if page.len() < total {
            let last = &page.last().expect("a limit of at least 1").0;
            metadata["continue"] = Value::String(encode_continue(at, &last.namespace, &last.name));
            if q.filter.is_empty() {
                metadata["remainingItemCount"] = json!(total - page.len());
            }
        }
        Ok(json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version(),
            "metadata": metadata,
            "items": page.iter().map(|(_, v)| present(v, kind)).collect::<Vec<_>>(),
        }))
    }

    /// Stores a change: generation, resourceVersion, history, watches. Returns the object as
    /// stored and whether anything changed (an unchanged object is not written at all).
    pub(super) fn write(
        &mut self,
        kind: &Kind,
        key: ObjKey,
        old: Option<&Value>,
        mut new: Value,
        dry_run: bool,
    ) -> (Value, bool) {
        if let Some(old) = old {
            let finalized = meta_str(&new, "deletionTimestamp").is_some()
                && new
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty);
            if finalized {
                if dry_run {
                    return (present(&new, kind), true);
                }
                return (self.commit_delete(kind, &key, new), true);
            }
            if *old == new {
                return (present(old, kind), false);
            }
        }
        let generation = match old {
            Some(old) => {
                let before = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_u64)
                    .unwrap_or(1);
                if spec_part(old) != spec_part(&new)
                    || (meta_str(old, "deletionTimestamp").is_none()
                        && meta_str(&new, "deletionTimestamp").is_some())
                {
                    before + 1
                } else {
                    before
                }
            }
            None => 1,
        };
        meta_mut(&mut new).insert("generation".into(), json!(generation));
        if dry_run {
            return (present(&new, kind), true);
        }
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut new).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let event = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.objects.insert(key.clone(), new.clone());
        self.record(rv, key, event, new.clone(), old.cloned());
        (present(&new, kind), true)
    }

    /// Removes an object now (no finalizers left): a DELETED event with the deletion's
    /// resourceVersion, as etcd reports it.
    pub(super) fn commit_delete(&mut self, kind: &Kind, key: &ObjKey, mut last: Value) -> Value {
        let previous = self.objects.remove(key);
        self.rv += 1;
        let rv = self.rv;
        meta_mut(&mut last).insert("resourceVersion".into(), Value::String(rv.to_string()));
        self.record(rv, key.clone(), EventType::Deleted, last.clone(), previous);
        present(&last, kind)
    }

    fn record(
        &mut self,
        rv: u64,
        key: ObjKey,
        event: EventType,
        object: Value,
        previous: Option<Value>,
    ) {
        self.watchers.retain(|w| !w.tx.is_closed());
        for w in self
            .watchers
            .iter_mut()
            .filter(|w| key.same_resource(&w.kind))
        {
            if let Some((ty, obj)) = w.filter.event_for(event, &object, previous.as_ref()) {
                let line = event_line(ty, &present(obj, &w.kind));
                if w.tx.send(WatchMsg::Event { rv, line }).is_ok() {
                    w.last_rv = rv;
                }
            }
        }
        self.history.push(HistoryEntry {
            rv,
            key,
            event,
            object,
            previous,
        });
    }
    /// The (namespace, name) in `ns` (or everywhere) that match `filter`, for DELETE on a
    /// collection.
    pub fn names_matching(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        filter: &WatchFilter,
    ) -> Vec<(String, String)> {
        self.objects
            .iter()
            .filter(|(k, v)| {
                k.same_resource(kind) && ns.is_none_or(|ns| k.namespace == ns) && filter.matches(v)
            })
            .map(|(k, _)| (k.namespace.clone(), k.name.clone()))
            .collect()
    }

    /// Starts a watch: what to send first and, unless it ends at once, its registration.
    pub fn watch(
        &mut self,
        kind: &Kind,
        q: &WatchQuery,
        tx: UnboundedSender<WatchMsg>,
    ) -> Result<WatchStart, ApiError> {
        let rv_param = q.resource_version.as_deref().filter(|s| !s.is_empty());
        if q.send_initial_events {
            if !q.bookmarks {
                return Err(ApiError::invalid(
                    "ListOptions.meta.k8s.io",
                    "",
                    "allowWatchBookmarks",
                    "Required value: allowWatchBookmarks must be set to true when sendInitialEvents is set",
                ));
            }
            if q.resource_version_match.as_deref() != Some("NotOlderThan") {
                return Err(ApiError::invalid(
                    "ListOptions.meta.k8s.io",
                    "",
                    "resourceVersionMatch",
                    "Forbidden: sendInitialEvents requires resourceVersionMatch=NotOlderThan",
                ));
            }
        } else if q.resource_version_match.is_some() {
            return Err(ApiError::invalid(
                "ListOptions.meta.k8s.io",
                "",
                "resourceVersionMatch",
                "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        let requested = match rv_param {
            None | Some("0") => None,
            Some(text) => Some(parse_rv(text)?),
        };
        if let Some(n) = requested.filter(|n| *n > self.rv) {
            return Err(ApiError::too_large(n, self.rv));
        }
        let mut initial = Vec::new();
        let mut initial_events_end = None;
        match requested {
            // From a given version: the history after it (410 when compacted away).
            Some(n) if !q.send_initial_events => {
                if n < self.floor {
                    let line = event_line(
                        EventType::Error,
                        &ApiError::too_old(n, self.floor).to_status(),
                    );
                    return Ok(WatchStart {
                        id: None,
                        initial: vec![line],
                        initial_events_end: None,
                        at: n,
                    });
                }
                for e in self
                    .history
                    .iter()
                    .filter(|e| e.rv > n && e.key.same_resource(kind))
                {
                    if let Some((ty, obj)) =
                        q.filter.event_for(e.event, &e.object, e.previous.as_ref())
                    {
                        initial.push(event_line(ty, &present(obj, kind)));
                    }
                }
            }
            // The current state as ADDED events (then, for a streaming list, the end bookmark).
            _ => {
                for (_, obj) in self
                    .objects
                    .iter()
                    .filter(|(k, v)| k.same_resource(kind) && q.filter.matches(v))
                {
                    initial.push(event_line(EventType::Added, &present(obj, kind)));
                }
                if q.send_initial_events {
                    initial_events_end = Some(self.rv);
                }
            }
        }
        let id = self.next_watch_id;
        self.next_watch_id += 1;
        self.watchers.push(Watcher {
            id,
            kind: kind.clone(),
            filter: q.filter.clone(),
            tx,
            last_rv: self.rv,
        });
        self.peak_watches = self.peak_watches.max(self.watchers.len());
        Ok(WatchStart {
            id: Some(id),
            initial,
            initial_events_end,
            at: self.rv,
        })
    }

    /// Forgets a watch whose connection ended.
    pub fn unregister_watch(&mut self, id: u64) {
        self.watchers.retain(|w| w.id != id);
    }

    /// Drops all history: lists and watches from older versions get 410 Expired, and every
    /// open watch gets an in-stream 410 ERROR event and is closed (as when etcd compacts
    /// under a watch), which sends kube's watcher back to a full relist.
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
        for w in self.watchers.drain(..) {
            let _ =
                w.tx.send(WatchMsg::Expired(ApiError::too_old(w.last_rv, self.floor)));
        }
    }

    /// Ends every open watch cleanly (as a server-side timeout does): clients resume from
    /// their last resourceVersion without relisting.
    pub fn close_watches(&mut self) {
        for w in self.watchers.drain(..) {
            let _ = w.tx.send(WatchMsg::Close);
        }
    }

    /// Open watches by resource (`plural.group`).
    pub fn open_watches(&mut self) -> BTreeMap<String, usize> {
        self.watchers.retain(|w| !w.tx.is_closed());
        let mut out = BTreeMap::new();
        for w in &self.watchers {
            *out.entry(w.kind.resource().qualified()).or_insert(0) += 1;
        }
        out
    }

    /// The most watches that were open at once.
    pub fn peak_watches(&self) -> usize {
        self.peak_watches
    }
    /// Every stored object of a kind (test API), in key order.
    pub fn all(&self, kind: &Kind) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.same_resource(kind))
            .map(|(_, v)| present(v, kind))
            .collect()
    }
}

fn parse_rv(text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{text}\"")))
}

/// Continue tokens: base64 of JSON with the snapshot's resourceVersion and the last key sent
/// (the real server's tokens have the same shape).
fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{namespace}/{name}")});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: \"{token}\""));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    let (ns, name) = start.split_once('/').ok_or_else(bad)?;
    Ok((rv, (ns.to_string(), name.to_string())))
}
