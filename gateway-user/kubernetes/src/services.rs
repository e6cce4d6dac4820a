//! Services and EndpointSlices: two more watches (all namespaces), whose objects are kept in
//! the compact form of [`tollgate_model::cluster`] (a Service's type and ports; a slice's
//! Service, address type, ports and endpoints' first addresses with their conditions), and
//! handed to the compile stage with every revision ([`tollgate_model::Documents::cluster`]):
//! backendRefs to Services resolve through them.
//!
//! What is kept is compared, not the resourceVersion: an update that changes nothing kept (an
//! endpoint's zone, hints or node name, a Service's selector or annotations, a relist) keeps
//! the entry as it was, resourceVersion included, so it is no new revision. FQDN slices are
//! not kept (a backendRef never resolves through them).
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use tollgate_model::cluster::{
    AddressType, Cluster, Endpoint, EndpointSlice, Protocol, Service, ServicePort, ServiceType,
    SlicePort, TargetPort,
};
use tracing::{debug, info, warn};

use crate::watch::{is_not_found, KindState, Shared};

/// The label that names an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// (namespace, name) of an object.
type Key = (Box<str>, Box<str>);

/// One object kept: the resourceVersion of its last change that mattered, and its compact
/// form.
#[derive(Debug)]
struct Entry<T> {
    resource_version: Box<str>,
    value: Arc<T>,
}

impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Entry {
            resource_version: self.resource_version.clone(),
            value: self.value.clone(),
        }
    }
}

/// A kind kept in compact form: the API type watched, and how an object becomes what is kept.
pub trait Compact: Sized + PartialEq + Send + Sync + 'static {
    /// The API type watched.
    type Api: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;
    /// `plural.group`, as the API server names the resource.
    const RESOURCE: &'static str;
    /// What is kept of `object` (`None`: nothing; it is as if it did not exist).
    fn compact(object: Self::Api) -> Option<Self>;
}

impl Compact for Service {
    type Api = core::Service;
    const RESOURCE: &'static str = "services";
    fn compact(object: core::Service) -> Option<Service> {
        Some(service(object))
    }
}

impl Compact for EndpointSlice {
    type Api = discovery::EndpointSlice;
    const RESOURCE: &'static str = "endpointslices.discovery.k8s.io";
    fn compact(object: discovery::EndpointSlice) -> Option<EndpointSlice> {
        endpoint_slice(object)
    }
}

/// What is kept of a Service.
pub fn service(s: core::Service) -> Service {
    let spec = s.spec.unwrap_or_default();
    let ports = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            // The API server only stores ports 1-65535; anything else is dropped rather than
            // wrapped.
            let port = u16::try_from(p.port).ok().filter(|p| *p > 0)?;
            let target_port = match p.target_port {
                Some(IntOrString::Int(n)) => TargetPort::Number(u16::try_from(n).unwrap_or(port)),
                Some(IntOrString::String(name)) => TargetPort::Name(name.into()),
                None => TargetPort::Number(port),
            };
            Some(ServicePort {
                name: p.name.unwrap_or_default().into(),
                port,
                protocol: Protocol::parse(p.protocol.as_deref()),
                app_protocol: p.app_protocol.map(Into::into),
                target_port,
            })
        })
        .collect();
    Service {
        namespace: s.metadata.namespace.unwrap_or_default().into(),
        name: s.metadata.name.unwrap_or_default().into(),
        type_: ServiceType::parse(spec.type_.as_deref()),
        ports,
    }
}

/// What is kept of an EndpointSlice: `None` for an FQDN slice (or an address type this agent
/// does not know).
pub fn endpoint_slice(s: discovery::EndpointSlice) -> Option<EndpointSlice> {
    let address_type = match s.address_type.as_str() {
        "IPv4" => AddressType::IPv4,
        "IPv6" => AddressType::IPv6,
        _ => return None,
    };
    let service = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_NAME_LABEL))
        .cloned()
        .unwrap_or_default();
    let ports = s
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let port = u16::try_from(p.port?).ok().filter(|p| *p > 0)?;
            Some(SlicePort {
                name: p.name.unwrap_or_default().into(),
                port,
                protocol: Protocol::parse(p.protocol.as_deref()),
                app_protocol: p.app_protocol.map(Into::into),
            })
        })
        .collect();
    let endpoints = s
        .endpoints
        .into_iter()
        .filter_map(|e| {
            // The API: "consumers ... may choose to only use the first element".
            let address: IpAddr = e.addresses.first()?.parse().ok()?;
            if address.is_ipv6() != (address_type == AddressType::IPv6) {
                return None;
            }
            let c = e.conditions.unwrap_or_default();
            Some(Endpoint {
                address,
                ready: c.ready,
                serving: c.serving,
                terminating: c.terminating,
            })
        })
        .collect();
    Some(EndpointSlice {
        namespace: s.metadata.namespace.unwrap_or_default().into(),
        name: s.metadata.name.unwrap_or_default().into(),
        service: service.into(),
        address_type,
        ports,
        endpoints,
    })
}

