//! When the agent reads its source next.
use std::time::Duration;

/// When the next pass runs. While the source answers: every interval. After a pass that could
/// not read it: 1 s, then 2 s, 4 s, ... doubling, capped at the interval. So a short outage (a
/// Git server restarting) heals within seconds, while a long one is polled at the configured
/// rate, never more often than that in the long run: the interval stays the operator's bound on
/// the load on the Git server, and an outage costs at most log2(interval / 1 s) extra fetches.
/// A webhook call or SIGHUP runs a pass at once, whatever the schedule.
#[derive(Debug, Clone)]
pub struct RetrySchedule {
    interval: Duration,
    failures: u32,
}

impl RetrySchedule {
    /// The first retry after a failure.
    pub const FIRST_RETRY: Duration = Duration::from_secs(1);

    /// A schedule for `interval`, with no failure yet.
    pub fn new(interval: Duration) -> Self {
        RetrySchedule {
            interval,
            failures: 0,
        }
    }

    /// Records the outcome of a pass.
    pub fn record(&mut self, source_unavailable: bool) {
        self.failures = if source_unavailable {
            self.failures.saturating_add(1)
        } else {
            0
        };
    }

    /// Passes in a row that could not read the source.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How long after the last pass the next one runs.
    pub fn delay(&self) -> Duration {
        if self.failures == 0 {
            return self.interval;
        }
        let doublings = (self.failures - 1).min(31);
        Self::FIRST_RETRY
            .saturating_mul(1u32 << doublings)
            .min(self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_one_second_up_to_the_interval_and_reset_on_success() {
        let mut s = RetrySchedule::new(Duration::from_secs(30));
        assert_eq!(s.delay(), Duration::from_secs(30), "healthy: the interval");
        let mut delays = Vec::new();
        for _ in 0..8 {
            s.record(true);
            delays.push(s.delay().as_secs());
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(s.failures(), 8);
        s.record(false);
        assert_eq!(s.failures(), 0);
        assert_eq!(s.delay(), Duration::from_secs(30));
        s.record(true);
        assert_eq!(
            s.delay(),
            Duration::from_secs(1),
            "a new outage starts over"
        );
    }

    #[test]
    fn short_intervals_are_never_stretched_and_long_outages_do_not_overflow() {
        let mut s = RetrySchedule::new(Duration::from_millis(500));
        s.record(true);
        assert_eq!(s.delay(), Duration::from_millis(500));
        let mut s = RetrySchedule::new(Duration::from_secs(3600));
        for _ in 0..100_000 {
            s.record(true);
        }
        assert_eq!(s.delay(), Duration::from_secs(3600));
        s.record(true);
        assert_eq!(s.failures(), 100_001);
    }
}
