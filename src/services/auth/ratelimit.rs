//! Token buckets for failed logins, keyed by account and by client address. In memory: a
//! restart forgets them, which costs an attacker a restart they cannot cause.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Above this many tracked keys, full buckets are forgotten.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    pub fn new(burst: u32, per_minute: f64) -> RateLimiter {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            per_second: per_minute.max(0.0) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn current(&self, bucket: Option<&Bucket>, now: Instant) -> f64 {
        match bucket {
            Some(b) => (b.tokens + now.duration_since(b.updated).as_secs_f64() * self.per_second)
                .min(self.burst),
            None => self.burst,
        }
    }

    /// `Err(wait)` if every attempt allowed for `key` is used up.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let tokens = self.current(buckets.get(key), Instant::now());
        if tokens >= 1.0 {
            Ok(())
        } else if self.per_second > 0.0 {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        } else {
            Err(Duration::from_secs(3600))
        }
    }

    /// Uses up one attempt for `key`.
    pub fn consume(&self, key: &str) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let tokens = self.current(buckets.get(key), now);
        buckets.insert(
            key.to_owned(),
            Bucket {
                tokens: (tokens - 1.0).max(0.0),
                updated: now,
            },
        );
        if buckets.len() > PRUNE_ABOVE {
            let burst = self.burst;
            let per_second = self.per_second;
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < burst
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn limits_after_the_burst_and_only_that_key() {
        let limiter = super::RateLimiter::new(2, 1.0);
        limiter.consume("a");
        assert!(limiter.check("a").is_ok());
        limiter.consume("a");
        let wait = limiter.check("a").unwrap_err();
        assert!(wait.as_secs() > 50 && wait.as_secs() <= 60, "{wait:?}");
        assert!(limiter.check("b").is_ok());
    }
}
