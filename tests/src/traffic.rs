//! Test traffic and what it tells: the outcome of a TCP connection attempt ([`Connect`]),
//! ping's summary ([`PingStats`]), the UDP sender's count ([`parse_sent`]), and the listeners in
//! the root namespace that receive it ([`UdpCounter`], [`TcpServer`]). Apart from the lab, which
//! sends the traffic from inside its namespace, because these are the two ends' results.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::unix::io::AsRawFd;
use std::process::{Child, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Reads the count printed by the UDP sender command.
pub fn parse_sent(out: &Output) -> u64 {
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "UDP sender failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The outcome of a TCP connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// The handshake completed: the SYN and the ACK got through.
    Connected,
    /// A RST came back: the SYN reached the host, where nothing listens.
    Refused,
    /// Nothing came back: the SYN was dropped (by the program, when the lab is healthy).
    TimedOut,
    /// Anything else (with what the client printed).
    Error(String),
}

impl Connect {
    /// True when the SYN reached the host's stack (connected or refused).
    pub fn reached_host(&self) -> bool {
        matches!(self, Connect::Connected | Connect::Refused)
    }
}

/// `ping`'s summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    /// Echo requests sent.
    pub transmitted: u64,
    /// Echo replies received.
    pub received: u64,
}

impl PingStats {
    /// Parses "N packets transmitted, M received" out of ping's output.
    pub fn parse(output: &str) -> Option<PingStats> {
        let line = output.lines().find(|l| l.contains("packets transmitted"))?;
        let mut numbers = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().ok());
        Some(PingStats {
            transmitted: numbers.next()??,
            received: numbers.next()??,
        })
    }

    /// Waits for a ping started from [`Lab::ping_command`](crate::Lab::ping_command) and parses
    /// its summary.
    pub fn from_child(child: Child) -> PingStats {
        let out = child.wait_with_output().expect("wait for ping");
        PingStats::parse(&String::from_utf8_lossy(&out.stdout)).unwrap_or_else(|| {
            panic!(
                "cannot read ping's summary: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// A UDP socket in the root namespace that counts the datagrams it receives, in a thread
/// (so the socket buffer never overflows and hides drops).
pub struct UdpCounter {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpCounter {
    /// Binds `ip:port` and starts counting.
    pub fn start(ip: Ipv4Addr, port: u16) -> UdpCounter {
        let socket = UdpSocket::bind(SocketAddrV4::new(ip, port))
            .unwrap_or_else(|e| panic!("bind udp {ip}:{port}: {e}"));
        set_rcvbuf(&socket, 8 << 20);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set_read_timeout");
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (count.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if socket.recv_from(&mut buf).is_ok() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        UdpCounter {
            count,
            stop,
            thread: Some(thread),
        }
    }

    /// Datagrams received so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until no datagram has arrived for `quiet`, then returns the count.
    pub fn settle(&self, quiet: Duration) -> u64 {
        let mut last = self.count();
        let mut since = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(20));
            let now = self.count();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return now;
            }
        }
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_rcvbuf(socket: &UdpSocket, bytes: libc::c_int) {
    // SO_RCVBUFFORCE (root only) goes past net.core.rmem_max; fall back to SO_RCVBUF.
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt with a valid fd and a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &bytes as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// A TCP listener in the root namespace that accepts and closes connections in a thread.
pub struct TcpServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `ip:port`; `Err` when the port is taken (some other listener will answer,
    /// which is as good for tests that only ask whether a SYN reached the host).
    pub fn start(ip: Ipv4Addr, port: u16) -> io::Result<TcpServer> {
        let listener = TcpListener::bind(SocketAddrV4::new(ip, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => drop(stream),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(TcpServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_is_parsed_with_and_without_loss() {
        for (summary, transmitted, received) in [
            (
                "--- 198.18.0.1 ping statistics ---\n5 packets transmitted, 5 received, 0% packet loss, time 41ms\n",
                5,
                5,
            ),
            (
                "10 packets transmitted, 0 received, 100% packet loss, time 95ms\n",
                10,
                0,
            ),
            (
                "3 packets transmitted, 0 received, +3 errors, 100% packet loss\n",
                3,
                0,
            ),
        ] {
            assert_eq!(
                PingStats::parse(summary),
                Some(PingStats {
                    transmitted,
                    received
                }),
                "{summary}"
            );
        }
    }
}
