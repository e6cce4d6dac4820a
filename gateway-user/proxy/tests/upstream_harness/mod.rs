//! A minimal in-process harness for `tests/upstream.rs`: hyper backends on 127.0.0.1 that
//! count attempts per request and answer, stall or hang up as a test tells them, and the
//! proxy itself (compiled from YAML, listening on a free port of 127.0.0.1).
//!
//! Kept apart from the shared harness being written in `tests/harness` at the same time; the
//! two should be merged.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

use tollgate_proxy::access_log::AccessLog;
use tollgate_proxy::metrics::HttpMetrics;
use tollgate_proxy::{Limits, Proxy, ProxyConfig};

/// One request as a test backend saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// This request's attempt number for its `id` query parameter (1-based): the 2nd attempt
    /// of `?id=a` is 2, whatever other requests came in between.
    pub attempt: usize,
    /// Requests this backend has had, this one included.
    pub total: usize,
    /// The path.
    pub path: String,
    /// The query string.
    pub query: String,
}

impl Hit {
    /// The value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// What a test backend does with a request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status, or `None`: close the connection without an answer.
    status: Option<u16>,
    /// Waits this long first.
    delay: Duration,
}

impl Reply {
    /// Answers `status`, with the body `from the backend`.
    pub fn status(status: u16) -> Reply {
        Reply {
            status: Some(status),
            delay: Duration::ZERO,
        }
    }

    /// Closes the connection without answering (after reading the request).
    pub fn close() -> Reply {
        Reply {
            status: None,
            delay: Duration::ZERO,
        }
    }

    /// The same, after `delay`.
    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Handler = Arc<dyn Fn(&Hit) -> Reply + Send + Sync>;

struct Counters {
    total: AtomicUsize,
    per_id: Mutex<HashMap<String, usize>>,
}

/// A hyper HTTP/1.1 server on 127.0.0.1 (stopped when dropped).
pub struct Backend {
    port: u16,
    counters: Arc<Counters>,
    task: Option<JoinHandle<()>>,
}

/// Listens on 127.0.0.1:`port` (0: any free port), with SO_REUSEADDR so that a stopped
/// backend can come back on the same port at once.
fn listen(port: u16) -> tokio::net::TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
    socket.listen(1024).expect("listen")
}

impl Backend {
    /// Starts a backend that answers each request as `handler` says.
    pub async fn start(
        port: u16,
        handler: impl Fn(&Hit) -> Reply + Send + Sync + 'static,
    ) -> Backend {
        let listener = listen(port);
        let port = listener.local_addr().expect("local address").port();
        let counters = Arc::new(Counters {
            total: AtomicUsize::new(0),
            per_id: Mutex::new(HashMap::new()),
        });
        let handler: Handler = Arc::new(handler);
        let c = counters.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in this set: stopping the backend aborts them all, so that
            // its clients see their connections close, as when a process dies.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (handler, c) = (handler.clone(), c.clone());
                connections.spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (handler, c) = (handler.clone(), c.clone());
                        async move { serve(&*handler, &c, req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Backend {
            port,
            counters,
            task: Some(task),
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests it has had.
    pub fn hits(&self) -> usize {
        self.counters.total.load(Ordering::SeqCst)
    }

    /// Stops listening and closes every connection.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The error a backend's service fails with to hang up without an answer.
#[derive(Debug)]
struct HangUp;

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the test backend hangs up")
    }
}

impl std::error::Error for HangUp {}

async fn serve(
    handler: &(dyn Fn(&Hit) -> Reply + Send + Sync),
    c: &Counters,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, HangUp> {
    let (parts, body) = req.into_parts();
    // The whole request is read, as a real backend would before it fails.
    let _ = body.collect().await;
    let query = parts.uri.query().unwrap_or("").to_owned();
    let id = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "id")
        .map_or(String::new(), |(_, v)| v.to_owned());
    let attempt = {
        let mut per_id = c.per_id.lock().unwrap();
        let n = per_id.entry(id).or_insert(0);
        *n += 1;
        *n
    };
    let total = c.total.fetch_add(1, Ordering::SeqCst) + 1;
    let hit = Hit {
        attempt,
        total,
        path: parts.uri.path().to_owned(),
        query,
    };
    let reply = handler(&hit);
    tokio::time::sleep(reply.delay).await;
    match reply.status {
        Some(status) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"from the backend\n")));
            *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
            Ok(resp)
        }
        // hyper closes the connection when the service fails.
        None => Err(HangUp),
    }
}

