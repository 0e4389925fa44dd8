//! Per-connection inbound rate limit: a token bucket of
//! `max_messages_per_second` tokens refilled continuously. A frame without
//! a token is refused (`rate_limited`) and not processed; a client that
//! keeps sending — more refused frames within one second than the rate
//! itself — is closed, since it is ignoring the errors.

use tokio::time::{Duration, Instant};

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse this frame with an error.
    Refuse,
    /// Refuse and close the connection.
    Close,
}

#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
    refused: u32,
    window: Instant,
}

impl RateLimit {
    pub fn new(per_second: u32, now: Instant) -> Self {
        RateLimit {
            rate: f64::from(per_second),
            tokens: f64::from(per_second),
            last: now,
            refused: 0,
            window: now,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.refused = 0;
        }
        self.refused += 1;
        if f64::from(self.refused) > self.rate {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_then_close_and_refill() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(10, t0);
        for _ in 0..10 {
            assert_eq!(limit.check(t0), Verdict::Allow);
        }
        for _ in 0..10 {
            assert_eq!(limit.check(t0), Verdict::Refuse);
        }
        assert_eq!(limit.check(t0), Verdict::Close);

        let mut limit = RateLimit::new(10, t0);
        for _ in 0..10 {
            limit.check(t0);
        }
        assert_eq!(limit.check(t0), Verdict::Refuse);
        // 100 ms later one token is back; a steady 10/s is always allowed.
        let mut t = t0;
        for _ in 0..50 {
            t += Duration::from_millis(100);
            assert_eq!(limit.check(t), Verdict::Allow);
        }
    }
}
