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
//! With `RELAY_CLIENT=raw`, the client side is no library at all: the request head written to a
//! keep-alive backend connection from a per-thread pool, the response head parsed with
//! httparse and its body (a `Content-Length` one only) read whole, as `l7_floor.rs` does. So
//! hyper's server alone costs what this costs above the floor, and hyper's client what the
//! pool variant costs above this.
//!
//! Usage: `[RELAY_CLIENT=pool|raw] l7_hyper_relay LISTEN_ADDR BACKEND_ADDR`.
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
    match std::env::var("RELAY_CLIENT").as_deref() {
        Ok("pool") => return serve_pool(l, backend).await,
        Ok("raw") => return serve_raw(l, backend).await,
        _ => {}
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

thread_local! {
    /// Idle backend connections, each with its read buffer (made once per connection, as the
    /// floor's are).
    static RAW_POOL: std::cell::RefCell<Vec<(tokio::net::TcpStream, Vec<u8>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

const RAW_BUF: usize = 16 * 1024;

/// One exchange on a raw backend connection: the head written, the response read whole
/// (`Content-Length` only). `None` for anything else; the connection then is not reused.
async fn raw_exchange(
    s: &mut tokio::net::TcpStream,
    buf: &mut [u8],
    head: &[u8],
) -> Option<Response<http_body_util::Full<bytes::Bytes>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(head).await.ok()?;
    let mut got = 0;
    loop {
        let n = s.read(&mut buf[got..]).await.ok()?;
        if n == 0 {
            return None;
        }
        got += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&buf[..got]).ok()? {
            httparse::Status::Complete(h) => {
                let length: usize = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())?;
                let end = h.checked_add(length).filter(|&e| e <= RAW_BUF)?;
                let mut out = Response::builder().status(resp.code?);
                for h in resp.headers.iter() {
                    if !h.name.eq_ignore_ascii_case("connection") {
                        out = out.header(h.name, h.value);
                    }
                }
                while got < end {
                    let n = s.read(&mut buf[got..end]).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    got += n;
                }
                let body = bytes::Bytes::copy_from_slice(&buf[h..end]);
                return out.body(http_body_util::Full::new(body)).ok();
            }
            httparse::Status::Partial if got < RAW_BUF => {}
            httparse::Status::Partial => return None,
        }
    }
}

/// hyper's server, and the request relayed on a raw backend connection ([`raw_exchange`]).
async fn serve_raw(l: TcpListener, backend: SocketAddr) {
    loop {
        let Ok((c, peer)) = l.accept().await else {
            continue;
        };
        let _ = c.set_nodelay(true);
        let forwarded_for = peer.ip().to_string();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let mut head = Vec::with_capacity(512);
                head.extend_from_slice(req.method().as_str().as_bytes());
                head.push(b' ');
                head.extend_from_slice(
                    req.uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .as_bytes(),
                );
                head.extend_from_slice(b" HTTP/1.1\r\n");
                for (name, value) in req.headers() {
                    if name == http::header::CONNECTION {
                        continue;
                    }
                    head.extend_from_slice(name.as_str().as_bytes());
                    head.extend_from_slice(b": ");
                    head.extend_from_slice(value.as_bytes());
                    head.extend_from_slice(b"\r\n");
                }
                head.extend_from_slice(b"x-forwarded-for: ");
                head.extend_from_slice(forwarded_for.as_bytes());
                head.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n\r\n");
                async move {
                    let held = RAW_POOL.with(|p| p.borrow_mut().pop());
                    let (mut s, mut buf) = match held {
                        Some(held) => held,
                        None => match tokio::net::TcpStream::connect(backend).await {
                            Ok(s) => {
                                let _ = s.set_nodelay(true);
                                (s, vec![0u8; RAW_BUF])
                            }
                            Err(_) => return Ok::<_, Infallible>(raw_bad_gateway()),
                        },
                    };
                    Ok(match raw_exchange(&mut s, &mut buf, &head).await {
                        Some(resp) => {
                            RAW_POOL.with(|p| p.borrow_mut().push((s, buf)));
                            resp
                        }
                        None => raw_bad_gateway(),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(c), svc)
                .await;
        });
    }
}

fn raw_bad_gateway() -> Response<http_body_util::Full<bytes::Bytes>> {
    let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}
