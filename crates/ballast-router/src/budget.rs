//! The retry budget of a route: retries over a sliding window may be a percentage of the route's
//! requests or a small allowance per second (so that a quiet route can still retry), whichever
//! is larger.
//! This is what keeps a failing backend from turning into a retry storm.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ballast_api::routing::RetryPolicy;

const SLOTS: u32 = 10;

#[derive(Debug)]
struct Slot {
    start: Instant,
    requests: u64,
    retries: u64,
}

/// A sliding-window retry budget (time is passed in, so tests need no clock).
#[derive(Debug, Default)]
pub struct RetryBudget {
    slots: Mutex<VecDeque<Slot>>,
}

impl RetryBudget {
    /// An empty budget.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, now: Instant, policy: &RetryPolicy, f: impl FnOnce(&mut VecDeque<Slot>) -> R) -> R {
        let window = Duration::from_millis(policy.window_ms.max(1));
        let slot_len = window / SLOTS;
        let mut guard = match self.slots.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while guard
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.start) >= window)
        {
            guard.pop_front();
        }
        if guard
            .back()
            .is_none_or(|s| now.saturating_duration_since(s.start) >= slot_len)
        {
            guard.push_back(Slot {
                start: now,
                requests: 0,
                retries: 0,
            });
        }
        f(&mut guard)
    }

    /// Counts a request.
    pub fn record_request(&self, now: Instant, policy: &RetryPolicy) {
        self.with(now, policy, |slots| {
            if let Some(s) = slots.back_mut() {
                s.requests += 1;
            }
        });
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_retry(&self, now: Instant, policy: &RetryPolicy) -> bool {
        self.with(now, policy, |slots| {
            let requests: u64 = slots.iter().map(|s| s.requests).sum();
            let retries: u64 = slots.iter().map(|s| s.retries).sum();
            let floor =
                u64::from(policy.min_retries_per_second).saturating_mul(policy.window_ms.max(1000)) / 1000;
            let share = requests.saturating_mul(u64::from(policy.budget_percent)) / 100;
            if retries < floor.max(share) {
                if let Some(s) = slots.back_mut() {
                    s.retries += 1;
                }
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            budget_percent: 20,
            min_retries_per_second: 1,
            window_ms: 2_000,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn retries_are_bounded_by_the_minimum_then_by_the_share() {
        let p = policy();
        let b = RetryBudget::new();
        let t0 = Instant::now();
        // No traffic: the minimum (1/s over 2 s = 2) applies.
        assert!(b.try_retry(t0, &p));
        assert!(b.try_retry(t0, &p));
        assert!(!b.try_retry(t0, &p));
        // 100 requests: 20 % = 20 retries in the window.
        for _ in 0..100 {
            b.record_request(t0, &p);
        }
        let mut granted = 0;
        while b.try_retry(t0, &p) {
            granted += 1;
            assert!(granted < 1000);
        }
        assert_eq!(granted, 18); // 20 minus the 2 already taken
                                 // After the window slides past, the budget refills.
        let later = t0 + Duration::from_millis(2_100);
        assert!(b.try_retry(later, &p));
    }

    #[test]
    fn huge_settings_saturate_instead_of_overflowing() {
        let p = RetryPolicy {
            budget_percent: u32::MAX,
            min_retries_per_second: u32::MAX,
            window_ms: u64::MAX,
            ..RetryPolicy::default()
        };
        let b = RetryBudget::new();
        let t0 = Instant::now();
        b.record_request(t0, &p);
        assert!(b.try_retry(t0, &p));
        assert!(b.try_retry(t0 + Duration::from_secs(1), &p));
    }
}
