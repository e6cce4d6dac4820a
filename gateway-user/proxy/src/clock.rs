//! The cheap clock, for what is timed in milliseconds or coarser: the idle timeouts of client
//! and backend connections, the pool's idle stamps, endpoint ejections, and the HTTP/1.1 header
//! read timeout.
//!
//! It reads `CLOCK_MONOTONIC_COARSE`, the kernel's copy of the monotonic clock as of its last
//! tick (1 to 4 ms old, by the kernel's `HZ`), which the vDSO returns without reading the time
//! stamp counter: about 6 ns a read on the benchmark VM, against 28 ns for `CLOCK_MONOTONIC`
//! (`Instant::now`), and a proxied request read the clock 16 times
//! (docs/benchmarks-issue13-part3.md, round 17). What needs precision keeps `Instant`: the
//! request's latency, the rate limits, the request and backend timeouts.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where both clocks stood at the first read: `instant` is `CLOCK_MONOTONIC`, `coarse` the
/// coarse clock, a tick behind it at most.
struct Base {
    instant: Instant,
    coarse: Option<Duration>,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| Base {
        coarse: coarse(),
        instant: Instant::now(),
    })
}

/// `CLOCK_MONOTONIC_COARSE`; `None` where the system has no such clock.
fn coarse() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Time since the first read of this clock: the coarse clock's, or `Instant`'s where there is
/// none. Never goes back.
fn since_base() -> Duration {
    let b = base();
    match (b.coarse, coarse()) {
        (Some(then), Some(now)) => now.saturating_sub(then),
        _ => b.instant.elapsed(),
    }
}

/// Milliseconds since the first call, on the coarse clock: a monotonic count that fits in an
/// atomic, a tick behind the precise clock at most. Never 0, so that 0 can mean "never".
pub fn now_ms() -> u64 {
    since_base().as_millis() as u64 + 1
}

/// `at` on the scale of [`now_ms`] (the milliseconds from the first read to `at`, plus 1), with
/// no read of the clock: for a deadline held as an `Instant` and compared with [`now_ms`].
pub fn ms_of(at: Instant) -> u64 {
    at.saturating_duration_since(base().instant).as_millis() as u64 + 1
}

/// About now, as an `Instant` (for APIs that take one): the coarse clock's time since the first
/// read added to the `Instant` of that read. Within a tick of `Instant::now()`, either side,
/// and never goes back.
pub fn instant() -> Instant {
    base().instant + since_base()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each coarse read is bracketed by two precise ones, so that a thread descheduled between
    /// the reads (a loaded CI machine) widens the window instead of failing the test.
    #[test]
    fn the_coarse_clock_keeps_up_with_the_precise_one_within_a_tick() {
        // A tick is at most 10 ms (HZ = 100); a few ms more for rounding.
        let slack = Duration::from_millis(15);
        let (a0, first_ms, a1) = (Instant::now(), now_ms(), Instant::now());
        assert!(first_ms >= 1, "0 means never");
        let mut last = instant();
        while a0.elapsed() < Duration::from_millis(120) {
            let (before, now, after) = (Instant::now(), instant(), Instant::now());
            assert!(now >= last, "the coarse instant went back");
            last = now;
            assert!(
                now + slack >= before && now <= after + slack,
                "coarse instant outside [{:?} before, {:?} after] the precise reads",
                before.saturating_duration_since(now),
                now.saturating_duration_since(after)
            );
            std::thread::sleep(Duration::from_millis(7));
        }
        let (b0, last_ms, b1) = (Instant::now(), now_ms(), Instant::now());
        let counted = Duration::from_millis(last_ms - first_ms);
        assert!(
            counted + slack >= b0 - a1 && counted <= (b1 - a0) + slack,
            "now_ms counted {counted:?} between precise spans of {:?} and {:?}",
            b0 - a1,
            b1 - a0
        );
    }
}
