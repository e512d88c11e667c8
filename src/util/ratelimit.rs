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

    /// Takes one attempt for `key`, or `Err(wait)` if every attempt is used up. Taking (not
    /// just checking) before the work is done means concurrent attempts count too.
    pub fn take(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let tokens = self.current(buckets.get(key), now);
        if tokens < 1.0 {
            let wait = (1.0 - tokens) / self.per_second;
            return Err(Duration::try_from_secs_f64(wait).map_or(MAX_WAIT, |d| d.min(MAX_WAIT)));
        }
        buckets.insert(
            key.to_owned(),
            Bucket {
                tokens: tokens - 1.0,
                updated: now,
            },
        );
        if buckets.len() > PRUNE_ABOVE {
            let (burst, per_second) = (self.burst, self.per_second);
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < burst
            });
        }
        Ok(())
    }

    /// Gives back an attempt taken for work that turned out fine (a correct password).
    pub fn refund(&self, key: &str) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let tokens = self.current(buckets.get(key), now);
        buckets.insert(
            key.to_owned(),
            Bucket {
                tokens: (tokens + 1.0).min(self.burst),
                updated: now,
            },
        );
    }

    /// Takes an attempt from every key, or from none of them.
    pub fn take_all(&self, keys: &[&str]) -> Result<(), Duration> {
        for (i, key) in keys.iter().enumerate() {
            if let Err(wait) = self.take(key) {
                keys[..i].iter().for_each(|k| self.refund(k));
                return Err(wait);
            }
        }
        Ok(())
    }
}

/// The longest wait ever announced.
const MAX_WAIT: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    #[test]
    fn limits_after_the_burst_and_only_that_key() {
        let limiter = super::RateLimiter::new(2, 1.0);
        assert!(limiter.take("a").is_ok());
        assert!(limiter.take("a").is_ok());
        let wait = limiter.take("a").unwrap_err();
        assert!(wait.as_secs() > 50 && wait.as_secs() <= 60, "{wait:?}");
        assert!(limiter.take("b").is_ok());
        limiter.refund("a");
        assert!(limiter.take("a").is_ok(), "a refund gives one attempt back");
        assert!(limiter.take_all(&["c", "a"]).is_err());
        assert!(
            limiter.take_all(&["c", "c"]).is_ok(),
            "the failed take_all refunded c"
        );
    }

    #[test]
    fn a_zero_rate_waits_at_most_an_hour() {
        let limiter = super::RateLimiter::new(1, 0.0);
        assert!(limiter.take("a").is_ok());
        assert_eq!(limiter.take("a").unwrap_err(), super::MAX_WAIT);
    }
}
