//! The watches of core v1 Secrets and ConfigMaps (all namespaces) and what is kept of them:
//! for each object its resourceVersion, its `type` (Secrets) and the values of the data keys
//! Tollgate reads ([`SECRET_KEYS`], [`CONFIG_MAP_KEYS`]), decoded. Every other key, label,
//! annotation and the rest of the metadata are dropped as each event arrives.
//!
//! The stores are plain maps behind a mutex rather than kube's reflector store: only a few
//! fields are kept (a reflector keeps `Arc`s of the objects as its own type), and the source
//! needs to know whether an event touched an object a policy references, so that a change of
//! any other Secret (a cluster has many: Helm releases, other controllers' credentials) never
//! wakes the agent.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use tollgate_model::references::RefKind;
use tracing::{debug, info, warn};

use crate::watch::{KindState, Shared};

/// The data keys kept of a Secret: a certificate and its key, API keys, an htpasswd file.
pub const SECRET_KEYS: [&str; 4] = ["tls.crt", "tls.key", "keys", "htpasswd"];
/// The data keys kept of a ConfigMap: CA certificates.
pub const CONFIG_MAP_KEYS: [&str; 1] = ["ca.crt"];

/// Objects per list page: a relist holds at most one page of whole objects at a time (a
/// Secret may be up to 1 MiB), instead of kube's default 500.
const PAGE_SIZE: u32 = 100;

/// What is kept of one Secret or ConfigMap. In memory (64-bit): this struct (48 bytes), its
/// map key (two boxed strings, 32 bytes) in a hash map slot, four small heap blocks
/// (namespace, name, resourceVersion, type), and 24 bytes plus the bytes of each kept value:
/// 196 bytes measured for an object that holds none of the keys read, as most of a
/// cluster's Secrets (the test `an_object_without_the_keys_read_costs_a_few_hundred_bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// `metadata.resourceVersion`.
    pub resource_version: Box<str>,
    /// A Secret's `type` (`kubernetes.io/tls`, `Opaque`, ...); `None` for ConfigMaps and for
    /// Secrets that name none (which the API server stores as `Opaque`).
    pub type_: Option<Box<str>>,
    /// The kept keys it holds, with their values: an index into the kind's key list.
    pub data: Box<[(u8, Box<[u8]>)]>,
}

impl Kept {
    /// The value of `key`, when the object holds it.
    pub fn get(&self, kind: RefKind, key: &str) -> Option<&[u8]> {
        let index = keys(kind).iter().position(|k| *k == key)?;
        self.data
            .iter()
            .find(|(i, _)| usize::from(*i) == index)
            .map(|(_, v)| &**v)
    }
}

/// The data keys kept of `kind`.
pub fn keys(kind: RefKind) -> &'static [&'static str] {
    match kind {
        RefKind::Secret => &SECRET_KEYS,
        RefKind::ConfigMap => &CONFIG_MAP_KEYS,
    }
}

type Key = (Box<str>, Box<str>);

/// One kind's objects.
#[derive(Debug, Default)]
pub struct Objects {
    pub map: HashMap<Key, Kept>,
    /// The objects of a relist in progress (replaces `map` when it completes).
    init: Option<HashMap<Key, Kept>>,
    /// The API server refuses this agent the list (403): why.
    pub forbidden: Option<String>,
}

/// Both kinds' objects, and which ones the last revision referenced.
#[derive(Debug, Default)]
pub struct Stores {
    pub secrets: Objects,
    pub config_maps: Objects,
    /// (kind, namespace, name) of every object the last revision built references.
    pub referenced: HashSet<(RefKind, String, String)>,
}

impl Stores {
    pub fn of(&self, kind: RefKind) -> &Objects {
        match kind {
            RefKind::Secret => &self.secrets,
            RefKind::ConfigMap => &self.config_maps,
        }
    }

    fn of_mut(&mut self, kind: RefKind) -> &mut Objects {
        match kind {
            RefKind::Secret => &mut self.secrets,
            RefKind::ConfigMap => &mut self.config_maps,
        }
    }

    fn is_referenced(&self, kind: RefKind, key: &Key) -> bool {
        // Allocation-free lookups would need a borrowed key type; events are rare enough.
        self.referenced
            .contains(&(kind, key.0.to_string(), key.1.to_string()))
    }
}

pub type SharedStores = Arc<Mutex<Stores>>;

pub fn lock(stores: &SharedStores) -> MutexGuard<'_, Stores> {
    stores.lock().unwrap_or_else(|p| p.into_inner())
}

/// A watched core kind: how to name it and what to keep of its objects.
pub trait CoreKind:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const KIND: RefKind;
    /// The resource, as the API server names it (log lines, errors).
    const RESOURCE: &'static str;
    /// The kept fields.
    fn keep(self) -> (Option<Key>, Kept);
}

fn identity(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((
        meta.namespace.as_deref()?.into(),
        meta.name.as_deref()?.into(),
    ))
}

