//! Exponential backoff with jitter ([`backoff`]), the one implementation both sides use:
//! the client's [`RetryPolicy`] (fetch retries, WebSocket reconnects) and the server's
//! retries of a failed fetch of its remote.
//!
//! Hand-written rather than taken from a crate: it is a dozen lines, a pure function of
//! the failure count (the server keeps only that count between retries), and its
//! arithmetic is unit tested here.

use std::time::Duration;

use rand::Rng;

/// Every configured duration is capped at a year, so that adding one to an `Instant`
/// can never overflow.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// How [`Client::fetch`](crate::Client::fetch) retries and how the watch task reconnects.
///
/// One *attempt* is one pass over the server list (skipping servers whose circuit
/// breaker is open). Between attempts the client sleeps a random time in
/// `[0, min(max_delay, initial_delay × 2ⁿ⁻¹)]` ("full jitter"), so with the defaults the
/// ceilings are 0.5 s, 1 s, 2 s, 4 s, 4 s, … Fetching gives up when the next sleep would
/// pass the `deadline` (counted from the start of the call), or after `max_attempts`.
/// The watch task reconnects forever with the same delays and ignores the deadline.
///
/// ```
/// use std::time::Duration;
/// use confhub_client::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .initial_delay(Duration::from_millis(200))
///     .max_delay(Duration::from_secs(2))
///     .deadline(Duration::from_secs(5));
/// assert_eq!(policy.ceiling(1), Duration::from_millis(200));
/// assert_eq!(policy.ceiling(3), Duration::from_millis(800));
/// assert_eq!(policy.ceiling(10), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    initial_delay: Duration,
    max_delay: Duration,
    deadline: Duration,
    max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    /// 0.5 s initial delay, 4 s cap, 10 s total deadline, no attempt limit.
    fn default() -> Self {
        RetryPolicy {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(4),
            deadline: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// A policy that makes exactly one attempt (one pass over the server list).
    pub fn none() -> Self {
        RetryPolicy::default().max_attempts(1)
    }

    /// Ceiling of the first delay; each later ceiling doubles.
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d.min(MAX_DURATION);
        self
    }

    /// Largest ceiling a delay can have.
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d.min(MAX_DURATION);
        self
    }

    /// Total time a fetch may spend, retries included. Each request's timeout is also
    /// cut to what is left of it.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d.min(MAX_DURATION);
        self
    }

    /// Give up after this many attempts (at least 1), even before the deadline.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n.max(1));
        self
    }

    /// The total deadline.
    pub fn get_deadline(&self) -> Duration {
        self.deadline
    }

    /// The attempt limit, if any.
    pub fn get_max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The ceiling of the delay after the `attempt`-th failed attempt (1-based):
    /// `min(max_delay, initial_delay × 2^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        ceiling(self.initial_delay, self.max_delay, attempt)
    }

    /// A random delay in `[0, ceiling(attempt)]` (full jitter).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        backoff(self.initial_delay, self.max_delay, attempt, Jitter::Full)
    }
}

/// How much of the ceiling [`backoff`] randomizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Anywhere in `[0, ceiling]`: spreads many clients retrying at once the most.
    Full,
    /// In `[ceiling / 2, ceiling]`: still spread, but never much shorter than the
    /// exponential delay, for a retry that should not hammer what just failed.
    Equal,
}

/// `min(cap, base × 2^(failures-1))` for the `failures`-th failure in a row (1-based; 0
/// counts as 1); never overflows.
pub fn ceiling(base: Duration, cap: Duration, failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(31);
    base.checked_mul(1u32 << shift).unwrap_or(cap).min(cap)
}

/// Exponential backoff with jitter: a random delay below [`ceiling`]`(base, cap,
/// failures)`, spread as `jitter` says. The random number differs between calls and
/// processes.
///
/// ```
/// use std::time::Duration;
/// use confhub_client::retry::{backoff, Jitter};
///
/// let (base, cap) = (Duration::from_secs(1), Duration::from_secs(30));
/// let d = backoff(base, cap, 3, Jitter::Equal);
/// assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(4));
/// assert!(backoff(base, cap, 40, Jitter::Full) <= cap);
/// ```
pub fn backoff(base: Duration, cap: Duration, failures: u32, jitter: Jitter) -> Duration {
    spread(
        ceiling(base, cap, failures),
        jitter,
        rand::rng().random::<f64>(),
    )
}

/// The delay for `ceiling` and `jitter` given `unit` in `[0, 1)` (injectable for tests).
fn spread(ceiling: Duration, jitter: Jitter, unit: f64) -> Duration {
    let unit = unit.clamp(0.0, 1.0);
    match jitter {
        Jitter::Full => ceiling.mul_f64(unit),
        Jitter::Equal => {
            let half = ceiling / 2;
            half + half.mul_f64(unit)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceilings_double_then_cap() {
        let p = RetryPolicy::default();
        let got: Vec<_> = (1..=6).map(|a| p.ceiling(a)).collect();
        assert_eq!(
            got,
            [ms(500), ms(1000), ms(2000), ms(4000), ms(4000), ms(4000)]
        );
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        let p = RetryPolicy::default().max_delay(Duration::from_secs(3600));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(3600));
        assert_eq!(p.ceiling(0), ms(500));
    }

    #[test]
    fn jitter_stays_within_the_ceiling() {
        let p = RetryPolicy::default();
        for attempt in 1..10 {
            for _ in 0..200 {
                assert!(p.delay(attempt) <= p.ceiling(attempt));
            }
        }
        assert_eq!(spread(ms(1000), Jitter::Full, 0.0), Duration::ZERO);
        assert_eq!(spread(ms(1000), Jitter::Full, 0.5), ms(500));
        assert_eq!(spread(ms(1000), Jitter::Full, 7.0), ms(1000));
        assert_eq!(spread(ms(1000), Jitter::Equal, 0.0), ms(500));
        assert_eq!(spread(ms(1000), Jitter::Equal, 0.5), ms(750));
        assert_eq!(spread(ms(1000), Jitter::Equal, 7.0), ms(1000));
    }

    #[test]
    fn jitter_spreads_delays() {
        let p = RetryPolicy::default();
        let samples: Vec<_> = (0..100).map(|_| p.delay(4)).collect();
        let below_half = samples.iter().filter(|d| **d < ms(2000)).count();
        assert!(below_half > 10 && below_half < 90, "{below_half}");
    }

    #[test]
    fn absurd_durations_are_capped() {
        let p = RetryPolicy::default()
            .initial_delay(Duration::MAX)
            .max_delay(Duration::MAX)
            .deadline(Duration::MAX);
        assert_eq!(p.ceiling(40), MAX_DURATION);
        assert!(p.delay(40) <= MAX_DURATION);
        let _ = std::time::Instant::now() + p.get_deadline();
    }

    #[test]
    fn none_is_one_attempt() {
        assert_eq!(RetryPolicy::none().get_max_attempts(), Some(1));
        assert_eq!(
            RetryPolicy::default().max_attempts(0).get_max_attempts(),
            Some(1)
        );
    }
}
