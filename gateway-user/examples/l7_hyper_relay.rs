//! A second measuring stick for `benches/l7_floor.sh`, not part of the product: hyper's
//! HTTP/1.1 server and hyper-util's pooled client relaying to one backend, with the proxy's
//! thread layout (two current-thread runtimes, one `SO_REUSEPORT` socket each) and the two
//! `X-Forwarded-*` headers, and nothing else: what the libraries the proxy is built on cost per
//! request, so that the proxy's own cost above them can be read off.
//!
//! With `RELAY_CLIENT=pool`, the client side is instead hyper's connection-level client with a
//! per-thread pool whose connections go back when the response body ends, from the request's
//! own task: the shape of the proxy's `backend_h1` (with no idle timeout or cap).
//!
//! Usage: `[RELAY_CLIENT=pool] l7_hyper_relay LISTEN_ADDR BACKEND_ADDR`.
use std::convert::Infallible;
use std::net::SocketAddr;

use http::HeaderValue;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "relay/mod.rs"]
mod relay;

fn main() {
    relay::run("l7_hyper_relay", serve);
}

async fn serve(l: TcpListener, backend: SocketAddr) {
    if std::env::var("RELAY_CLIENT").as_deref() == Ok("pool") {
        return serve_pool(l, backend).await;
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let Ok((c, peer)) = l.accept().await else {
            continue;
        };
        let _ = c.set_nodelay(true);
        let client = client.clone();
        let forwarded_for = HeaderValue::from_str(&peer.ip().to_string()).expect("an IP");
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                let target = format!(
                    "http://{backend}{}",
                    req.uri().path_and_query().map_or("/", |p| p.as_str())
                );
                let headers = req.headers_mut();
                headers.insert("x-forwarded-for", forwarded_for.clone());
                headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
                async move {
                    let Ok(uri) = target.parse() else {
                        return Ok::<_, Infallible>(bad_gateway());
                    };
                    *req.uri_mut() = uri;
                    Ok(match client.request(req).await {
                        Ok(resp) => resp.map(http_body_util::Either::Left),
                        Err(_) => bad_gateway(),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(c), svc)
                .await;
        });
    }
}

fn bad_gateway() -> Response<http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>>
{
    let mut r = Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}

type PoolSender = hyper::client::conn::http1::SendRequest<Incoming>;
thread_local! {
    static POOL: std::cell::RefCell<Vec<PoolSender>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Back {
    inner: Incoming,
    sender: Option<PoolSender>,
}

impl Back {
    fn give_back(&mut self) {
        if let Some(s) = self.sender.take() {
            POOL.with(|p| p.borrow_mut().push(s));
        }
    }
}

impl Drop for Back {
    fn drop(&mut self) {
        if hyper::body::Body::is_end_stream(&self.inner) {
            self.give_back();
        }
    }
}

impl hyper::body::Body for Back {
    type Data = bytes::Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = r {
            self.give_back();
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// hyper's own HTTP/1.1 client connections in a per-thread pool, each given back when its
/// response body ends (or is dropped at its end, as hyper's server does).
async fn serve_pool(l: TcpListener, backend: SocketAddr) {
    loop {
        let Ok((c, peer)) = l.accept().await else {
            continue;
        };
        let _ = c.set_nodelay(true);
        let forwarded_for = HeaderValue::from_str(&peer.ip().to_string()).expect("an IP");
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let headers = req.headers_mut();
                headers.insert("x-forwarded-for", forwarded_for.clone());
                headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
                async move {
                    let held = POOL.with(|p| {
                        let mut p = p.borrow_mut();
                        while let Some(s) = p.pop() {
                            if !s.is_closed() {
                                return Some(s);
                            }
                        }
                        None
                    });
                    let mut sender = match held {
                        Some(s) => s,
                        None => {
                            let Ok(tcp) = tokio::net::TcpStream::connect(backend).await else {
                                return Ok::<_, Infallible>(pool_bad_gateway());
                            };
                            let _ = tcp.set_nodelay(true);
                            let Ok((s, conn)) =
                                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
                            else {
                                return Ok(pool_bad_gateway());
                            };
                            tokio::spawn(conn);
                            s
                        }
                    };
                    if sender.ready().await.is_err() {
                        return Ok(pool_bad_gateway());
                    }
                    let resp = sender.send_request(req).await;
                    Ok(match resp {
                        Ok(resp) => resp.map(|b| {
                            http_body_util::Either::Left(Back {
                                inner: b,
                                sender: Some(sender),
                            })
                        }),
                        Err(_) => pool_bad_gateway(),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(c), svc)
                .await;
        });
    }
}

fn pool_bad_gateway() -> Response<http_body_util::Either<Back, http_body_util::Empty<bytes::Bytes>>>
{
    let mut r = Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}
