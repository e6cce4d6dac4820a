//! The link watch: a task that listens to the kernel's link events (`RTMGRP_LINK` on a
//! `NETLINK_ROUTE` socket) and wakes the agent, so that an interface deleted and created again
//! gets its program back at once, not at the next drift check. The agent then looks at every
//! configured interface (`Controller::reconcile_interfaces`: one link-table query each). Every
//! event wakes it, not only those naming a configured interface: a rename carries the new
//! name, and a lost event (a full socket buffer) names none. A burst of events gives one
//! wake-up.
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;
use tracing::{debug, warn};

use tollgate_dataplane::netlink::LinkWatch;

/// Starts the watch; the returned `Notify` is signalled (one stored permit) whenever an
/// interface may have changed. An error here (no netlink socket) is returned; one later ends
/// the watch with a log line, and the interfaces are then still checked every `--interval`.
pub fn spawn() -> std::io::Result<Arc<Notify>> {
    // SAFETY: a LinkWatch owns its socket for its whole life, and its `as_raw_fd` always
    // returns that socket's descriptor; the AsyncFd owns the LinkWatch.
    let socket =
        unsafe { AsyncFd::register_with_interest(LinkWatch::open()?, Interest::READABLE) }?;
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    tokio::spawn(async move {
        let mut socket = socket;
        loop {
            let mut ready = match socket.readable_mut().await {
                Ok(ready) => ready,
                Err(error) => {
                    warn!(%error, "the link watch stopped; interfaces are still checked every --interval");
                    return;
                }
            };
            // `read` drains the socket up to EWOULDBLOCK, so readiness can be cleared.
            let events = ready.get_inner_mut().read();
            ready.clear_ready();
            match events {
                Ok(events) if events.is_empty() => {}
                Ok(events) => {
                    debug!(?events, "link events");
                    notify.notify_one();
                }
                Err(error) => {
                    warn!(%error, "the link watch stopped; interfaces are still checked every --interval");
                    return;
                }
            }
        }
    });
    Ok(changed)
}
