//! An in-process fake of the Kubernetes API server's HTTP protocol, for tests only (the product
//! never uses it): no API server can run on these machines, and kube's client and watcher (in
//! unit tests) and the real `tollgate` binary (in end-to-end tests) must still talk to one.
//!
//! It serves plain HTTP/1.1 on 127.0.0.1 (kube's client accepts an `http://` server in a
//! kubeconfig), with an optional bearer-token check, and is generic over resources: a test
//! registers each [`Kind`] it uses; any other path answers 404 as the real server does.
//!
//! What it implements, as the real server does (docs: "API Concepts", "Server-Side Apply"):
//! - core `/api/v1/...` and `/apis/{group}/{version}/...` paths, namespaced and cluster-scoped,
//!   all-namespaces lists and watches, the `/status` subresource, legacy `/watch/` paths,
//!   `/version` and legacy discovery (`/api`, `/apis`, `/apis/{g}/{v}`);
//! - objects as JSON with `metadata.uid`, `resourceVersion` (one global counter, as etcd's
//!   revision), `generation` (bumped on changes outside metadata and status, and when deletion
//!   starts), `creationTimestamp` and `managedFields`;
//! - LIST with `limit`/`continue` served from a consistent snapshot (the history rolled back),
//!   `resourceVersion` + `resourceVersionMatch` (`NotOlderThan`, `Exact`; `0` ignores `limit`
//!   as the watch cache does), label selectors (`a=b`, `a!=b`, `a`, `!a`, `in`, `notin`) and
//!   field selectors (`metadata.name`, `metadata.namespace`);
//! - WATCH from a resourceVersion (history replay), from "now" (current state as ADDED events),
//!   `sendInitialEvents=true` (streaming list ending with the `k8s.io/initial-events-end`
//!   bookmark), periodic and end-of-`timeoutSeconds` BOOKMARKs, objects entering or leaving a
//!   selector as ADDED/DELETED; after [`FakeApiServer::compact`], an in-stream 410 `Expired`
//!   ERROR event, which sends kube's watcher back to a full relist;
//! - POST, GET, PUT (409 on a stale resourceVersion; 422 without one, except kinds marked
//!   [`Kind::unconditional_update`]), DELETE (preconditions; finalizers: deletionTimestamp then
//!   removal when the last finalizer goes, 202 meanwhile), DELETE on a collection, PATCH with
//!   merge patch, JSON patch, strategic merge patch (built-in kinds only, as a merge patch; 415
//!   for custom kinds, as the real server) and server-side apply (`fieldManager` required,
//!   `force`, conflicts with other managers' fields as 409 with `FieldManagerConflict` causes,
//!   fields a manager stops applying removed, status apply touching only `.status`, object
//!   apply never touching it, an identical apply writing nothing);
//! - `dryRun=All`, `Status` bodies with the real codes and reasons;
//! - metadata-only lists (`Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`,
//!   kube's `list_metadata`): a `PartialObjectMetadataList` of each object's metadata.
//!
//! Simplified or left out (see [`fields`] for the apply merge): lists are replaced whole by an
//! apply (no merge keys, no `k:` ownership), strategic merge is a JSON merge patch, no schema
//! validation or defaulting, no admission, no namespace lifecycle (objects may be created in
//! any namespace), no garbage collection (`propagationPolicy` is ignored), no conversion between
//! versions (a kind registered at two versions is one stored resource served at both), no
//! protobuf, tables, aggregated discovery, exec/logs/eviction subresources, no HTTP/2 or TLS,
//! and a watch from a resourceVersion newer than the current one answers 504 at once instead
//! of waiting.

mod discovery;
pub mod fields;
mod http;
mod selector;
pub mod status;
mod store;
mod watch;
mod write;

#[cfg(test)]
mod raw_http;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

pub use status::ApiError;

use fields::Scope;
use store::Store;

/// One kind the fake serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kind {
    /// API group (empty for the core group).
    pub group: String,
    /// Version (`v1`).
    pub version: String,
    /// Kind (`Lease`).
    pub kind: String,
    /// Resource name in paths (`leases`).
    pub plural: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `/status` subresource (then the object's writes never change `.status`, and
    /// creation drops it). True by default, as for CRDs with `subresources.status`.
    pub status_subresource: bool,
    /// PUT without `metadata.resourceVersion` is allowed (most built-in kinds; custom
    /// resources answer 422).
    pub unconditional_update: bool,
    /// Accepts `application/strategic-merge-patch+json` (built-in kinds; custom ones answer 415).
    pub strategic_merge: bool,
}

