//! A socket's token bucket over client frames.

use crate::settings::RateLimitSettings;
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

impl TokenBucket {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            tokens: f64::from(settings.burst),
            burst: f64::from(settings.burst),
            per_second: f64::from(settings.per_second),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bucket() -> TokenBucket {
        TokenBucket::new(&RateLimitSettings {
            burst: 3,
            per_second: 10,
            abuse_threshold: 5,
        })
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