/// The objects of one kind, kept in compact form.
#[derive(Debug)]
pub struct Store<T> {
    live: HashMap<Key, Entry<T>>,
    /// During a (re)list: what it has listed so far; it replaces `live` when it is done.
    relist: Option<HashMap<Key, Entry<T>>>,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            live: HashMap::new(),
            relist: None,
        }
    }
}

impl<T: Compact> Store<T> {
    /// Applies one watch event; returns whether what is kept may have changed, and whether the
    /// event ended a list.
    pub fn apply(&mut self, event: Event<T::Api>) -> (bool, bool) {
        match event {
            Event::Init => {
                self.relist = Some(HashMap::new());
                (false, false)
            }
            Event::InitApply(o) => {
                let (key, entry) = self.entry(o);
                if let Some(entry) = entry {
                    self.relist
                        .get_or_insert_with(HashMap::new)
                        .insert(key, entry);
                }
                (false, false)
            }
            Event::InitDone => {
                self.live = self.relist.take().unwrap_or_default();
                (true, true)
            }
            Event::Apply(o) => {
                let (key, entry) = self.entry(o);
                match entry {
                    Some(entry) => {
                        let same = self
                            .live
                            .get(&key)
                            .is_some_and(|old| Arc::ptr_eq(&old.value, &entry.value));
                        if same {
                            (false, false)
                        } else {
                            self.live.insert(key, entry);
                            (true, false)
                        }
                    }
                    None => (self.live.remove(&key).is_some(), false),
                }
            }
            Event::Delete(o) => {
                let key = key_of(&o);
                (self.live.remove(&key).is_some(), false)
            }
        }
    }

    /// The key of `o`, and what to keep of it: the entry already kept when its compact form is
    /// the same (so that its resourceVersion stays), else a new one.
    fn entry(&self, o: T::Api) -> (Key, Option<Entry<T>>) {
        let key = key_of(&o);
        let resource_version = kube::Resource::meta(&o)
            .resource_version
            .clone()
            .unwrap_or_default();
        let Some(value) = T::compact(o) else {
            return (key, None);
        };
        let entry = match self.live.get(&key) {
            Some(old) if *old.value == value => old.clone(),
            _ => Entry {
                resource_version: resource_version.into(),
                value: Arc::new(value),
            },
        };
        (key, Some(entry))
    }

    /// Objects kept.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Every object kept, sorted by (namespace, name), with its resourceVersion.
    fn sorted(&self) -> Vec<(&Key, &Entry<T>)> {
        let mut all: Vec<_> = self.live.iter().collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all
    }
}

fn key_of<K: kube::Resource>(o: &K) -> Key {
    let m = o.meta();
    (
        m.namespace.as_deref().unwrap_or_default().into(),
        m.name.as_deref().unwrap_or_default().into(),
    )
}

/// The Services and EndpointSlices kept, shared between their watch tasks and the source.
#[derive(Debug, Default)]
pub(crate) struct ClusterStores {
    services: Mutex<Store<Service>>,
    slices: Mutex<Store<EndpointSlice>>,
}

/// One kept object in the revision id's terms: (resource, namespace, name, resourceVersion).
pub(crate) type IdKey = [String; 4];

impl ClusterStores {
    /// What the stores hold now, and the id keys of every object.
    pub(crate) fn snapshot(&self) -> (Cluster, Vec<IdKey>) {
        let services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let slices = self.slices.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = Vec::with_capacity(services.len() + slices.len());
        let mut cluster = Cluster::default();
        for (key, entry) in services.sorted() {
            keys.push(id_key(Service::RESOURCE, key, entry));
            cluster.services.push(entry.value.clone());
        }
        for (key, entry) in slices.sorted() {
            keys.push(id_key(EndpointSlice::RESOURCE, key, entry));
            cluster.slices.push(entry.value.clone());
        }
        (cluster, keys)
    }