impl Kind {
    /// A namespaced kind with a status subresource (a typical CRD).
    pub fn namespaced(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Kind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced: true,
            status_subresource: true,
            unconditional_update: false,
            strategic_merge: false,
        }
    }

    /// A cluster-scoped kind with a status subresource.
    pub fn cluster(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Kind {
            namespaced: false,
            ..Kind::namespaced(group, version, kind, plural)
        }
    }

    /// Without a `/status` subresource (`.status`, if any, is an ordinary field).
    pub fn without_status(mut self) -> Self {
        self.status_subresource = false;
        self
    }

    /// Behaves as a built-in kind: unconditional PUT and strategic merge patch accepted.
    pub fn builtin(mut self) -> Self {
        self.unconditional_update = true;
        self.strategic_merge = true;
        self
    }

    /// `coordination.k8s.io/v1` Lease (leader election).
    pub fn lease() -> Self {
        Kind::namespaced("coordination.k8s.io", "v1", "Lease", "leases")
            .without_status()
            .builtin()
    }

    /// `events.k8s.io/v1` Event.
    pub fn event() -> Self {
        Kind::namespaced("events.k8s.io", "v1", "Event", "events")
            .without_status()
            .builtin()
    }

    /// `v1` Namespace.
    pub fn namespace() -> Self {
        Kind::cluster("", "v1", "Namespace", "namespaces").builtin()
    }

    /// `v1` Secret.
    pub fn secret() -> Self {
        Kind::namespaced("", "v1", "Secret", "secrets")
            .without_status()
            .builtin()
    }

    /// `v1` ConfigMap.
    pub fn config_map() -> Self {
        Kind::namespaced("", "v1", "ConfigMap", "configmaps")
            .without_status()
            .builtin()
    }

    /// `v1` Service.
    pub fn service() -> Self {
        Kind::namespaced("", "v1", "Service", "services").builtin()
    }

    /// `v1` Node (cluster-scoped; the kubelet's heartbeats are status writes).
    pub fn node() -> Self {
        Kind::cluster("", "v1", "Node", "nodes").builtin()
    }

    /// `discovery.k8s.io/v1` EndpointSlice.
    pub fn endpoint_slice() -> Self {
        Kind::namespaced("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices")
            .without_status()
            .builtin()
    }

    /// `group/version` (`version` for the core group).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `Kind.group` as validation messages name it.
    fn kind_group(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn resource(&self) -> status::Resource<'_> {
        status::Resource {
            plural: &self.plural,
            group: &self.group,
        }
    }

    fn main_scope(&self) -> Scope {
        Scope::Main {
            status_subresource: self.status_subresource,
        }
    }
}

/// The kinds Tollgate's Kubernetes mode reads and writes: its own CRDs (with `TollgateNode`,
/// the per-node status object), the Gateway API kinds it serves, and the built-in kinds it
/// uses (namespaces, nodes, services, endpoint slices, secrets, config maps, events, leases).
pub fn tollgate_kinds() -> Vec<Kind> {
    let t = |kind: &str, plural: &str| Kind::namespaced("tollgate.dev", "v1alpha1", kind, plural);
    let g = |kind: &str, plural: &str| {
        Kind::namespaced("gateway.networking.k8s.io", "v1", kind, plural)
    };
    vec![
        Kind::cluster("tollgate.dev", "v1alpha1", "L4Policy", "l4policies"),
        Kind::cluster("tollgate.dev", "v1alpha1", "TollgateNode", "tollgatenodes"),
        t("Backend", "backends"),
        t("RateLimitPolicy", "ratelimitpolicies"),
        t("AuthPolicy", "authpolicies"),
        t("BackendTrafficPolicy", "backendtrafficpolicies"),
        Kind::cluster(
            "gateway.networking.k8s.io",
            "v1",
            "GatewayClass",
            "gatewayclasses",
        ),
        g("Gateway", "gateways"),
        g("HTTPRoute", "httproutes"),
        g("GRPCRoute", "grpcroutes"),
        Kind::namespaced(
            "gateway.networking.k8s.io",
            "v1beta1",
            "ReferenceGrant",
            "referencegrants",
        ),
        Kind::namespace(),
        Kind::node(),
        Kind::service(),
        Kind::endpoint_slice(),
        Kind::secret(),
        Kind::config_map(),
        Kind::event(),
        Kind::lease(),
    ]
}

