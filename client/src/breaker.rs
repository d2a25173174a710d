//! A circuit breaker per server, so a dead server costs nothing once it has tripped.
//!
//! closed ─(N consecutive failures)→ open ─(cool-down elapsed)→ half-open: one probe
//! ─ success → closed, failure → open again. The state machine takes `now` as an
//! argument, which makes it a pure function of its inputs and easy to test.

use std::time::{Duration, Instant};

/// When a server's circuit breaker trips and how long it stays open.
///
/// ```
/// use std::time::Duration;
/// use confhub_client::BreakerPolicy;
///
/// let policy = BreakerPolicy::default()
///     .failure_threshold(3)
///     .cool_down(Duration::from_secs(10));
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerPolicy {
    failure_threshold: u32,
    cool_down: Duration,
}

impl Default for BreakerPolicy {
    /// Trip after 5 consecutive failures; probe again after 30 s.
    fn default() -> Self {
        BreakerPolicy {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

impl BreakerPolicy {
    /// Consecutive failures (network errors, timeouts, 5xx, 408, 429, garbage answers)
    /// that open the breaker. At least 1.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.failure_threshold = n.max(1);
        self
    }

    /// How long an open breaker refuses requests before letting one probe through.
    pub fn cool_down(mut self, d: Duration) -> Self {
        self.cool_down = d.min(crate::retry::MAX_DURATION);
        self
    }
}

/// The state of one server's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go through.
    Closed,
    /// The server failed too often; requests skip it until the cool-down ends.
    Open,
    /// The cool-down ended; one probe request is allowed to decide.
    HalfOpen,
}

/// Health of one configured server, as seen by this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    /// The server's base URL.
    pub url: String,
    /// Its circuit breaker's state.
    pub breaker: BreakerState,
    /// Failures since its last success.
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker state machine.
#[derive(Debug)]
pub(crate) struct Breaker {
    policy: BreakerPolicy,
    state: State,
    failures: u32,
}

impl Breaker {
    pub(crate) fn new(policy: BreakerPolicy) -> Self {
        Breaker {
            policy,
            state: State::Closed,
            failures: 0,
        }
    }

    /// May a request go to this server now? In half-open state only one caller gets
    /// `true` (the probe) until it reports back.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probing: true };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                true
            }
            State::HalfOpen { probing: true } => false,
        }
    }

    /// The server answered (even with a definite 4xx): close the breaker.
    pub(crate) fn success(&mut self) {
        self.state = State::Closed;
        self.failures = 0;
    }

    /// The server failed. Returns true when this failure opened the breaker.
    pub(crate) fn failure(&mut self, now: Instant) -> bool {
        self.failures = self.failures.saturating_add(1);
        let open = match self.state {
            State::Closed => self.failures >= self.policy.failure_threshold,
            State::HalfOpen { .. } => true,
            State::Open { .. } => false,
        };
        if open {
            self.state = State::Open {
                until: now + self.policy.cool_down,
            };
        }
        open
    }

    /// A request allowed by [`allow`](Self::allow) ended without a verdict on the server
    /// (cancelled): let the next caller probe.
    pub(crate) fn abandon(&mut self) {
        if let State::HalfOpen { probing: true } = self.state {
            self.state = State::HalfOpen { probing: false };
        }
    }

    pub(crate) fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// When an open breaker will let a probe through; `None` unless open.
    pub(crate) fn open_until(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> (Breaker, Instant) {
        let policy = BreakerPolicy::default()
            .failure_threshold(3)
            .cool_down(Duration::from_secs(10));
        (Breaker::new(policy), Instant::now())
    }

    #[test]
    fn opens_after_consecutive_failures() {
        let (mut b, t0) = breaker();
        assert!(b.allow(t0));
        assert!(!b.failure(t0));
        assert!(!b.failure(t0));
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert!(b.failure(t0), "third failure trips");
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(!b.allow(t0 + Duration::from_secs(9)));
        assert_eq!(b.failures(), 3);
        assert_eq!(b.open_until(), Some(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let (mut b, t0) = breaker();
        b.failure(t0);
        b.failure(t0);
        b.success();
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let (mut b, t0) = breaker();
        for _ in 0..3 {
            b.failure(t0);
        }
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.allow(later), "the probe");
        assert!(!b.allow(later), "no second request while probing");
        b.success();
        assert_eq!(b.state(later), BreakerState::Closed);
        assert!(b.allow(later));
    }

    #[test]
    fn failed_probe_reopens_for_a_full_cool_down() {
        let (mut b, t0) = breaker();
        for _ in 0..3 {
            b.failure(t0);
        }
        let t1 = t0 + Duration::from_secs(11);
        assert!(b.allow(t1));
        assert!(b.failure(t1), "one failed probe is enough");
        assert!(!b.allow(t1 + Duration::from_secs(9)));
        assert!(b.allow(t1 + Duration::from_secs(10)));
    }

    #[test]
    fn abandoned_probe_frees_the_slot() {
        let (mut b, t0) = breaker();
        for _ in 0..3 {
            b.failure(t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.allow(t1));
        b.abandon();
        assert!(b.allow(t1));
    }
}
