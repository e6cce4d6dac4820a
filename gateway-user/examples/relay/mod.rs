//! What the two measuring-stick relays (`l7_floor.rs`, `l7_hyper_relay.rs`) share: the
//! arguments, and the proxy's thread layout (two current-thread runtimes, each accepting on its
//! own `SO_REUSEPORT` socket).
use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

const THREADS: usize = 2;

/// Runs `serve(listener, backend)` on each worker thread, with `LISTEN_ADDR BACKEND_ADDR` from
/// the command line of the example `name`.
pub fn run<F, Fut>(name: &str, serve: F)
where
    F: Fn(TcpListener, SocketAddr) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()>,
{
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        eprintln!("usage: {name} LISTEN_ADDR BACKEND_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR: ip:port");
    let backend: SocketAddr = backend.parse().expect("BACKEND_ADDR: ip:port");
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move { serve(listener(listen), backend).await });
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker");
    }
}

/// This thread's socket of the `SO_REUSEPORT` group on `listen`.
fn listener(listen: SocketAddr) -> TcpListener {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.set_reuse_port(true).expect("SO_REUSEPORT");
    s.set_nonblocking(true).expect("nonblocking");
    s.bind(&listen.into()).expect("bind");
    s.listen(4096).expect("listen");
    TcpListener::from_std(s.into()).expect("listener")
}