/// One request the fake received, for assertions ("no write when nothing changed",
/// "exact URL, fieldManager=tollgate-agent, force=true").
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The decoded query parameters, in order.
    pub params: Vec<(String, String)>,
    /// The Content-Type header.
    pub content_type: Option<String>,
    /// The Accept header.
    pub accept: Option<String>,
    /// The `fieldManager` parameter.
    pub field_manager: Option<String>,
    /// The `force` parameter.
    pub force: Option<bool>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// A watch (`watch=true|1` or a `/watch/` path).
    pub watch: bool,
    /// The User-Agent header.
    pub user_agent: Option<String>,
    /// The body: JSON when it parses, else the text.
    pub body: Option<Value>,
    /// The HTTP status answered (200 for a watch that started).
    pub status: u16,
}

impl RequestRecord {
    /// The last value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// POST, PUT, PATCH or DELETE.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// Answer with this HTTP code and a `Status` body.
    Status(u16),
    /// Wait, then serve the request normally.
    Delay(Duration),
    /// Close the connection without an answer.
    Reset,
}

/// An injected failure or latency, for the requests it matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    method: Option<String>,
    path_contains: Option<String>,
    watch: Option<bool>,
    action: FaultAction,
    times: Option<u32>,
}

impl Fault {
    /// Every matching request is answered with `code`.
    pub fn status(code: u16) -> Self {
        Fault::new(FaultAction::Status(code))
    }

    /// Every matching request waits `delay` first.
    pub fn delay(delay: Duration) -> Self {
        Fault::new(FaultAction::Delay(delay))
    }

    /// Every matching request's connection is closed without an answer.
    pub fn reset() -> Self {
        Fault::new(FaultAction::Reset)
    }

    fn new(action: FaultAction) -> Self {
        Fault {
            method: None,
            path_contains: None,
            watch: None,
            action,
            times: None,
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path contains `part` (`/leases/`).
    pub fn path_contains(mut self, part: &str) -> Self {
        self.path_contains = Some(part.into());
        self
    }

    /// Only watches (`true`) or only non-watch requests (`false`).
    pub fn watches(mut self, watch: bool) -> Self {
        self.watch = Some(watch);
        self
    }

    /// Only the next `n` matching requests (then the fault is gone).
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n.max(1));
        self
    }

    fn matches(&self, r: &RequestRecord) -> bool {
        self.method.as_ref().is_none_or(|m| *m == r.method)
            && self
                .path_contains
                .as_ref()
                .is_none_or(|p| r.path.contains(p.as_str()))
            && self.watch.is_none_or(|w| w == r.watch)
    }
}

/// How to start a [`FakeApiServer`].
pub struct Builder {
    kinds: Vec<Kind>,
    token: Option<String>,
    port: u16,
    bookmark_interval: Duration,
}

impl Builder {
    /// The bearer token clients must send (`None`: no check). Default: a fresh random token,
    /// written into [`FakeApiServer::write_kubeconfig`]'s file.
    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self
    }

    /// Listen on this port of 127.0.0.1 (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How often an idle watch with `allowWatchBookmarks=true` gets a BOOKMARK (default 10 s;
    /// the real server sends one about every minute).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Binds 127.0.0.1 and serves on a thread of its own (its own tokio runtime), so that both
    /// sync end-to-end tests and async tests can use it.
    pub fn start(self) -> io::Result<FakeApiServer> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(http::Shared {
            store: Arc::new(Mutex::new(Store::new(self.kinds))),
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            token: self.token,
            bookmark_interval: self.bookmark_interval,
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-apiserver")
            .enable_all()
            .build()?;
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => http::serve(listener, serving, shutdown_rx).await,
                        Err(e) => eprintln!("fake-apiserver: cannot serve on {addr}: {e}"),
                    }
                });
                // Dropping the runtime here (not in the test's async context) ends every
                // connection and watch task.
                drop(runtime);
            })?;
        Ok(FakeApiServer {
            shared,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }
}

/// The running fake. Stops (closing every connection) when dropped.
pub struct FakeApiServer {
    shared: Arc<http::Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts a fake serving `kinds` on a free port of 127.0.0.1, with a random bearer token.
    /// Panics (with the reason) when it cannot bind.
    pub fn start(kinds: impl IntoIterator<Item = Kind>) -> Self {
        FakeApiServer::builder(kinds)
            .start()
            .unwrap_or_else(|e| panic!("start the fake API server on 127.0.0.1: {e}"))
    }