fn pick<'a, V: 'a>(
    wanted: &[&str],
    entries: impl Iterator<Item = (&'a String, V)>,
    bytes: impl Fn(V) -> Box<[u8]>,
) -> Vec<(u8, Box<[u8]>)> {
    let mut out = Vec::new();
    for (k, v) in entries {
        if let Some(i) = wanted.iter().position(|w| w == k) {
            out.push((i as u8, bytes(v)));
        }
    }
    out
}

impl CoreKind for Secret {
    const KIND: RefKind = RefKind::Secret;
    const RESOURCE: &'static str = "secrets";
    fn keep(self) -> (Option<Key>, Kept) {
        let key = identity(&self.metadata);
        let data = self
            .data
            .as_ref()
            .map(|d| pick(&SECRET_KEYS, d.iter(), |v| v.0.as_slice().into()))
            .unwrap_or_default();
        (
            key,
            Kept {
                resource_version: self.metadata.resource_version.unwrap_or_default().into(),
                type_: self.type_.map(Into::into),
                data: data.into_boxed_slice(),
            },
        )
    }
}

impl CoreKind for ConfigMap {
    const KIND: RefKind = RefKind::ConfigMap;
    const RESOURCE: &'static str = "configmaps";
    fn keep(self) -> (Option<Key>, Kept) {
        let key = identity(&self.metadata);
        let mut data = self
            .data
            .as_ref()
            .map(|d| pick(&CONFIG_MAP_KEYS, d.iter(), |v| v.as_bytes().into()))
            .unwrap_or_default();
        // A PEM file is text, but a ConfigMap may carry it in binaryData as well.
        if data.is_empty() {
            if let Some(b) = &self.binary_data {
                data = pick(&CONFIG_MAP_KEYS, b.iter(), |v| {
                    v.0.clone().into_boxed_slice()
                });
            }
        }
        (
            key,
            Kept {
                resource_version: self.metadata.resource_version.unwrap_or_default().into(),
                type_: None,
                data: data.into_boxed_slice(),
            },
        )
    }
}

/// Lists and watches one core kind into `stores` until the task is aborted; `index` is its
/// entry in the shared sync state. A 403 (the agent's role lacks the permission) marks the
/// kind synced and empty, with the reason kept for the errors of the objects that reference
/// one of its objects: the policy kinds are never held back by it.
pub(crate) async fn watch<K: CoreKind>(
    client: kube::Client,
    index: usize,
    stores: SharedStores,
    shared: Arc<Shared>,
    server: String,
) {
    let api: Api<K> = Api::all(client);
    let config = watcher::Config::default().page_size(PAGE_SIZE);
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let name = K::RESOURCE;
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => {
                let done = matches!(event, Event::InitDone);
                let touched = apply::<K>(&stores, event);
                if done {
                    let mut was = KindState::default();
                    shared.update(|s| {
                        was = std::mem::replace(
                            &mut s.kinds[index],
                            KindState {
                                synced: true,
                                absent: false,
                                error: None,
                                epoch: 0,
                            },
                        );
                    });
                    if was.absent {
                        info!(
                            resource = name,
                            "the agent may read this resource now: watching it"
                        );
                    } else if was.error.is_some() {
                        info!(resource = name, "listed again after errors");
                    }
                }
                if touched {
                    shared.changed.notify_one();
                }
            }
            Err(e) if status_code(&e) == Some(403) => {
                let message = format!(
                    "the API server ({server}) refuses this agent the list of {name} (403 Forbidden: {e}); grant its ServiceAccount get, list and watch on {name}"
                );
                let first = {
                    let mut s = lock(&stores);
                    let objects = s.of_mut(K::KIND);
                    objects.map.clear();
                    objects.init = None;
                    objects.forbidden.replace(message.clone()).is_none()
                };
                shared.update(|s| {
                    s.kinds[index] = KindState {
                        synced: true,
                        absent: true,
                        error: None,
                        epoch: 0,
                    }
                });
                if first {
                    warn!("{message}; policy objects are read without it (what references one of its objects is left out of the revision), listed again with backoff");
                    shared.changed.notify_one();
                } else {
                    debug!("{message} (again)");
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

/// Applies one event; returns whether an object a revision references changed (or a relist
/// completed, or the kind became readable again).
fn apply<K: CoreKind>(stores: &SharedStores, event: Event<K>) -> bool {
    let mut s = lock(stores);
    match event {
        Event::Init => {
            s.of_mut(K::KIND).init = Some(HashMap::new());
            false
        }
        Event::InitApply(o) => {
            let (key, kept) = o.keep();
            if let (Some(key), Some(init)) = (key, s.of_mut(K::KIND).init.as_mut()) {
                init.insert(key, kept);
            }
            false
        }
        Event::InitDone => {
            let objects = s.of_mut(K::KIND);
            let map = objects.init.take().unwrap_or_default();
            let changed = objects.map != map || objects.forbidden.is_some();
            objects.map = map;
            objects.forbidden = None;
            changed
        }
        Event::Apply(o) => {
            let (Some(key), kept) = o.keep() else {
                return false;
            };
            let referenced = s.is_referenced(K::KIND, &key);
            let old = s.of_mut(K::KIND).map.insert(key, kept.clone());
            referenced && old.as_ref() != Some(&kept)
        }
        Event::Delete(o) => {
            let (Some(key), _) = o.keep() else {
                return false;
            };
            let referenced = s.is_referenced(K::KIND, &key);
            s.of_mut(K::KIND).map.remove(&key).is_some() && referenced
        }
    }
}

/// The HTTP status of a failed list or watch, when the API server answered with one.
fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(name: &str, rv: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                labels: Some(BTreeMap::from([("a".into(), "b".into())])),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_keys_read_are_kept_decoded() {
        let (key, kept) = secret(
            "s",
            "7",
            &[
                ("tls.crt", "CERT"),
                ("tls.key", "KEY"),
                ("password", "hunter2"),
                ("ca.crt", "CA"),
            ],
        )
        .keep();
        assert_eq!(key, Some(("ns".into(), "s".into())));
        assert_eq!(&*kept.resource_version, "7");
        assert_eq!(kept.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(kept.data.len(), 2, "{kept:?}");
        assert_eq!(kept.get(RefKind::Secret, "tls.crt"), Some(&b"CERT"[..]));
        assert_eq!(kept.get(RefKind::Secret, "tls.key"), Some(&b"KEY"[..]));
        assert_eq!(kept.get(RefKind::Secret, "password"), None);
        assert_eq!(kept.get(RefKind::Secret, "ca.crt"), None);

        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("c".into()),
                namespace: Some("ns".into()),
                resource_version: Some("8".into()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([
                ("ca.crt".into(), "PEM".into()),
                ("other".into(), "x".into()),
            ])),
            ..Default::default()
        };
        let (_, kept) = cm.keep();
        assert_eq!(kept.data.len(), 1);
        assert_eq!(kept.get(RefKind::ConfigMap, "ca.crt"), Some(&b"PEM"[..]));
        assert_eq!(std::mem::size_of::<Kept>(), 48);
    }

    /// Counts the bytes this thread has allocated and not freed (the sizes asked for, without
    /// the allocator's own rounding and headers).
    struct Counting;
    thread_local! {
        static NET: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
    }
    unsafe impl std::alloc::GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            NET.with(|n| n.set(n.get() + layout.size() as i64));
            unsafe { std::alloc::System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            NET.with(|n| n.set(n.get() - layout.size() as i64));
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }
    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// The figure docs/kubernetes.md gives: what the store holds per Secret that has none of
    /// the keys read (a Helm release, say), measured.
    #[test]
    fn an_object_without_the_keys_read_costs_a_few_hundred_bytes() {
        const N: usize = 10_000;
        let objects: Vec<Secret> = (0..N)
            .map(|i| {
                let mut s = secret(
                    &format!("sh.helm.release.v1.app-{i}.v7"),
                    &format!("{}", 1_000_000 + i),
                    &[("release", &"x".repeat(4096))],
                );
                s.metadata.namespace = Some("team-apps".into());
                s.type_ = Some("helm.sh/release.v1".into());
                s
            })
            .collect();
        let stores: SharedStores = Arc::default();
        apply(&stores, Event::<Secret>::Init);
        apply(&stores, Event::<Secret>::InitDone);
        let before = NET.with(|n| n.get());
        for o in &objects {
            // The event's copy is dropped once applied: only what the store keeps stays.
            apply(&stores, Event::Apply(o.clone()));
        }
        let kept = NET.with(|n| n.get()) - before;
        let per_object = kept / N as i64;
        // Names (~34 bytes with the namespace), resourceVersion and type included.
        eprintln!("{per_object} bytes per stored Secret without the keys read ({N} objects)");
        assert_eq!(lock(&stores).secrets.map.len(), N);
        assert!(
            (100..400).contains(&per_object),
            "{per_object} bytes per object"
        );
    }

    #[test]
    fn only_changes_of_referenced_objects_wake_the_agent() {
        let stores: SharedStores = Arc::default();
        assert!(!apply(&stores, Event::<Secret>::Init));
        assert!(!apply(&stores, Event::InitApply(secret("a", "1", &[]))));
        assert!(
            apply(&stores, Event::<Secret>::InitDone),
            "a first list is news"
        );
        // Not referenced: stored, but no wake-up.
        assert!(!apply(
            &stores,
            Event::Apply(secret("a", "2", &[("keys", "k")]))
        ));
        assert_eq!(lock(&stores).secrets.map.len(), 1);
        lock(&stores)
            .referenced
            .insert((RefKind::Secret, "ns".into(), "a".into()));
        assert!(apply(
            &stores,
            Event::Apply(secret("a", "3", &[("keys", "k")]))
        ));
        // The same object again (a relist's replay) is no news.
        assert!(!apply(
            &stores,
            Event::Apply(secret("a", "3", &[("keys", "k")]))
        ));
        assert!(!apply(&stores, Event::Delete(secret("b", "4", &[]))));
        assert!(apply(&stores, Event::Delete(secret("a", "5", &[]))));
        assert!(lock(&stores).secrets.map.is_empty());
        // A relist that finds what the store holds is no news either.
        assert!(!apply(&stores, Event::<Secret>::Init));
        assert!(!apply(&stores, Event::<Secret>::InitDone));
    }
}
