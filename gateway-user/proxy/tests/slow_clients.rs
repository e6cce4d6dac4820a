//! The header read timeout on HTTP/1.1 client connections (slowloris): a request head that is
//! not all there within `header_read_timeout` of the connection starting to wait for it (its
//! start, or the end of the previous response on a keep-alive connection) ends the connection
//! without an answer, counted as `header_timeout`, whether the head stalls or trickles in; a head
//! that comes in pieces within the time is served. The deadline is looked at by the
//! connection's own tick (`listener::PolledTimer`), so it fires at most a quarter of the
//! timeout late: these tests bound the time from both sides.
mod harness;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use harness::yaml::one_route;
use harness::{Backend, Gateway, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_proxy::Limits;

const TIMEOUT: Duration = Duration::from_millis(600);

async fn gateway(backend: u16) -> Gateway {
    let options = Options {
        limits: Limits {
            header_read_timeout: TIMEOUT,
            ..Limits::default()
        },
        ..Options::default()
    };
    Gateway::start_with(options, |p| one_route(p[0], backend, &[])).await
}

/// Reads until the proxy closes the connection (or 5 s pass: a failure); what was read.
async fn until_closed(s: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => panic!(
                "the connection was not closed: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The time a stalled connection lived is the timeout, give or take the tick.
fn assert_closed_on_time(what: &str, lived: Duration) {
    assert!(
        lived >= TIMEOUT - Duration::from_millis(50),
        "{what}: closed after {lived:?}, before the header read timeout ({TIMEOUT:?})"
    );
    assert!(
        lived < TIMEOUT * 2 + Duration::from_millis(500),
        "{what}: closed only after {lived:?} (timeout {TIMEOUT:?})"
    );
}

/// The proxy's answer to the request just sent: what one read brings (within 5 s).
async fn answer(s: &mut TcpStream) -> String {
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).to_string()
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_head_that_stalls_or_trickles_ends_its_connection_on_time() {
    let app = Backend::start("app").await;
    let gw = gateway(app.port()).await;

    // Half a head, then nothing.
    let mut s = connect(gw.port()).await;
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut s).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert_closed_on_time("stalled head", started.elapsed());

    // A byte every 50 ms: activity does not extend the head's time.
    let (mut read, mut write) = connect(gw.port()).await.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for b in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if write.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let got = until_closed(&mut read).await;
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert_closed_on_time("trickled head", started.elapsed());
    trickle.abort();

    // A connection that never sends a byte is waited for as long, no longer.
    let mut s = connect(gw.port()).await;
    let started = Instant::now();
    until_closed(&mut s).await;
    assert_closed_on_time("silent connection", started.elapsed());

    assert!(
        gw.count(r#"tollgate_http_connection_errors_total{reason="header_timeout"}"#) >= 2,
        "slow heads are counted"
    );
    assert_eq!(app.count(), 0, "nothing reached the backend");
}

#[tokio::test]
async fn a_head_in_pieces_within_the_time_is_served_and_keep_alive_waits_count() {
    let app = Backend::start("app").await;
    let gw = gateway(app.port()).await;

    let mut s = connect(gw.port()).await;
    s.write_all(b"GET /a HTTP/1.1\r\nHost: ").await.unwrap();
    tokio::time::sleep(TIMEOUT / 3).await;
    s.write_all(b"app.test\r\n").await.unwrap();
    tokio::time::sleep(TIMEOUT / 3).await;
    s.write_all(b"\r\n").await.unwrap();
    let head = answer(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(app.count(), 1);

    // The keep-alive connection's wait for its next request is a head's wait: closed after
    // the header read timeout (not the idle timeout, a minute by default).
    let started = Instant::now();
    let rest = until_closed(&mut s).await;
    assert!(
        rest.is_empty() || !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_closed_on_time("idle keep-alive connection", started.elapsed());

    // A connection used again before the timeout stays open and is served each time.
    let mut s = connect(gw.port()).await;
    for i in 0..4 {
        s.write_all(b"GET /b HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await
            .unwrap();
        let head = answer(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200 "), "request {i}: {head}");
        tokio::time::sleep(TIMEOUT / 2).await;
    }
}