    /// A builder, for a fixed port, another token or bookmark interval.
    pub fn builder(kinds: impl IntoIterator<Item = Kind>) -> Builder {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Builder {
            kinds: kinds.into_iter().collect(),
            token: Some(format!("fake-{:x}{:x}", nanos, std::process::id())),
            port: 0,
            bookmark_interval: Duration::from_secs(10),
        }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token clients must send, if any.
    pub fn token(&self) -> Option<&str> {
        self.shared.token.as_deref()
    }

    /// Writes a kubeconfig (cluster at [`url`](Self::url), the token, a context whose default
    /// namespace is `default`).
    pub fn write_kubeconfig(&self, path: &Path) -> io::Result<()> {
        self.write_kubeconfig_for_namespace(path, "default")
    }

    /// Writes a kubeconfig whose context's default namespace is `namespace`.
    pub fn write_kubeconfig_for_namespace(&self, path: &Path, namespace: &str) -> io::Result<()> {
        let user = match self.token() {
            Some(token) => format!("    user:\n      token: {token}\n"),
            None => "    user: {}\n".to_string(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: fake\n    cluster:\n      server: {}\ncontexts:\n  - name: fake\n    context:\n      cluster: fake\n      user: fake\n      namespace: {namespace}\ncurrent-context: fake\nusers:\n  - name: fake\n{user}",
            self.url()
        );
        std::fs::write(path, text)
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().expect("the fake's store")
    }

    fn kind(&self, api_version: &str, kind: &str) -> Result<Kind, ApiError> {
        self.store().kind_of(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no kind \"{kind}\" is registered for version \"{api_version}\""
            ))
        })
    }

    /// Creates or updates every document of `yaml` as `kubectl apply` would (manager
    /// `kubectl-client-side-apply`; namespaced objects without a namespace go to `default`); a
    /// document's `status` is stored as given (seeding status), and one without keeps the
    /// current status. Returns the stored objects.
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<Value>, ApiError> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
            .map_err(|e| ApiError::bad_request(format!("YAML: {e}")))?;
        docs.into_iter()
            .filter(|d| !d.is_null())
            .map(|d| self.put(d))
            .collect()
    }

    /// Creates or updates one object (see [`apply_yaml`](Self::apply_yaml)).
    pub fn put(&self, object: Value) -> Result<Value, ApiError> {
        self.store().put(object)
    }

    /// The stored object, if any.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let kind = self.kind(api_version, kind).ok()?;
        self.store().get(&kind, namespace, name).ok()
    }

    /// Every stored object of a kind.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        match self.kind(api_version, kind) {
            Ok(kind) => self.store().all(&kind),
            Err(_) => Vec::new(),
        }
    }

    /// Deletes an object as `kubectl delete` would (finalizers respected). Returns the object,
    /// or NotFound.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let kind = self.kind(api_version, kind)?;
        let pre = store::Preconditions::default();
        self.store()
            .delete(&kind, namespace, name, &pre, false)
            .map(|(v, _)| v)
    }

    /// The current resourceVersion (etcd's revision).
    pub fn resource_version(&self) -> u64 {
        self.store().resource_version()
    }

    /// Drops the history: lists and watches from an older resourceVersion get 410 Expired, and
    /// open watches get an in-stream 410 ERROR event and end, forcing kube's watcher to relist.
    pub fn compact(&self) {
        self.store().compact();
    }

    /// Ends every open watch cleanly (as the server-side timeout does): clients resume from
    /// their last resourceVersion, without a relist.
    pub fn close_watches(&self) {
        self.store().close_watches();
    }

    /// Every request so far, in the order answered.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.lock().expect("request log").clone()
    }

    /// Forgets the requests logged so far.
    pub fn clear_requests(&self) {
        self.shared.requests.lock().expect("request log").clear();
    }

    /// Watch connections open now, by resource (`gateways.gateway.networking.k8s.io`,
    /// `services`).
    pub fn open_watches(&self) -> BTreeMap<String, usize> {
        self.store().open_watches()
    }

    /// Watch connections open now, in all.
    pub fn open_watch_count(&self) -> usize {
        self.open_watches().values().sum()
    }

    /// The most watch connections that were open at once.
    pub fn peak_open_watches(&self) -> usize {
        self.store().peak_watches()
    }

    /// Adds a fault; faults are tried in the order added, the first that matches applies.
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.lock().expect("fault list").push(fault);
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().expect("fault list").clear();
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
