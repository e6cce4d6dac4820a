//! A measuring stick, not part of the product: the least an HTTP/1.1 relay on tokio can cost
//! per request on this machine, for `benches/l7_floor.sh` (docs/benchmarks-issue13-part2.md,
//! round 12). Two threads, each a current-thread runtime accepting on its own `SO_REUSEPORT`
//! socket (as the proxy's workers do); each client connection gets one keep-alive backend
//! connection; the request head is parsed with httparse and written again with
//! `X-Forwarded-For` and `X-Forwarded-Proto`; the response must have a `Content-Length`.
//! No routing, authentication, limits, metrics, timeouts, request bodies or chunked
//! responses, and none of RFC 9112's checks: it only shows what the sockets and the runtime
//! cost, so that the proxy's own cost above them can be read off.
//!
//! Usage: `l7_floor LISTEN_ADDR BACKEND_ADDR`.
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BUF: usize = 16 * 1024;

#[path = "relay/mod.rs"]
mod relay;

fn main() {
    relay::run("l7_floor", serve);
}

async fn serve(l: TcpListener, backend: SocketAddr) {
    loop {
        let Ok((c, peer)) = l.accept().await else {
            continue;
        };
        let _ = c.set_nodelay(true);
        tokio::spawn(async move {
            let _ = relay_connection(c, peer, backend).await;
        });
    }
}

/// Relays the requests of one client connection until it closes or sends what this cannot.
async fn relay_connection(
    mut c: TcpStream,
    peer: SocketAddr,
    backend: SocketAddr,
) -> std::io::Result<()> {
    let mut b: Option<TcpStream> = None;
    let (mut req_buf, mut req_len) = (vec![0u8; BUF], 0);
    let mut resp_buf = vec![0u8; BUF];
    let mut head = Vec::with_capacity(4096);
    let peer_ip = peer.ip().to_string();
    loop {
        let used = loop {
            if req_len > 0 {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&req_buf[..req_len]) {
                    Ok(httparse::Status::Complete(n)) => {
                        head.clear();
                        head.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
                        head.push(b' ');
                        head.extend_from_slice(req.path.unwrap_or("/").as_bytes());
                        head.extend_from_slice(b" HTTP/1.1\r\n");
                        for h in req.headers.iter() {
                            if h.name.eq_ignore_ascii_case("connection") {
                                continue;
                            }
                            head.extend_from_slice(h.name.as_bytes());
                            head.extend_from_slice(b": ");
                            head.extend_from_slice(h.value);
                            head.extend_from_slice(b"\r\n");
                        }
                        head.extend_from_slice(b"X-Forwarded-For: ");
                        head.extend_from_slice(peer_ip.as_bytes());
                        head.extend_from_slice(b"\r\nX-Forwarded-Proto: http\r\n\r\n");
                        break n;
                    }
                    Ok(httparse::Status::Partial) if req_len < BUF => {}
                    _ => return Ok(()),
                }
            }
            let n = c.read(&mut req_buf[req_len..]).await?;
            if n == 0 {
                return Ok(());
            }
            req_len += n;
        };
        req_buf.copy_within(used..req_len, 0);
        req_len -= used;
        let bs = match &mut b {
            Some(s) => s,
            None => {
                let s = TcpStream::connect(backend).await?;
                s.set_nodelay(true)?;
                b.insert(s)
            }
        };
        bs.write_all(&head).await?;
        let mut got = 0;
        let end = loop {
            let n = bs.read(&mut resp_buf[got..]).await?;
            if n == 0 {
                return Ok(());
            }
            got += n;
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&resp_buf[..got]) {
                Ok(httparse::Status::Complete(h)) => {
                    let length: Option<usize> = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok());
                    match length {
                        Some(l) if h + l <= BUF => break h + l,
                        _ => return Ok(()),
                    }
                }
                Ok(httparse::Status::Partial) if got < BUF => {}
                _ => return Ok(()),
            }
        };
        while got < end {
            let n = bs.read(&mut resp_buf[got..end]).await?;
            if n == 0 {
                return Ok(());
            }
            got += n;
        }
        c.write_all(&resp_buf[..end]).await?;
    }
}
