//! A second measuring stick for `benches/l7_floor.sh`, not part of the product: hyper's
//! HTTP/1.1 server and hyper-util's pooled client relaying to one backend, with the proxy's
//! thread layout (two current-thread runtimes, one `SO_REUSEPORT` socket each) and the two
//! `X-Forwarded-*` headers, and nothing else: what the libraries the proxy is built on cost per
//! request, so that the proxy's own cost above them can be read off.
//!
//! Usage: `l7_hyper_relay LISTEN_ADDR BACKEND_ADDR`.
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

const THREADS: usize = 2;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        eprintln!("usage: l7_hyper_relay LISTEN_ADDR BACKEND_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR: ip:port");
    let backend: SocketAddr = backend.parse().expect("BACKEND_ADDR: ip:port");
    let threads: Vec<_> = (0..THREADS)
        .map(|_| std::thread::spawn(move || worker(listen, backend)))
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
}

fn worker(listen: SocketAddr, backend: SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.set_reuse_port(true).expect("SO_REUSEPORT");
        s.set_nonblocking(true).expect("nonblocking");
        s.bind(&listen.into()).expect("bind");
        s.listen(4096).expect("listen");
        let l = TcpListener::from_std(s.into()).expect("listener");
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
    });
}

fn bad_gateway() -> Response<http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>>
{
    let mut r = Response::new(http_body_util::Either::Right(http_body_util::Empty::new()));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}
