//! GRPCRoute through the proxy, with a gRPC-shaped backend (hyper, HTTP/2 only, answering
//! with trailers) and an HTTP/2 client: HTTP/2 to a Backend that does not say it speaks it,
//! `te: trailers` and the request's trailers passed on, a bidirectional stream relayed
//! message by message (not buffered), the response's trailers passed back, header filters,
//! and the gRPC statuses of the proxy's own answers (no route, a backendRef that does not
//! resolve).
mod harness;

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use harness::yaml::{backend, documents, gateway, to};
use harness::Gateway;

type FrameResult = Result<Frame<Bytes>, Infallible>;

/// The backend: each request data frame is answered at once with a frame `<service-path>
/// <te> <x-added> <data>`, then the request's trailer `x-client-trailer` comes back in the
/// response's trailers, with `grpc-status: 0`.
async fn answer(
    req: Request<Incoming>,
) -> Result<Response<StreamBody<tokio_stream_shim::Rx>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let (tx, rx) = mpsc::channel::<FrameResult>(8);
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let prefix = format!(
        "{} {:?} te={} added={} removed={}",
        parts.uri.path(),
        parts.version,
        header("te"),
        header("x-added"),
        header("x-remove-me")
    );
    tokio::spawn(async move {
        let mut client_trailer = String::from("-");
        while let Some(Ok(frame)) = body.frame().await {
            match frame.into_data() {
                Ok(data) => {
                    let text = format!("{prefix} {}", String::from_utf8_lossy(&data));
                    if tx.send(Ok(Frame::data(Bytes::from(text)))).await.is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        if let Some(v) = t.get("x-client-trailer").and_then(|v| v.to_str().ok()) {
                            client_trailer = v.to_owned();
                        }
                    }
                }
            }
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("x-echoed-trailer", client_trailer.parse().unwrap());
        let _ = tx.send(Ok(Frame::trailers(trailers))).await;
    });
    let mut resp = Response::new(StreamBody::new(tokio_stream_shim::Rx(rx)));
    resp.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    resp.headers_mut()
        .insert("x-backend-secret", "yes".parse().unwrap());
    Ok(resp)
}

/// A `Stream` over an mpsc receiver, without another dependency.
mod tokio_stream_shim {
    use super::FrameResult;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Rx(pub tokio::sync::mpsc::Receiver<FrameResult>);

    impl futures_util::Stream for Rx {
        type Item = FrameResult;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FrameResult>> {
            self.0.poll_recv(cx)
        }
    }
}

/// An h2c-only backend on 127.0.0.1.
async fn grpc_backend() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
    port
}

fn policy(gateway_port: u16, backend_port: u16) -> String {
    let g = gateway(&[("http", gateway_port, None)]);
    // No appProtocol: the Backend is HTTP/1.1 for HTTPRoutes; a GRPCRoute speaks HTTP/2.
    let b = backend("app", &[backend_port], "");
    let r = format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{ name: echo }}
spec:
  parentRefs: [{{ name: edge }}]
  rules:
    - matches: [{{ method: {{ service: test.Echo }} }}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {{ add: [{{ name: x-added, value: by-route }}], remove: [x-remove-me] }}
        - type: ResponseHeaderModifier
          responseHeaderModifier: {{ remove: [x-backend-secret], set: [{{ name: x-route, value: echo }}] }}
      backendRefs: [{}]
    - matches: [{{ method: {{ service: test.Gone }} }}]
      backendRefs: [{{ group: tollgate.dev, kind: Backend, name: missing }}]
",
        to("app")
    );
    documents(&[&g, &b, &r])
}

/// An HTTP/2 (prior knowledge) connection to the gateway.
async fn client(
    port: u16,
) -> hyper::client::conn::http2::SendRequest<StreamBody<tokio_stream_shim::Rx>> {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

fn call(
    port: u16,
    path: &str,
    rx: mpsc::Receiver<FrameResult>,
) -> Request<StreamBody<tokio_stream_shim::Rx>> {
    Request::builder()
        .method("POST")
        .uri(format!("http://grpc.test:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-remove-me", "please")
        .body(StreamBody::new(tokio_stream_shim::Rx(rx)))
        .unwrap()
}

async fn next_data(body: &mut Incoming) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame in time")
            .expect("the body goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            return String::from_utf8_lossy(&data).into_owned();
        }
    }
}

#[tokio::test]
async fn a_bidirectional_stream_is_relayed_message_by_message_with_trailers_both_ways() {
    let backend_port = grpc_backend().await;
    let gw = Gateway::start(|p| policy(p, backend_port)).await;
    let mut send = client(gw.port()).await;
    let (tx, rx) = mpsc::channel(8);
    let resp = send.send_request(call(gw.port(), "/test.Echo/Chat", rx));
    tx.send(Ok(Frame::data(Bytes::from_static(b"one"))))
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .expect("the response head before the request ends")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-route"], "echo");
    assert!(resp.headers().get("x-backend-secret").is_none());
    let mut body = resp.into_body();
    // The first message's answer comes while the request stream is still open: nothing
    // waits for the whole request.
    assert_eq!(
        next_data(&mut body).await,
        "/test.Echo/Chat HTTP/2.0 te=trailers added=by-route removed=- one"
    );
    tx.send(Ok(Frame::data(Bytes::from_static(b"two"))))
        .await
        .unwrap();
    assert!(next_data(&mut body).await.ends_with(" two"));
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", "t-1".parse().unwrap());
    tx.send(Ok(Frame::trailers(trailers))).await.unwrap();
    drop(tx);
    let rest = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .expect("the end in time")
        .unwrap();
    let trailers = rest.trailers().expect("the backend's trailers").clone();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-echoed-trailer"], "t-1");
}

#[tokio::test]
async fn the_proxys_own_answers_to_grpc_calls_are_grpc_statuses() {
    let backend_port = grpc_backend().await;
    let gw = Gateway::start(|p| policy(p, backend_port)).await;
    let mut send = client(gw.port()).await;
    for (path, status) in [
        // No route for the method: UNIMPLEMENTED.
        ("/test.Other/Chat", "12"),
        // A backendRef that does not resolve: UNAVAILABLE (the GRPCRoute spec).
        ("/test.Gone/Chat", "14"),
    ] {
        let (tx, rx) = mpsc::channel(1);
        drop(tx);
        let resp = send.send_request(call(gw.port(), path, rx)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], status, "{path}");
        assert!(resp.headers().contains_key("grpc-message"));
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(
            body.is_empty(),
            "{path}: a trailers-only answer has no body"
        );
    }
    // A request that is not gRPC still gets a plain 404.
    let r = gw.get("/test.Other/Chat").send().await;
    assert_eq!(r.status, 404);
}
