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

#[path = "relay/mod.rs"]
mod relay;

fn main() {
    relay::run("l7_hyper_relay", serve);
}

async fn serve(l: TcpListener, backend: SocketAddr) {
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
