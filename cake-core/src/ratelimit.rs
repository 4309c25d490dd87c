//! [`RateLimiter`]: token buckets keyed by a string (an account, an IP address), for sign-in
//! attempts. Time comes from the caller (the service's [`crate::ports::Clock`]), so the
//! rules are tested without waiting. State is per process: with several replicas each one
//! counts on its own (documented in the README).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use time::{Duration, OffsetDateTime};

/// How many attempts a key may make per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Attempts allowed in a burst (and per `period`); 0 turns the limit off.
    pub attempts: u32,
    /// The period over which `attempts` are refilled.
    pub period: Duration,
}

impl Rate {
    /// `attempts` per `period`.
    pub const fn new(attempts: u32, period: Duration) -> Self {
        Self { attempts, period }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: OffsetDateTime,
}

/// Token buckets per key. Bounded: when `max_keys` keys are tracked, refilled buckets are
/// dropped, and if none is, new keys are refused until some refill (fail closed).
pub struct RateLimiter {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter with this rate.
    pub fn new(rate: Rate) -> Self {
        Self { rate, max_keys: 100_000, buckets: Mutex::new(HashMap::new()) }
    }

    fn refill(&self, b: &mut Bucket, now: OffsetDateTime) {
        let cap = f64::from(self.rate.attempts);
        let period = self.rate.period.as_seconds_f64().max(f64::EPSILON);
        let elapsed = (now - b.at).as_seconds_f64().max(0.0);
        b.tokens = (b.tokens + elapsed * cap / period).min(cap);
        b.at = now;
    }

    /// Seconds until `key` may try again, or `None` if it may try now. Does not consume.
    pub fn check(&self, key: &str, now: OffsetDateTime) -> Option<u64> {
        if self.rate.attempts == 0 {
            return None;
        }
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let b = map.get_mut(key)?;
        self.refill(b, now);
        self.wait(b)
    }

    fn wait(&self, b: &Bucket) -> Option<u64> {
        if b.tokens >= 1.0 {
            return None;
        }
        let per_token = self.rate.period.as_seconds_f64() / f64::from(self.rate.attempts);
        // Whole seconds, at least 1; the cast cannot overflow for any sane period.
        Some(((1.0 - b.tokens) * per_token).ceil().max(1.0) as u64)
    }

    /// Consumes one attempt for `key`: `Err(seconds to wait)` when none is left.
    pub fn hit(&self, key: &str, now: OffsetDateTime) -> Result<(), u64> {
        if self.rate.attempts == 0 {
            return Ok(());
        }
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.max_keys && !map.contains_key(key) {
            // Forget only keys whose bucket has refilled (they are back to a clean slate);
            // when every tracked key is still limited, refuse new keys rather than forget
            // anyone's lockout (fail closed).
            let cap = f64::from(self.rate.attempts);
            let period = self.rate.period.as_seconds_f64().max(f64::EPSILON);
            map.retain(|_, b| b.tokens + (now - b.at).as_seconds_f64().max(0.0) * cap / period < cap);
            if map.len() >= self.max_keys {
                return Err(self.rate.period.whole_seconds().max(1).unsigned_abs());
            }
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket { tokens: f64::from(self.rate.attempts), at: now });
        self.refill(b, now);
        if let Some(wait) = self.wait(b) {
            return Err(wait);
        }
        b.tokens -= 1.0;
        Ok(())
    }

    /// Forgets `key` (e.g. after a successful sign-in).
    pub fn reset(&self, key: &str) {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_wait_then_refill() {
        let l = RateLimiter::new(Rate::new(3, Duration::seconds(60)));
        let t0 = OffsetDateTime::UNIX_EPOCH;
        for _ in 0..3 {
            assert_eq!(l.hit("a", t0), Ok(()));
        }
        assert_eq!(l.hit("a", t0), Err(20));
        assert_eq!(l.check("a", t0), Some(20));
        // Other keys are independent.
        assert_eq!(l.hit("b", t0), Ok(()));
        // One token back after a third of the period.
        assert_eq!(l.hit("a", t0 + Duration::seconds(20)), Ok(()));
        assert!(l.hit("a", t0 + Duration::seconds(20)).is_err());
        l.reset("a");
        assert_eq!(l.check("a", t0 + Duration::seconds(20)), None);
    }

    #[test]
    fn zero_turns_it_off() {
        let l = RateLimiter::new(Rate::new(0, Duration::seconds(60)));
        for _ in 0..100 {
            assert_eq!(l.hit("a", OffsetDateTime::UNIX_EPOCH), Ok(()));
        }
    }

    #[test]
    fn bounded_number_of_keys_and_lockouts_survive_a_flood() {
        let mut l = RateLimiter::new(Rate::new(1, Duration::seconds(60)));
        l.max_keys = 10;
        let t0 = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(l.hit("victim", t0), Ok(()));
        assert!(l.hit("victim", t0).is_err());
        // A flood of new keys cannot push the victim's lockout out.
        let mut refused = 0;
        for i in 0..100 {
            if l.hit(&format!("k{i}"), t0).is_err() {
                refused += 1;
            }
        }
        assert!(l.buckets.lock().unwrap().len() <= 10);
        assert_eq!(refused, 91, "new keys are refused while every tracked key is limited");
        assert!(l.hit("victim", t0).is_err(), "still locked");
        // Once buckets refill, their keys are forgotten and room is made.
        assert_eq!(l.hit("late", t0 + Duration::seconds(61)), Ok(()));
    }
}
