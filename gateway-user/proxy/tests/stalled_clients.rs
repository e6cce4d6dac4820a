//! Client connections that hold the proxy without using it: an HTTP/2 connection that sends no
//! request (the server's keep-alive PINGs and the client's ACKs move bytes, which must not
//! count as activity) is closed after the idle timeout; and a response the client does not
//! take (an HTTP/2 flow-control window left at 0, an HTTP/1.1 socket never read) ends its
//! connection, and releases its backend connection, once the request timeout has passed,
//! although hyper no longer polls its body (where the timeout was looked at).
mod harness;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use harness::yaml::{backend, documents, gateway, route, to};
use harness::{Backend, Gateway, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tollgate_proxy::Limits;

/// The idle timeout of these tests: hyper's keep-alive PING goes every half of it.
const IDLE: Duration = Duration::from_secs(2);
/// The request timeout of the route.
const REQUEST: Duration = Duration::from_secs(1);
/// How late a close may come: a stalled response is found a tick past its deadline, at a
/// tick (so up to two ticks late; a tick is a quarter of the idle timeout here), and its
/// connection dropped at the tick after; an idle one is found at a tick. With room for a loaded
/// machine.
const MARGIN: Duration = Duration::from_millis(2500);

async fn gateway_to(backend_port: u16) -> Gateway {
    let options = Options {
        limits: Limits {
            idle_timeout: IDLE,
            ..Limits::default()
        },
        ..Options::default()
    };
    Gateway::start_with(options, |p| {
        let g = gateway(&[("http", p[0], None)]);
        let b = backend("app", &[backend_port], "");
        let r = route(
            "app",
            &format!(
                "  rules:\n    - backendRefs: [{}]\n      timeouts: {{ request: {}ms }}\n",
                to("app"),
                REQUEST.as_millis()
            ),
        );
        documents(&[&g, &b, &r])
    })
    .await
}

/// An HTTP/2 connection (prior knowledge) whose frames are read (and PINGs answered) on a task
/// of its own; the receiver tells when the connection ended.
async fn h2_connection(
    port: u16,
    builder: h2::client::Builder,
) -> (h2::client::SendRequest<Bytes>, oneshot::Receiver<Instant>) {
    let tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let (client, connection) = builder.handshake(tcp).await.unwrap();
    let (ended, ended_rx) = oneshot::channel();
    tokio::spawn(async move {
        let _ = connection.await;
        let _ = ended.send(Instant::now());
    });
    (client, ended_rx)
}

async fn h2_get(client: &mut h2::client::SendRequest<Bytes>, port: u16) -> h2::RecvStream {
    let request = http::Request::get(format!("http://127.0.0.1:{port}/"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("a response head")
        .unwrap();
    assert_eq!(response.status(), 200);
    response.into_body()
}

#[tokio::test]
async fn an_http2_connection_without_requests_is_closed_after_the_idle_timeout() {
    let app = Backend::start("app").await;
    let gw = gateway_to(app.port()).await;

    // The handshake (preface, SETTINGS, their ACKs), then nothing: the client's connection task
    // answers the proxy's keep-alive PINGs, which come every second.
    let started = Instant::now();
    let (_client, ended) = h2_connection(gw.port(), h2::client::Builder::new()).await;
    let ended = tokio::time::timeout(IDLE + MARGIN + Duration::from_secs(2), ended)
        .await
        .expect("the idle HTTP/2 connection was not closed")
        .unwrap();
    let lived = ended - started;
    assert!(
        lived >= IDLE - Duration::from_millis(100),
        "closed after {lived:?}"
    );
    assert!(lived < IDLE + MARGIN, "closed only after {lived:?}");

    // A connection with a request every second is not idle, for all the PINGs between them.
    let (mut client, mut ended) = h2_connection(gw.port(), h2::client::Builder::new()).await;
    for _ in 0..5 {
        let mut body = h2_get(&mut client, gw.port()).await;
        while body.data().await.is_some() {}
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        ended.try_recv().is_err(),
        "a connection in use was closed as idle"
    );
    assert_eq!(app.count(), 5);
}

/// A backend that accepts one connection, answers its request with `size` bytes, and tells
/// when the proxy closed that connection (its read ends, or its write fails).
async fn big_backend(size: usize) -> (u16, oneshot::Receiver<Instant>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closed, closed_rx) = oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (mut read, mut write) = stream.into_split();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let (failed, failed_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
            if write.write_all(head.as_bytes()).await.is_err() {
                let _ = failed.send(());
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len());
                if write.write_all(&chunk[..n]).await.is_err() {
                    let _ = failed.send(());
                    return;
                }
                left -= n;
            }
            // All written: wait for the connection's end on the read side.
            std::future::pending::<()>().await;
        });
        let end_of_read = async {
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::select! {
            _ = end_of_read => {}
            _ = failed_rx => {}
        }
        let _ = closed.send(Instant::now());
    });
    (port, closed_rx)
}

#[tokio::test]
async fn an_http2_response_the_client_does_not_take_ends_at_the_request_timeout() {
    let (backend_port, backend_closed) = big_backend(100 * 1024).await;
    let gw = gateway_to(backend_port).await;

    // A stream window of 0 that the client never opens: hyper cannot send a byte of the body,
    // and stops polling it.
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(0);
    let (mut client, ended) = h2_connection(gw.port(), builder).await;
    let started = Instant::now();
    let mut body = h2_get(&mut client, gw.port()).await;
    let data = tokio::time::timeout(REQUEST + MARGIN + Duration::from_secs(3), body.data())
        .await
        .expect("the stalled stream was neither reset nor closed");
    assert!(
        !matches!(data, Some(Ok(_))),
        "data came through a window of 0"
    );
    let cut = started.elapsed();
    assert!(
        cut >= REQUEST,
        "cut off after {cut:?}, before the request timeout"
    );
    assert!(cut < REQUEST + MARGIN, "cut off only after {cut:?}");

    // The backend's connection was let go with the response.
    let closed = tokio::time::timeout(Duration::from_secs(2), backend_closed)
        .await
        .expect("the backend connection was kept")
        .unwrap();
    assert!(
        closed - started < REQUEST + MARGIN,
        "backend released after {:?}",
        closed - started
    );
    tokio::time::timeout(Duration::from_secs(2), ended)
        .await
        .expect("the client connection was not closed")
        .unwrap();
    assert_eq!(
        gw.count(r#"tollgate_http_connection_errors_total{reason="response_stalled"}"#),
        1
    );
}

#[tokio::test]
async fn an_http1_response_the_client_does_not_read_ends_at_the_request_timeout() {
    // Far more than the sockets between the backend and the client hold.
    const SIZE: usize = 64 << 20;
    let (backend_port, backend_closed) = big_backend(SIZE).await;
    let gw = gateway_to(backend_port).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket
        .connect((Ipv4Addr::LOCALHOST, gw.port()).into())
        .await
        .unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();

    // Never read until the backend sees its connection closed.
    let closed = tokio::time::timeout(REQUEST + MARGIN + Duration::from_secs(3), backend_closed)
        .await
        .expect("the backend connection was kept while the client did not read")
        .unwrap();
    let lived = closed - started;
    assert!(
        lived >= REQUEST,
        "released after {lived:?}, before the request timeout"
    );
    assert!(lived < REQUEST + MARGIN, "released only after {lived:?}");

    // The client's connection was closed too: reading now ends before the whole response.
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => panic!("the client connection was kept ({got} bytes read)"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
        }
    }
    assert!(got < SIZE, "the whole response came ({got} bytes)");
}
