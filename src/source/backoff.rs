//! How long to wait before trying a source again: capped exponential backoff with jitter,
//! started over by a connection that stayed up. (A type of a few lines rather than a crate: the
//! backoff crates bring the retry loops and timers that the reconnect loop already is.)

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// First retry delay after a failure.
pub(super) const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// A connection that came up and stayed so this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// Doublings past which every cap is reached (and the shift stays in range).
const MAX_DOUBLINGS: u32 = 16;

/// Delays between tries of one source.
pub(super) struct Backoff {
    /// Failures since the delays last started over.
    attempt: u32,
    /// Longest delay.
    cap: Duration,
}

impl Backoff {
    /// Delays that start at [`BACKOFF_BASE`] and never exceed `cap`.
    pub(super) fn new(cap: Duration) -> Backoff {
        Backoff { attempt: 0, cap }
    }

    /// The wait before the next try, after the try begun at `tried` failed. A try that came up
    /// (`was_up`) and lasted [`HEALTHY_AFTER`] starts the delays over; a failure that only an
    /// operator can fix (`to_cap`) waits the longest.
    pub(super) fn next(&mut self, tried: Instant, was_up: bool, to_cap: bool) -> Duration {
        if was_up && tried.elapsed() >= HEALTHY_AFTER {
            self.attempt = 0;
        }
        if to_cap {
            self.attempt = MAX_DOUBLINGS;
        }
        let exp = BACKOFF_BASE.saturating_mul(1u32 << self.attempt.min(MAX_DOUBLINGS));
        self.attempt = self.attempt.saturating_add(1);
        // Jitter keeps sources that failed together (an engine restart) from retrying together.
        exp.min(self.cap).mul_f64(rand::rng().random_range(0.5..=1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(30);

    /// Whether `delay` is a jittered `ceiling`: between its half and itself.
    fn jittered(delay: Duration, ceiling: Duration) -> bool {
        delay >= ceiling / 2 && delay <= ceiling
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(CAP);
        for attempt in 0..20 {
            let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt).min(CAP);
            let delay = backoff.next(Instant::now(), false, false);
            assert!(jittered(delay, ceiling), "attempt {attempt}: {delay:?} is not within {ceiling:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_only_an_operator_can_fix_waits_the_longest() {
        let mut backoff = Backoff::new(CAP);
        let delay = backoff.next(Instant::now(), false, true);
        assert!(jittered(delay, CAP), "{delay:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_starts_over_after_a_connection_stayed_up() {
        let mut backoff = Backoff::new(CAP);
        for _ in 0..10 {
            backoff.next(Instant::now(), false, false);
        }
        // Up, but not for long enough.
        let tried = Instant::now();
        tokio::time::advance(HEALTHY_AFTER - Duration::from_millis(1)).await;
        let delay = backoff.next(tried, true, false);
        assert!(jittered(delay, CAP), "{delay:?}");
        // Long, but never up (a replay that did not end, say).
        let tried = Instant::now();
        tokio::time::advance(HEALTHY_AFTER * 2).await;
        let delay = backoff.next(tried, false, false);
        assert!(jittered(delay, CAP), "{delay:?}");
        // Up for long enough: from the start again, and growing from there.
        let tried = Instant::now();
        tokio::time::advance(HEALTHY_AFTER).await;
        let delay = backoff.next(tried, true, false);
        assert!(jittered(delay, BACKOFF_BASE), "{delay:?}");
        let delay = backoff.next(Instant::now(), false, false);
        assert!(jittered(delay, BACKOFF_BASE * 2), "{delay:?}");
    }
}
