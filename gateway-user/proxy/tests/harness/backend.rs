//! Test backends: hyper HTTP/1.1 servers on 127.0.0.1:0 in the test's process. Each records
//! every request it received (method, target, headers, body, whether the body arrived whole)
//! and answers by a script: the next [`Step`] for each request, then `200` with its name in
//! the `X-Backend` header and its body (by default its name) once the script is used up.
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the backend does with one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Reads the request, then answers this status (with the usual headers and body).
    Status(u16),
    /// Reads the request, then answers this status with these extra response headers.
    Headers(u16, Vec<(&'static str, String)>),
    /// Reads the request, then closes the connection without a response.
    Close,
    /// Reads the request, waits, then answers 200.
    Delay(Duration),
}

/// A request as the backend received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as much of it as arrived.
    pub body: Bytes,
    /// Whether the body arrived whole (false: the sender broke it off).
    pub complete: bool,
}

impl Received {
    /// The value of header `name` (`None` when absent; repeated headers joined with `, `).
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("<not ASCII>"))
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Step>>,
    body: Mutex<Option<(Bytes, &'static str)>>,
}

/// A running backend; dropping it stops it (its open connections too).
pub struct Backend {
    /// Its name: sent in `X-Backend` with every response.
    pub name: String,
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Backend {
    /// A backend named `name` on 127.0.0.1 at a port the OS picks. Must be called inside a
    /// tokio runtime.
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a backend on 127.0.0.1:0");
        let addr = listener.local_addr().expect("backend address");
        let state = Arc::new(State::default());
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            name.to_owned(),
            state.clone(),
            stop.clone(),
        ));
        Backend {
            name: name.to_owned(),
            addr,
            state,
            stop,
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Appends `steps` to the script: the next requests get them, one each.
    pub fn script(&self, steps: impl IntoIterator<Item = Step>) {
        lock(&self.state.script).extend(steps);
    }

    /// The next `n` requests get `status`.
    pub fn fail(&self, n: usize, status: u16) {
        self.script(std::iter::repeat_n(Step::Status(status), n));
    }

    /// What successful responses carry as their body, with that content type (instead of
    /// the backend's name as `text/plain`).
    pub fn serve_body(&self, body: impl Into<Bytes>, content_type: &'static str) {
        *lock(&self.state.body) = Some((body.into(), content_type));
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state.received).clone()
    }

    /// How many requests it received.
    pub fn count(&self) -> usize {
        lock(&self.state.received).len()
    }

    /// The last request received (panics when there was none).
    pub fn last(&self) -> Received {
        lock(&self.state.received)
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("backend {} received no request", self.name))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error a [`Step::Close`] makes the service return: hyper then closes the connection
/// without writing a response.
#[derive(Debug)]
struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted close")
    }
}

impl std::error::Error for CloseConnection {}

async fn serve(listener: TcpListener, name: String, state: Arc<State>, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let name = name.clone();
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, name.clone(), state.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    name: String,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, CloseConnection> {
    let (parts, body) = req.into_parts();
    let (body, complete) = read_body(body).await;
    lock(&state.received).push(Received {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |p| p.to_string()),
        headers: parts.headers,
        body,
        complete,
    });
    let step = lock(&state.script).pop_front();
    let (status, extra) = match step {
        None => (200, Vec::new()),
        Some(Step::Status(s)) => (s, Vec::new()),
        Some(Step::Headers(s, h)) => (s, h),
        Some(Step::Close) => return Err(CloseConnection),
        Some(Step::Delay(d)) => {
            tokio::time::sleep(d).await;
            (200, Vec::new())
        }
    };
    let (body, content_type) = lock(&state.body)
        .clone()
        .unwrap_or_else(|| (Bytes::from(name.clone()), "text/plain"));
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).expect("a valid scripted status");
    let h = resp.headers_mut();
    h.insert("x-backend", HeaderValue::from_str(&name).expect("a name"));
    h.insert("content-type", HeaderValue::from_static(content_type));
    for (k, v) in extra {
        h.append(
            HeaderName::from_static(k),
            HeaderValue::from_str(&v).expect("a header value"),
        );
    }
    Ok(resp)
}

/// Reads a request body to its end; `false` when it broke off.
async fn read_body(mut body: Incoming) -> (Bytes, bool) {
    let mut data = Vec::new();
    loop {
        match body.frame().await {
            None => return (data.into(), true),
            Some(Ok(frame)) => {
                if let Ok(chunk) = frame.into_data() {
                    data.extend_from_slice(&chunk);
                }
            }
            Some(Err(_)) => return (data.into(), false),
        }
    }
}