    /// Starts the two watches on `handle`: Services as kind `index` of `shared`, EndpointSlices
    /// as `index + 1`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        handle: &tokio::runtime::Handle,
        client: &kube::Client,
        index: usize,
        shared: &Arc<Shared>,
        server: &str,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let stores = self.clone();
        let services = handle.spawn(watch::<Service>(
            client.clone(),
            index,
            shared.clone(),
            server.to_owned(),
            move |event| {
                stores
                    .services
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(event)
            },
        ));
        let stores = self.clone();
        let slices = handle.spawn(watch::<EndpointSlice>(
            client.clone(),
            index + 1,
            shared.clone(),
            server.to_owned(),
            move |event| {
                stores
                    .slices
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(event)
            },
        ));
        vec![services, slices]
    }
}

/// The cluster's Services and EndpointSlices watched on their own, for a reader that is not
/// the agent's source: the controller judges backendRefs to Services as the agents do, so it
/// must see what they see.
pub struct ClusterWatch {
    stores: Arc<ClusterStores>,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ClusterWatch {
    /// Starts the two watches on the current tokio runtime; `wake` is called after changes
    /// (debounced as the source's are). `server` names the API server in logs.
    pub fn start(client: &kube::Client, server: &str, wake: tollgate_model::source::Waker) -> Self {
        let stores = Arc::new(ClusterStores::default());
        let shared = Arc::new(Shared::new(2));
        *shared.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(wake);
        let handle = tokio::runtime::Handle::current();
        let mut tasks = stores.spawn(&handle, client, 0, &shared, server);
        tasks.push(handle.spawn(crate::watch::debounce(shared.clone())));
        ClusterWatch {
            stores,
            shared,
            tasks,
        }
    }

    /// Whether both kinds have been listed once.
    pub fn synced(&self) -> bool {
        self.shared.lock().all_synced()
    }

    /// What the stores hold now.
    pub fn cluster(&self) -> Cluster {
        self.stores.snapshot().0
    }
}

impl Drop for ClusterWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn id_key<T>(resource: &str, key: &Key, entry: &Entry<T>) -> IdKey {
    [
        resource.to_owned(),
        key.0.to_string(),
        key.1.to_string(),
        entry.resource_version.to_string(),
    ]
}

/// Lists and watches kind `T` into its store (through `apply`) until the task is aborted; its
/// progress is kind `index` of `shared`, as [`crate::watch`] reports the policy kinds'.
async fn watch<T: Compact>(
    client: kube::Client,
    index: usize,
    shared: Arc<Shared>,
    server: String,
    mut apply: impl FnMut(Event<T::Api>) -> (bool, bool) + Send + 'static,
) {
    let name = T::RESOURCE;
    let api: Api<T::Api> = Api::all(client);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(item) = events.next().await {
        match item {
            Ok(event) => {
                let (changed, done) = apply(event);
                if done {
                    shared.update(|s| {
                        let k = &mut s.kinds[index];
                        if k.error.is_some() {
                            info!(resource = %name, "listed again after errors");
                        }
                        *k = KindState {
                            synced: true,
                            absent: false,
                            error: None,
                            epoch: 0,
                        };
                    });
                }
                if changed {
                    shared.changed.notify_one();
                }
            }
            Err(e) if is_not_found(&e) => {
                // Not served (a cluster without discovery.k8s.io/v1, or a test's fake): empty.
                let mut first = false;
                shared.update(|s| {
                    let k = &mut s.kinds[index];
                    first = !k.absent;
                    *k = KindState {
                        synced: true,
                        absent: true,
                        error: None,
                        epoch: 0,
                    };
                });
                if first {
                    // Whatever was kept went away with the resource.
                    apply(Event::Init);
                    apply(Event::InitDone);
                    warn!(resource = %name, server = %server, "the API server does not serve this resource: no backendRef to a Service resolves; listed again with backoff");
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice_of(value: serde_json::Value) -> discovery::EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    fn web_slice(rv: &str, zone: &str, ready: bool) -> discovery::EndpointSlice {
        slice_of(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "shop", "resourceVersion": rv,
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
                      {"name": "all"}],
            "endpoints": [
                {"addresses": ["10.0.0.1", "10.0.0.9"], "conditions": {"ready": ready, "serving": true, "terminating": false},
                 "zone": zone, "nodeName": "n1", "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "shop"}},
                {"addresses": ["10.0.0.2"]},
                {"addresses": ["2001:db8::1"]},
                {"addresses": ["not-an-address"]},
            ],
        }))
    }

    #[test]
    fn a_slice_keeps_its_service_ports_and_first_addresses_with_their_conditions() {
        let s = endpoint_slice(web_slice("1", "a", true)).unwrap();
        assert_eq!(
            (&*s.namespace, &*s.name, &*s.service),
            ("shop", "web-abc", "web")
        );
        assert_eq!(s.address_type, AddressType::IPv4);
        // A port without a number ("every port") cannot be connected to: not kept.
        assert_eq!(
            *s.ports,
            [SlicePort {
                name: "http".into(),
                port: 8080,
                protocol: Protocol::Tcp,
                app_protocol: Some("kubernetes.io/h2c".into()),
            }]
        );
        // The first address only; an address of the other family, or none, is not kept.
        assert_eq!(
            *s.endpoints,
            [
                Endpoint {
                    address: "10.0.0.1".parse().unwrap(),
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                },
                Endpoint {
                    address: "10.0.0.2".parse().unwrap(),
                    ready: None,
                    serving: None,
                    terminating: None,
                },
            ]
        );
        assert!(s.endpoints[1].is_ready(), "unset is ready");
        let fqdn = slice_of(json!({
            "metadata": {"name": "f", "namespace": "shop"},
            "addressType": "FQDN",
            "endpoints": [{"addresses": ["a.example"]}],
        }));
        assert_eq!(endpoint_slice(fqdn), None);
        // No endpoints (`null`, as the API server writes an empty list) and no label.
        let empty = slice_of(json!({
            "metadata": {"name": "e", "namespace": "shop"},
            "addressType": "IPv6", "endpoints": null,
        }));
        let empty = endpoint_slice(empty).unwrap();
        assert!(empty.endpoints.is_empty() && empty.service.is_empty());
    }

    #[test]
    fn a_service_keeps_its_type_and_ports() {
        let s: core::Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "annotations": {"a": "b"}},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http-port", "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                {"name": "grpc", "port": 81, "appProtocol": "kubernetes.io/h2c"},
            ]},
        }))
        .unwrap();
        let s = service(s);
        assert_eq!(s.type_, ServiceType::NodePort);
        assert_eq!(
            *s.ports,
            [
                ServicePort {
                    name: "http".into(),
                    port: 80,
                    protocol: Protocol::Tcp,
                    app_protocol: None,
                    target_port: TargetPort::Name("http-port".into()),
                },
                ServicePort {
                    name: "dns".into(),
                    port: 53,
                    protocol: Protocol::Udp,
                    app_protocol: None,
                    target_port: TargetPort::Number(5353),
                },
                ServicePort {
                    name: "grpc".into(),
                    port: 81,
                    protocol: Protocol::Tcp,
                    app_protocol: Some("kubernetes.io/h2c".into()),
                    target_port: TargetPort::Number(81),
                },
            ]
        );
        let bare: core::Service =
            serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "n"}})).unwrap();
        assert_eq!(service(bare).type_, ServiceType::ClusterIP);
    }

    #[test]
    fn only_a_change_of_what_is_kept_is_a_change_and_a_relist_keeps_what_did_not_change() {
        let mut store = Store::<EndpointSlice>::default();
        assert_eq!(store.apply(Event::Init), (false, false));
        assert_eq!(
            store.apply(Event::InitApply(web_slice("5", "a", true))),
            (false, false)
        );
        assert_eq!(store.apply(Event::InitDone), (true, true));
        let rv = |s: &Store<EndpointSlice>| s.sorted()[0].1.resource_version.to_string();
        assert_eq!(rv(&store), "5");
        // Another zone: nothing kept changes, the entry (and its resourceVersion) stays.
        assert_eq!(
            store.apply(Event::Apply(web_slice("6", "b", true))),
            (false, false)
        );
        assert_eq!(rv(&store), "5");
        // Not ready any more: a change.
        assert_eq!(
            store.apply(Event::Apply(web_slice("7", "b", false))),
            (true, false)
        );
        assert_eq!(rv(&store), "7");
        assert!(!store.sorted()[0].1.value.endpoints[0].is_ready());
        // A relist that finds it unchanged keeps the entry; one that does not find it drops it.
        store.apply(Event::Init);
        store.apply(Event::InitApply(web_slice("9", "c", false)));
        store.apply(Event::InitDone);
        assert_eq!(rv(&store), "7");
        store.apply(Event::Init);
        store.apply(Event::InitDone);
        assert!(store.is_empty());
        store.apply(Event::Apply(web_slice("10", "c", false)));
        assert_eq!(
            store.apply(Event::Delete(web_slice("11", "c", false))),
            (true, false)
        );
        assert_eq!(
            store.apply(Event::Delete(web_slice("11", "c", false))),
            (false, false)
        );
    }
}
