//! Webhook calls turned into passes of the agent, coalesced.
//!
//! A call asks for a pass ([`Wake::request`]); the agent's loop waits for one to be due
//! ([`Wake::due`]), runs it, and says when it ended ([`Wake::done`]). Between them:
//! - at most one pass is pending, whatever the number of calls: a call that finds one pending
//!   joins it (one fetch in flight, the loop's own, and one pending);
//! - a pending pass starts at once when the last webhook pass ended [`MIN_GAP`] ago or more (so
//!   a single call after a quiet spell is served as fast as before), else when that gap has
//!   passed since the end of the last webhook pass.
//!
//! So a burst of calls, however many and however fast (a replayed delivery, a misbehaving
//! hook), costs one pass for its first call and one more for all the others, as long as it
//! lasts less than [`MIN_GAP`]; calls that keep coming cost at most one fetch per [`MIN_GAP`]
//! on top of the `--interval` schedule. The price: a second push within [`MIN_GAP`] of the
//! previous webhook pass is enforced when the gap ends (at most [`MIN_GAP`] later), not at once.
//! Scheduled passes and SIGHUP do not go through here and are not delayed.
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The least time from the end of a webhook pass to the start of the next one.
pub const MIN_GAP: Duration = Duration::from_secs(10);

/// Pass requests of the webhook, coalesced (see the module's documentation).
#[derive(Debug)]
pub struct Wake {
    state: Mutex<State>,
    /// Wakes [`Wake::due`] when a request arrives.
    notify: Notify,
    min_gap: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// A pass was asked for and has not started.
    pending: bool,
    /// When the last webhook pass ended.
    last_end: Option<Instant>,
}

impl Wake {
    /// Requests that start a pass at most once per `min_gap` after the end of the last one.
    pub fn new(min_gap: Duration) -> Self {
        Wake {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            min_gap,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a pass. True when this call made one pending; false when it joined the one
    /// already pending.
    pub fn request(&self) -> bool {
        let fresh = !std::mem::replace(&mut self.state().pending, true);
        // A permit is stored if the loop is not waiting: it re-checks the state either way.
        self.notify.notify_one();
        fresh
    }

    /// Resolves when a requested pass is due, and takes the request. Cancel-safe (the loop
    /// waits for it in a `select!`): dropped before it resolves, it leaves the request pending.
    pub async fn due(&self) {
        loop {
            // Made before the state is read, so that a request in between is not missed.
            let notified = self.notify.notified();
            let start = {
                let mut state = self.state();
                if state.pending {
                    let start = state
                        .last_end
                        .map_or_else(Instant::now, |end| end + self.min_gap);
                    if start <= Instant::now() {
                        state.pending = false;
                        return;
                    }
                    Some(start)
                } else {
                    None
                }
            };
            match start {
                Some(start) => tokio::time::sleep_until(start).await,
                None => notified.await,
            }
        }
    }

    /// The pass [`Wake::due`] gave has ended: the next starts [`MIN_GAP`] from now at the
    /// earliest.
    pub fn done(&self) {
        self.state().last_end = Some(Instant::now());
    }
}

impl Default for Wake {
    fn default() -> Self {
        Wake::new(MIN_GAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const PASS: Duration = Duration::from_millis(20);

    /// The agent's loop, as far as the webhook goes: waits for a due pass, runs it (`PASS`
    /// long), counts it.
    fn agent(wake: Arc<Wake>, passes: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                wake.due().await;
                passes.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(PASS).await;
                wake.done();
            }
        })
    }

    async fn is_due(wake: &Wake, within: Duration) -> bool {
        tokio::time::timeout(within, wake.due()).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_single_call_after_a_quiet_spell_starts_a_pass_at_once() {
        let wake = Wake::new(MIN_GAP);
        assert!(
            !is_due(&wake, Duration::from_secs(60)).await,
            "no call, no pass"
        );
        let asked = Instant::now();
        assert!(wake.request());
        assert!(is_due(&wake, Duration::ZERO).await);
        assert_eq!(Instant::now(), asked, "not delayed at all");
        wake.done();
        // A quiet spell of the gap: the next call is served at once too.
        tokio::time::sleep(MIN_GAP).await;
        let asked = Instant::now();
        assert!(wake.request());
        assert!(is_due(&wake, Duration::ZERO).await);
        assert_eq!(Instant::now(), asked);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_during_and_after_a_pass_make_one_pass_that_waits_for_the_gap() {
        let wake = Wake::new(MIN_GAP);
        wake.request();
        assert!(is_due(&wake, Duration::ZERO).await);
        // While the pass runs: many calls, one pending pass.
        assert!(wake.request());
        for _ in 0..999 {
            assert!(!wake.request(), "joins the pending pass");
        }
        tokio::time::sleep(PASS).await;
        wake.done();
        let ended = Instant::now();
        assert!(!is_due(&wake, MIN_GAP - Duration::from_millis(1)).await);
        assert!(is_due(&wake, Duration::from_millis(1)).await);
        assert_eq!(Instant::now(), ended + MIN_GAP);
        // Taken: nothing more is due.
        assert!(!is_due(&wake, MIN_GAP * 10).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_given_up_before_it_is_due_leaves_the_request_pending() {
        let wake = Wake::new(MIN_GAP);
        wake.request();
        assert!(is_due(&wake, Duration::ZERO).await);
        wake.done();
        wake.request();
        // The loop's select! picks another branch meanwhile and drops the wait.
        assert!(!is_due(&wake, Duration::from_secs(1)).await);
        assert!(is_due(&wake, MIN_GAP).await, "still pending");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_a_thousand_calls_costs_two_passes_and_a_steady_stream_one_per_gap() {
        let wake = Arc::new(Wake::new(MIN_GAP));
        let passes = Arc::new(AtomicUsize::new(0));
        let loop_task = agent(wake.clone(), passes.clone());
        // 1,000 calls over 5 s, from 10 callers at once.
        let callers: Vec<_> = (0..10)
            .map(|_| {
                let wake = wake.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        wake.request();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        tokio::time::sleep(MIN_GAP * 3).await;
        assert_eq!(passes.load(Ordering::SeqCst), 2);

        // Calls every 100 ms for a minute: at most one pass per gap (+ PASS).
        let before = passes.load(Ordering::SeqCst);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            wake.request();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(MIN_GAP * 2).await;
        let stream = passes.load(Ordering::SeqCst) - before;
        assert!((6..=7).contains(&stream), "{stream} passes in 70 s");
        loop_task.abort();
    }
}
