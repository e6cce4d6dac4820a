//! The threads that check passwords against bcrypt hashes (basic authentication).
//!
//! bcrypt is slow on purpose (milliseconds to a second of CPU per check, by the hash's cost),
//! so a flood of passwords must not be able to take the CPU from the proxy's request threads:
//! checks run on [`PASSWORD_CHECK_THREADS`] dedicated threads at a lower scheduling priority
//! (nice [`NICE`]), at most [`PASSWORD_CHECK_QUEUE`] more wait for one, and a check that finds
//! them all taken is refused at once ([`Busy`]: the request gets 503 with `Retry-After`)
//! instead of queueing without bound. A waiting check whose request has gone away is skipped.
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tracing::warn;

/// Threads that run bcrypt checks (per proxy, whatever the number of CPUs: together they may
/// use at most this many CPUs).
pub const PASSWORD_CHECK_THREADS: usize = 2;
/// Checks that may wait for a thread; with every thread busy and this many waiting, further
/// checks are refused.
pub const PASSWORD_CHECK_QUEUE: usize = 2;
/// The nice value of the threads: under contention the request threads (nice 0) get about ten
/// times their CPU share (the kernel's weight table: 1024 against 110).
pub const NICE: libc::c_int = 10;

/// Every check thread is busy and the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

struct Job {
    password: String,
    hash: String,
    done: oneshot::Sender<bool>,
}

/// A small pool of threads checking passwords, with a bounded queue.
pub struct PasswordChecks {
    /// `None` when no thread could be started: every check is refused.
    jobs: Option<SyncSender<Job>>,
}

impl PasswordChecks {
    /// Starts `threads` threads with room for `queue` waiting checks. The threads end when the
    /// pool is dropped (after the check they are running).
    pub fn new(threads: usize, queue: usize) -> PasswordChecks {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..threads {
            let rx = rx.clone();
            match std::thread::Builder::new()
                .name(format!("tollgate-bcrypt-{i}"))
                .spawn(move || run(&rx))
            {
                Ok(_) => started += 1,
                Err(error) => warn!(%error, "cannot start a password check thread"),
            }
        }
        PasswordChecks {
            jobs: (started > 0).then_some(tx),
        }
    }

    /// Queues a check of `password` against the bcrypt `hash`: the future answers whether it
    /// matches (a malformed hash matches nothing). [`Busy`], without waiting, when every thread
    /// is busy and the queue is full.
    pub fn submit(
        &self,
        password: String,
        hash: String,
    ) -> Result<impl std::future::Future<Output = bool> + Send + 'static, Busy> {
        let jobs = self.jobs.as_ref().ok_or(Busy)?;
        let (done, answer) = oneshot::channel();
        jobs.try_send(Job {
            password,
            hash,
            done,
        })
        // Full, or Disconnected: every thread has died (a panic in bcrypt), so nothing would
        // answer.
        .map_err(|_: TrySendError<Job>| Busy)?;
        // The thread always answers; a dropped sender (a panic in bcrypt) matches nothing.
        Ok(async move { answer.await.unwrap_or(false) })
    }
}

fn run(jobs: &Mutex<Receiver<Job>>) {
    // SAFETY: setpriority with PRIO_PROCESS and who 0 sets the nice value of the calling
    // thread on Linux (nice is per thread there; man 2 setpriority, NOTES).
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot lower the priority of a password check thread");
    }
    loop {
        // The lock is held while waiting: one idle thread waits on the channel, the others on
        // the lock.
        let job = match jobs.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return, // the pool is gone
        };
        if job.done.is_closed() {
            continue; // the request went away while waiting
        }
        let ok = bcrypt::verify(&job.password, &job.hash).unwrap_or(false);
        let _ = job.done.send(ok);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_answer_and_a_full_pool_refuses_without_waiting() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let pool = PasswordChecks::new(1, 1);
        let check = |p: &str, h: &str| pool.submit(p.into(), h.into()).unwrap();
        assert!(check("pw", &hash).await);
        assert!(!check("px", &hash).await);
        assert!(!check("pw", "$2b$04$malformed").await);

        // The same salt and digest at cost 12 (a second or so per check, unoptimised): one
        // check runs, one waits, and the next is refused at once (before the thread has taken
        // the first, the queue holds it and the second is refused).
        let slow = hash.replacen("$04$", "$12$", 1);
        let mut admitted = Vec::new();
        let refused = loop {
            match pool.submit("x".into(), slow.clone()) {
                Ok(f) => admitted.push(f),
                Err(busy) => break busy,
            }
            assert!(
                admitted.len() <= 2,
                "more checks admitted than thread and queue"
            );
        };
        assert_eq!(refused, Busy);
        assert!(!admitted.is_empty());
    }
}
