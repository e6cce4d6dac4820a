//! The node's coarse clock, for the limits that may be timed by it ([`LIMIT_COARSE_CLOCK`]).
//!
//! `bpf_ktime_get_ns` reads the time stamp counter, which some hosts make slow (25 ns a read on
//! the VM of docs/benchmarks-issue13.md, a third of a packet's pass through a limit);
//! `bpf_ktime_get_coarse_ns` reads the time of the last tick. A limit may take the coarse one
//! when its burst tolerance holds a tick: the tick's length is this node's, read here.
//!
//! [`LIMIT_COARSE_CLOCK`]: gateway_common::LIMIT_COARSE_CLOCK
use std::sync::OnceLock;

/// The resolution of `CLOCK_MONOTONIC_COARSE` (the kernel's tick: 1 to 10 ms after its `HZ`),
/// in ns; `None` where it cannot be read, and then every limit keeps the precise clock.
pub fn coarse_tick_ns() -> Option<u64> {
    static TICK: OnceLock<Option<u64>> = OnceLock::new();
    *TICK.get_or_init(|| {
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_getres writes one timespec, which `res` is.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
        let ns = u64::try_from(res.tv_sec)
            .ok()?
            .checked_mul(1_000_000_000)?
            .checked_add(u64::try_from(res.tv_nsec).ok()?)?;
        // A tick of nothing, or of more than a second, is not a tick this can rely on.
        (rc == 0 && ns > 0 && ns <= 1_000_000_000).then_some(ns)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_coarse_tick_is_the_kernels() {
        // Linux ticks at 100 to 1000 Hz.
        let tick = super::coarse_tick_ns().expect("CLOCK_MONOTONIC_COARSE");
        assert!((1_000_000..=10_000_000).contains(&tick), "{tick}");
    }
}
