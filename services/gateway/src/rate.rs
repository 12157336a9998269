//! Token buckets: one per socket over its frames, and one per key (a user,
//! a client address) over HTTP requests.

use crate::settings::RateLimitSettings;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// `burst` frames at once, refilled at `per_second`.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    refilled_at: Instant,
    /// Frames refused since the last one let through.
    refused_in_a_row: u32,
}

/// How a bucket fills: `burst` at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: u32,
    pub per_second: f64,
}

impl From<&RateLimitSettings> for Rate {
    fn from(settings: &RateLimitSettings) -> Self {
        Self {
            burst: settings.burst,
            per_second: f64::from(settings.per_second),
        }
    }
}

impl TokenBucket {
    pub fn new(rate: Rate) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            burst: f64::from(rate.burst),
            per_second: rate.per_second,
            refilled_at: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    /// Takes a token for one frame; `false` when none is left.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            true
        } else {
            self.refused_in_a_row += 1;
            false
        }
    }

    /// Frames refused since the last one let through.
    pub fn refused_in_a_row(&self) -> u32 {
        self.refused_in_a_row
    }

    /// Whether the bucket is full again (nothing to remember about it).
    fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.duration_since(self.refilled_at).as_secs_f64() * self.per_second
            >= self.burst
    }

    /// How long until the next token.
    fn wait(&self) -> Duration {
        Duration::from_secs_f64(
            ((1.0 - self.tokens).max(0.0)) / self.per_second.max(f64::MIN_POSITIVE),
        )
    }
}

/// Keys remembered at most; beyond, full buckets are forgotten first.
const MAX_KEYS: usize = 100_000;

/// A token bucket per key, made on first use and forgotten once full again.
#[derive(Debug)]
pub struct KeyedRates<K> {
    rate: Rate,
    buckets: Mutex<HashMap<K, TokenBucket>>,
}

impl<K: Hash + Eq + Clone> KeyedRates<K> {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`; when there is none, how long until there is.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rates lock");
        if buckets.len() >= MAX_KEYS {
            let now = Instant::now();
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        let bucket = buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::new(self.rate));
        if bucket.take() {
            Ok(())
        } else {
            Err(bucket.wait())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bucket() -> TokenBucket {
        TokenBucket::new(Rate {
            burst: 3,
            per_second: 10.0,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn each_key_has_its_own_bucket_and_is_told_when_to_come_back() {
        let rates = KeyedRates::new(Rate {
            burst: 2,
            per_second: 4.0,
        });
        assert!(rates.take(&"a").is_ok() && rates.take(&"a").is_ok());
        let wait = rates.take(&"a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(250),
            "{wait:?}"
        );
        assert!(rates.take(&"b").is_ok(), "another key is not held up");
        tokio::time::advance(Duration::from_millis(250)).await;
        assert!(rates.take(&"a").is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_frames_are_refused_until_the_bucket_refills() {
        let mut bucket = bucket();
        assert!((0..3).all(|_| bucket.take()));
        assert!(!bucket.take());
        assert!(!bucket.take());
        assert_eq!(bucket.refused_in_a_row(), 2);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(bucket.take(), "one token refilled after 100 ms at 10/s");
        assert_eq!(bucket.refused_in_a_row(), 0);
        assert!(!bucket.take());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((0..3).all(|_| bucket.take()), "never more than the burst");
        assert!(!bucket.take());
    }
}
