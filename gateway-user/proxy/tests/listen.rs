//! The listening sockets of a port: one per worker thread in an `SO_REUSEPORT` group, and
//! still the clear "cannot listen" error when anything else holds the port, be it a plain
//! listener, another process's `SO_REUSEPORT` group, or a second proxy (a second agent).
mod harness;

use std::net::SocketAddr;

use harness::yaml::{backend, documents, gateway, route, to};
use harness::{Backend, Gateway};

/// A revision with the first port and a second listener on `extra`.
fn with_extra(port: u16, extra: u16, backend_port: u16) -> String {
    documents(&[
        &gateway(&[("http", port, None), ("more", extra, Some("more.test"))]),
        &backend("app", &[backend_port], ""),
        &route(
            "app",
            &format!("  rules:\n    - backendRefs: [{}]\n", to("app")),
        ),
    ])
}

/// A listening socket on 127.0.0.1 (a free port), with `SO_REUSEPORT` when `reuse_port`.
fn listener(reuse_port: bool) -> (socket2::Socket, u16) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(reuse_port).unwrap();
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(16).unwrap();
    let port = s.local_addr().unwrap().as_socket().unwrap().port();
    (s, port)
}

#[tokio::test]
async fn a_port_held_by_another_socket_is_refused_whether_or_not_it_shares() {
    let b = Backend::start("b").await;
    let mut gw = Gateway::start(|p| harness::yaml::one_route(p, b.port(), &[])).await;
    for reuse_port in [false, true] {
        // With SO_REUSEPORT, the other socket would let a group join it silently.
        let (_held, port) = listener(reuse_port);
        let e = gw
            .apply(&with_extra(gw.port(), port, b.port()))
            .expect_err("a port held by another socket");
        assert!(
            e.contains(&format!("cannot listen on 127.0.0.1:{port}"))
                && e.contains("listener \"more\""),
            "SO_REUSEPORT {reuse_port}: {e}"
        );
        assert_eq!(gw.proxy().ports(), vec![gw.port()], "nothing changed");
    }
}

#[tokio::test]
async fn a_second_proxy_cannot_join_the_port_of_the_first() {
    let b = Backend::start("b").await;
    let first = Gateway::start(|p| harness::yaml::one_route(p, b.port(), &[])).await;
    let mut second = Gateway::start(|p| harness::yaml::one_route(p, b.port(), &[])).await;
    let e = second
        .apply(&with_extra(second.port(), first.port(), b.port()))
        .expect_err("the first proxy's port");
    assert!(
        e.contains(&format!("cannot listen on 127.0.0.1:{}", first.port())),
        "{e}"
    );
    // The first still serves every request on its port (none went to the second).
    for _ in 0..20 {
        let r = first.get("/").send().await;
        assert_eq!((r.status, r.backend()), (200, Some("b")), "{r:?}");
    }
}

#[tokio::test]
async fn every_worker_socket_of_a_port_serves() {
    let b = Backend::start("b").await;
    let gw = Gateway::start(|p| harness::yaml::one_route(p, b.port(), &[])).await;
    // New connections each time: the kernel spreads them over the group's sockets by their
    // addresses; every one must be served, whichever worker accepts it.
    for _ in 0..40 {
        let r = gw.get("/").header("connection", "close").send().await;
        assert_eq!((r.status, r.backend()), (200, Some("b")), "{r:?}");
    }
}
