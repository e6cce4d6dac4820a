//! An echo backend that speaks HTTP/2 with prior knowledge only (h2c, RFC 9113 section 3.3),
//! for the `appProtocol: kubernetes.io/h2c` scenario: it answers with the same JSON as the
//! Python echo backend ([`crate::l7::Backend`]), plus the protocol version it was spoken to in,
//! so a scenario can tell that the proxy really spoke HTTP/2 to it. An HTTP/1.1 request fails
//! the connection (hyper's HTTP/2 server reads it as a bad preface).
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::thread;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running h2c echo backend; dropping it stops it.
pub struct H2cBackend {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl H2cBackend {
    /// Starts it on 127.0.0.1:`port`, answering as `name`; returns once it listens.
    pub fn start(name: &str, port: u16) -> H2cBackend {
        let (stop, stopped) = oneshot::channel();
        let (ready, listening) = mpsc::channel();
        let name = name.to_owned();
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the h2c backend");
            runtime.block_on(serve(name, port, ready, stopped));
        });
        listening
            .recv()
            .unwrap_or_else(|_| panic!("the h2c backend on port {port} did not start"))
            .unwrap_or_else(|e| panic!("the h2c backend cannot listen on port {port}: {e}"));
        H2cBackend {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for H2cBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    name: String,
    port: u16,
    ready: mpsc::Sender<std::io::Result<()>>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).await {
        Ok(l) => {
            let _ = ready.send(Ok(()));
            l
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let name = name.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| echo(name.clone(), req));
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn echo(name: String, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let version = format!("{:?}", req.version());
    let mut headers = serde_json::Map::new();
    // HTTP/2 has no Host header: the authority is the host the proxy sent.
    if let Some(authority) = req.uri().authority() {
        headers.insert("host".into(), authority.to_string().into());
    }
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        let joined = match headers.get(k.as_str()).and_then(|old| old.as_str()) {
            Some(old) => format!("{old}, {v}"),
            None => v,
        };
        headers.insert(k.as_str().to_owned(), joined.into());
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let answer = serde_json::json!({
        "backend": name,
        "method": method,
        "path": path,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "protocol": version,
    });
    let mut response = Response::new(Full::new(Bytes::from(format!("{answer}\n"))));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