/// A port on 127.0.0.1 where nothing listens (it was free a moment ago).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Backend object named `name` with endpoints on 127.0.0.1 at `ports`, then `extra` (spec
/// fields, indented two spaces).
pub fn backend_yaml(name: &str, ports: &[u16], extra: &str) -> String {
    let mut y = format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: {name} }}\nspec:\n  endpoints:\n"
    );
    for p in ports {
        y.push_str(&format!("    - ip: {{ address: 127.0.0.1, port: {p} }}\n"));
    }
    y.push_str(extra);
    y
}

/// An HTTPRoute named `name` with one rule to Backend `backend`, matching paths under
/// `/{name}` (route `app`: every path), then `extra` (rule fields, indented six spaces).
pub fn route_yaml(name: &str, backend: &str, extra: &str) -> String {
    let prefix = if name == "app" {
        "/".to_owned()
    } else {
        format!("/{name}")
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{ name: {name} }}\nspec:\n  parentRefs: [{{ name: edge }}]\n  rules:\n    - matches: [{{ path: {{ type: PathPrefix, value: '{prefix}' }} }}]\n      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: {backend} }}]\n{extra}"
    )
}

/// A response as the client got it.
#[derive(Debug)]
pub struct Resp {
    /// The status.
    pub status: u16,
    /// The body (empty when it could not be read).
    pub body: String,
}

/// The proxy, listening on 127.0.0.1 for one revision.
pub struct Gateway {
    _proxy: Proxy,
    port: u16,
    client: Client<HttpConnector, Full<Bytes>>,
    _secrets: tempfile::TempDir,
}

impl Gateway {
    /// Compiles Gateway `edge` (one HTTP listener on a free port) and `docs`, and serves them.
    /// Must be called inside a tokio runtime.
    pub fn start(docs: &[&str]) -> Gateway {
        let port = closed_port();
        let gateway = format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{ name: edge }}\nspec:\n  gatewayClassName: tollgate\n  listeners:\n    - {{ name: http, port: {port}, protocol: HTTP }}\n"
        );
        let mut all = vec![gateway.as_str()];
        all.extend_from_slice(docs);
        let yaml = all.join("---\n");
        let objects =
            tollgate_model::parse(&tollgate_model::Documents::inline(&[("l7.yaml", &yaml)]))
                .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let table =
            tollgate_compile::l7::compile(&objects).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let secrets = tempfile::tempdir().expect("a temporary directory");
        let config = ProxyConfig {
            address: [127, 0, 0, 1].into(),
            access_log: AccessLog::Off,
            limits: Limits {
                worker_threads: 2,
                ..Limits::default()
            },
            tls_secrets_dir: secrets.path().to_owned(),
            ..ProxyConfig::default()
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let proxy = Proxy::new(config, HttpMetrics::register(&mut registry));
        let prepared = proxy
            .prepare(&Arc::new(table))
            .unwrap_or_else(|e| panic!("{e}"));
        proxy.commit(prepared, "test");
        Gateway {
            _proxy: proxy,
            port,
            client: Client::builder(TokioExecutor::new()).build_http(),
            _secrets: secrets,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, "").await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: &str) -> Resp {
        self.send("POST", path, body).await
    }

    /// `method path` with `body` (sent with its length).
    pub async fn send(&self, method: &str, path: &str, body: &str) -> Resp {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{}{path}", self.port))
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let resp = self
            .client
            .request(req)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let body = match resp.into_body().collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        Resp { status, body }
    }
}
