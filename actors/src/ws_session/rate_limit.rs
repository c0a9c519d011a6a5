//! The per-connection message rate limit: a token bucket (`WS_RATE_PER_SEC` sustained,
//! `WS_RATE_BURST` at once) with a flood detector: more than `WS_FLOOD_LIMIT` refusals
//! within one second close the connection.

use std::time::{Duration, Instant};

/// The window in which refusals are counted towards a flood.
const FLOOD_WINDOW: Duration = Duration::from_secs(1);

/// A token bucket with a flood detector.
#[derive(Debug)]
pub(super) struct RateLimiter {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
    refused: u32,
    window: Instant,
    flood_limit: u32,
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Handle it.
    Allow,
    /// Refuse it with an error frame.
    Refuse,
    /// Refuse it and close the connection: the client keeps sending past the limit.
    Flood,
}

impl RateLimiter {
    /// A full bucket: `burst` messages at once, refilled at `rate` per second.
    pub(super) fn new(rate: u32, burst: u32, flood_limit: u32) -> Self {
        Self::starting_at(rate, burst, flood_limit, Instant::now())
    }

    fn starting_at(rate: u32, burst: u32, flood_limit: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst.max(1)),
            last: now,
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            refused: 0,
            window: now,
            flood_limit,
        }
    }

    /// Counts one message now.
    pub(super) fn check(&mut self) -> Verdict {
        self.check_at(Instant::now())
    }

    fn check_at(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window) >= FLOOD_WINDOW {
            self.window = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused > self.flood_limit {
            Verdict::Flood
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_a_flood_closes() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::starting_at(10, 5, 3, t0);
        for _ in 0..5 {
            assert_eq!(limiter.check_at(t0), Verdict::Allow);
        }
        for _ in 0..3 {
            assert_eq!(limiter.check_at(t0), Verdict::Refuse);
        }
        assert_eq!(limiter.check_at(t0), Verdict::Flood);
    }

    #[test]
    fn tokens_come_back_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::starting_at(10, 5, 100, t0);
        for _ in 0..5 {
            limiter.check_at(t0);
        }
        assert_eq!(limiter.check_at(t0), Verdict::Refuse);
        // 10 per second: one token every 100 ms.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(limiter.check_at(t1), Verdict::Allow);
        assert_eq!(limiter.check_at(t1), Verdict::Refuse);
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(limiter.check_at(t2), Verdict::Allow);
        }
        assert_eq!(limiter.check_at(t2), Verdict::Refuse);
    }

    #[test]
    fn refusals_are_counted_per_second() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::starting_at(1, 1, 2, t0);
        assert_eq!(limiter.check_at(t0), Verdict::Allow);
        assert_eq!(limiter.check_at(t0), Verdict::Refuse);
        assert_eq!(limiter.check_at(t0), Verdict::Refuse);
        // A new window: the count starts again (the token refilled meanwhile is spent first).
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(limiter.check_at(t1), Verdict::Allow);
        assert_eq!(limiter.check_at(t1), Verdict::Refuse);
        assert_eq!(limiter.check_at(t1), Verdict::Refuse);
        assert_eq!(limiter.check_at(t1), Verdict::Flood);
    }
}
