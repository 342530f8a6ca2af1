//! `rate_limit`: a token bucket over every request, as exporter-toolkit's.

use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::yaml::{Errors, Problem};

/// `rate_limit`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRateLimit {
    #[serde(with = "humantime_serde")]
    interval: Option<Duration>,
    burst: Option<u32>,
}

impl RawRateLimit {
    pub(super) fn build(self, errors: &Errors<'_>) -> Result<Option<RateLimiter>, Problem> {
        let interval = self.interval.unwrap_or_default();
        if interval.is_zero() {
            return Ok(None);
        }
        let burst = self.burst.unwrap_or(0);
        if burst == 0 {
            return Err(errors.at(
                "rate_limit.burst",
                "must be at least 1 when rate_limit.interval is set (0 would refuse every request)",
            ));
        }
        Ok(Some(RateLimiter {
            interval,
            burst,
            bucket: Mutex::new((f64::from(burst), Instant::now())),
        }))
    }
}

/// A token bucket, as Go's `rate.Limiter` that exporter-toolkit uses: one token every
/// `interval`, at most `burst` saved up; a request without a token gets 429.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// Tokens, and when they were counted. A std Mutex: held for a few instructions, never
    /// across an await.
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// Takes a token if there is one.
    pub fn allow(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned = now.duration_since(bucket.1).as_secs_f64() / self.interval.as_secs_f64();
        bucket.0 = (bucket.0 + earned).min(f64::from(self.burst));
        bucket.1 = now;
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}
