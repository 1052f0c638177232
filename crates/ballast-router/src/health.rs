//! Health of one target: passive outlier detection (consecutive failures, or too high a failure
//! share over a sliding window, eject it, with an exponential back-off), a half-open state where one probe decides whether it returns, the
//! cool-down a `429 Retry-After` asks for, and the verdict of active checks — kept apart and
//! combined only when asked whether the target is available.
//!
//! Every method takes `now`, so the state machine is tested without real time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ballast_api::routing::{ActiveCheck, HealthPolicy};
use serde::Serialize;

/// The failure-rate rule of passive outlier detection, beside the consecutive-failures one: a
/// target whose failed share of the attempts recorded over the last `window` exceeds
/// `failure_percent` — once at least `min_requests` attempts were recorded — is ejected, with the
/// same back-off and half-open return. Catches a target that fails every other request, which
/// never fails enough times in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRatePolicy {
    /// Length of the sliding window.
    pub window: Duration,
    /// Attempts the window must hold before the rule applies.
    pub min_requests: u32,
    /// Eject when the failed share is above this percentage (100 turns the rule off).
    pub failure_percent: u32,
}

/// Outcomes kept per target at most (the window is also "the last this many attempts").
const MAX_WINDOW_OUTCOMES: usize = 1024;

impl Default for FailureRatePolicy {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            min_requests: 20,
            failure_percent: 50,
        }
    }
}

impl From<&ballast_api::routing::FailureRate> for FailureRatePolicy {
    fn from(f: &ballast_api::routing::FailureRate) -> Self {
        Self {
            window: Duration::from_millis(f.window_ms),
            min_requests: f.min_requests,
            failure_percent: f.failure_percent,
        }
    }
}

impl FailureRatePolicy {
    fn applies(&self) -> bool {
        self.failure_percent < 100 && !self.window.is_zero()
    }
}

/// Attempt outcomes of the sliding window: (when, failed).
#[derive(Debug, Default)]
struct Window {
    outcomes: VecDeque<(Instant, bool)>,
    failures: usize,
}

impl Window {
    fn record(&mut self, now: Instant, failed: bool, policy: &FailureRatePolicy) {
        if !policy.applies() {
            return;
        }
        self.prune(now, policy.window);
        if self.outcomes.len() >= MAX_WINDOW_OUTCOMES {
            if let Some((_, f)) = self.outcomes.pop_front() {
                self.failures -= usize::from(f);
            }
        }
        self.outcomes.push_back((now, failed));
        self.failures += usize::from(failed);
    }

    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some(&(at, f)) = self.outcomes.front() {
            if now.saturating_duration_since(at) < window {
                break;
            }
            self.outcomes.pop_front();
            self.failures -= usize::from(f);
        }
    }

    fn exceeded(&self, policy: &FailureRatePolicy) -> bool {
        let n = self.outcomes.len();
        policy.applies()
            && n >= usize::try_from(policy.min_requests).unwrap_or(usize::MAX).max(1)
            && self.failures * 100 > n * usize::try_from(policy.failure_percent).unwrap_or(100)
    }

    fn clear(&mut self) {
        self.outcomes.clear();
        self.failures = 0;
    }
}

/// Whether a target may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Healthy: route to it.
    Available,
    /// Its ejection ended: one request (or probe) may try it.
    Probe,
    /// Ejected, cooling down after a 429, failing active checks, or already being probed.
    Unavailable,
}

/// Where a target is in its life cycle (for `/admin/targets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Serving.
    Healthy,
    /// Ejected by outlier detection until its back-off ends.
    Ejected,
    /// Back-off over, waiting for a probe to succeed.
    HalfOpen,
}

/// What a recorded failure did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    /// Counted, nothing else.
    Counted,
    /// The target is now ejected (for this long).
    Ejected(Duration),
    /// Ejection was due but the route's maximum ejection share was reached.
    EjectionCapped,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    /// Set while ejected; once passed, the target is half-open.
    ejected_until: Option<Instant>,
    /// Ejections in a row (drives the back-off); cleared after a healthy period.
    ejections_in_row: u32,
    returned_at: Option<Instant>,
    probe_in_flight: bool,
    cooldown_until: Option<Instant>,
    active_down: bool,
    active_successes: u32,
    active_failures: u32,
    total_ejections: u64,
    window: Window,
    /// The failure-rate rule (the route's, or the router's default); replaced on reloads.
    failure_rate: FailureRatePolicy,
}

/// Health of one target, shared by every request and the checker task.
#[derive(Debug)]
pub struct TargetHealth {
    state: Mutex<State>,
    /// Woken on every ejection (the target's checker sleeps on it while nothing is due).
    ejected: tokio::sync::Notify,
}

/// A point-in-time view of a target's health.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    /// Life-cycle phase.
    pub phase: Phase,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Ejections in a row.
    pub ejections_in_row: u32,
    /// Ejections since the router started.
    pub total_ejections: u64,
    /// Milliseconds left in the current ejection.
    pub ejected_for_ms: u64,
    /// Milliseconds left of a `Retry-After` cool-down.
    pub cooldown_ms: u64,
    /// Whether active checks currently fail.
    pub active_down: bool,
    /// Whether a probe is under way.
    pub probing: bool,
    /// Attempts in the failure-rate window.
    pub window_requests: usize,
    /// Failed attempts in the failure-rate window.
    pub window_failures: usize,
}

fn backoff(policy: &HealthPolicy, ejections_in_row: u32) -> Duration {
    let base = policy.base_ejection_ms;
    let factor = 1u64.checked_shl(ejections_in_row.min(20)).unwrap_or(u64::MAX);
    Duration::from_millis(base.saturating_mul(factor).min(policy.max_ejection_ms))
}

fn ms_left(until: Option<Instant>, now: Instant) -> u64 {
    until.map_or(0, |u| {
        u64::try_from(u.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
    })
}

impl Default for TargetHealth {
    fn default() -> Self {
        Self::new()
    }
}

impl TargetHealth {
    /// A healthy target with the default failure-rate rule.
    #[must_use]
    pub fn new() -> Self {
        Self::with_failure_rate(FailureRatePolicy::default())
    }

    /// A healthy target judged by this failure-rate rule.
    #[must_use]
    pub fn with_failure_rate(failure_rate: FailureRatePolicy) -> Self {
        Self {
            state: Mutex::new(State {
                failure_rate,
                ..State::default()
            }),
            ejected: tokio::sync::Notify::new(),
        }
    }

    /// Replaces the failure-rate rule (a reload changed the route's setting). The outcomes
    /// recorded so far stay in the window.
    pub fn set_failure_rate(&self, failure_rate: &FailureRatePolicy) {
        self.with(|s| {
            if s.failure_rate != *failure_rate {
                s.failure_rate = failure_rate.clone();
            }
        });
    }

    /// The failure-rate rule in force.
    pub fn failure_rate(&self) -> FailureRatePolicy {
        self.with(|s| s.failure_rate.clone())
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Whether the target may take a request now.
    pub fn availability(&self, now: Instant) -> Availability {
        self.with(|s| {
            if s.active_down || s.cooldown_until.is_some_and(|u| now < u) {
                return Availability::Unavailable;
            }
            match s.ejected_until {
                Some(u) if now < u => Availability::Unavailable,
                Some(_) if s.probe_in_flight => Availability::Unavailable,
                Some(_) => Availability::Probe,
                None => Availability::Available,
            }
        })
    }

    /// Whether the target counts as healthy capacity (available, not half-open).
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.availability(now) == Availability::Available
    }

    /// Whether outlier detection currently holds the target out (ejected or half-open).
    pub fn is_ejected(&self) -> bool {
        self.with(|s| s.ejected_until.is_some())
    }

    /// When the current ejection ends, if ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.with(|s| s.ejected_until)
    }

    /// Claims the single probe slot of a half-open target. False when it is not half-open or
    /// another probe is under way.
    pub fn try_begin_probe(&self, now: Instant) -> bool {
        self.with(|s| match s.ejected_until {
            Some(u) if now >= u && !s.probe_in_flight => {
                s.probe_in_flight = true;
                true
            }
            _ => false,
        })
    }

    /// Releases a probe slot whose request ended without a verdict (cancelled).
    pub fn abandon_probe(&self) {
        self.with(|s| s.probe_in_flight = false);
    }

    /// A successful attempt (any answer that is neither 5xx nor 429, or a probe that passed).
    pub fn record_success(&self, now: Instant, policy: &HealthPolicy) {
        self.with(|s| {
            s.consecutive_failures = 0;
            if let Some(u) = s.ejected_until {
                if now >= u {
                    // Half-open probe passed: back in service, with a fresh window.
                    s.ejected_until = None;
                    s.probe_in_flight = false;
                    s.returned_at = Some(now);
                    s.window.clear();
                }
                return;
            }
            s.window.record(now, false, &s.failure_rate);
            if s.ejections_in_row > 0
                && s.returned_at
                    .is_some_and(|r| now.saturating_duration_since(r) >= backoff(policy, s.ejections_in_row))
            {
                // Healthy for as long as the last back-off: forget the streak.
                s.ejections_in_row = 0;
            }
        });
    }

    /// A failed attempt (connect error, timeout, 5xx, broken stream). `may_eject` says whether
    /// the route's ejection share allows one more ejection.
    pub fn record_failure(&self, now: Instant, policy: &HealthPolicy, may_eject: bool) -> FailureEffect {
        let effect = self.record_failure_inner(now, policy, may_eject);
        if matches!(effect, FailureEffect::Ejected(_)) {
            self.ejected.notify_one();
        }
        effect
    }

    /// Resolves at the next ejection (at once when one happened since the last wait).
    pub async fn ejection(&self) {
        self.ejected.notified().await;
    }

    fn record_failure_inner(&self, now: Instant, policy: &HealthPolicy, may_eject: bool) -> FailureEffect {
        self.with(|s| {
            if let Some(u) = s.ejected_until {
                if now >= u {
                    // The half-open probe failed: eject again, longer.
                    let d = backoff(policy, s.ejections_in_row);
                    s.ejections_in_row = s.ejections_in_row.saturating_add(1);
                    s.ejected_until = Some(now + d);
                    s.probe_in_flight = false;
                    s.total_ejections += 1;
                    return FailureEffect::Ejected(d);
                }
                // A request sent before the ejection: already out.
                return FailureEffect::Counted;
            }
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            s.window.record(now, true, &s.failure_rate);
            if s.consecutive_failures < policy.consecutive_failures && !s.window.exceeded(&s.failure_rate) {
                return FailureEffect::Counted;
            }
            if !may_eject {
                return FailureEffect::EjectionCapped;
            }
            let d = backoff(policy, s.ejections_in_row);
            s.ejections_in_row = s.ejections_in_row.saturating_add(1);
            s.ejected_until = Some(now + d);
            s.consecutive_failures = 0;
            s.window.clear();
            s.total_ejections += 1;
            FailureEffect::Ejected(d)
        })
    }

    /// A 429: skip the target until `Retry-After` (capped by the longest ejection).
    pub fn record_rate_limited(&self, now: Instant, retry_after: Option<Duration>, policy: &HealthPolicy) {
        if let Some(ra) = retry_after {
            let d = ra.min(Duration::from_millis(policy.max_ejection_ms));
            self.with(|s| {
                let until = now + d;
                if s.cooldown_until.is_none_or(|c| c < until) {
                    s.cooldown_until = Some(until);
                }
            });
        }
    }

    /// The verdict of an active check; returns true when it changed the active state.
    pub fn record_active(&self, ok: bool, check: &ActiveCheck) -> bool {
        self.with(|s| {
            if ok {
                s.active_failures = 0;
                s.active_successes = s.active_successes.saturating_add(1);
                if s.active_down && s.active_successes >= check.healthy_threshold {
                    s.active_down = false;
                    return true;
                }
            } else {
                s.active_successes = 0;
                s.active_failures = s.active_failures.saturating_add(1);
                if !s.active_down && s.active_failures >= check.unhealthy_threshold {
                    s.active_down = true;
                    return true;
                }
            }
            false
        })
    }

    /// A view for `/admin/targets`.
    pub fn view(&self, now: Instant) -> HealthView {
        self.with(|s| HealthView {
            phase: match s.ejected_until {
                Some(u) if now < u => Phase::Ejected,
                Some(_) => Phase::HalfOpen,
                None => Phase::Healthy,
            },
            consecutive_failures: s.consecutive_failures,
            ejections_in_row: s.ejections_in_row,
            total_ejections: s.total_ejections,
            ejected_for_ms: ms_left(s.ejected_until, now),
            cooldown_ms: ms_left(s.cooldown_until, now),
            active_down: s.active_down,
            probing: s.probe_in_flight,
            window_requests: s.window.outcomes.len(),
            window_failures: s.window.failures,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            consecutive_failures: 3,
            base_ejection_ms: 100,
            max_ejection_ms: 350,
            ..HealthPolicy::default()
        }
    }

    #[test]
    fn consecutive_failures_eject_with_exponential_backoff_and_half_open_probe() {
        let p = policy();
        let h = TargetHealth::new();
        let t0 = Instant::now();
        assert_eq!(h.record_failure(t0, &p, true), FailureEffect::Counted);
        h.record_success(t0, &p); // a success resets the count
        assert_eq!(h.record_failure(t0, &p, true), FailureEffect::Counted);
        assert_eq!(h.record_failure(t0, &p, true), FailureEffect::Counted);
        assert_eq!(
            h.record_failure(t0, &p, true),
            FailureEffect::Ejected(Duration::from_millis(100))
        );
        assert_eq!(
            h.availability(t0 + Duration::from_millis(99)),
            Availability::Unavailable
        );
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(h.availability(t1), Availability::Probe);
        assert!(!h.is_healthy(t1));
        // One probe at a time.
        assert!(h.try_begin_probe(t1));
        assert!(!h.try_begin_probe(t1));
        assert_eq!(h.availability(t1), Availability::Unavailable);
        // The probe fails: ejected again for twice as long.
        assert_eq!(
            h.record_failure(t1, &p, true),
            FailureEffect::Ejected(Duration::from_millis(200))
        );
        let t2 = t1 + Duration::from_millis(200);
        assert!(h.try_begin_probe(t2));
        // Fails again: capped at max_ejection_ms.
        assert_eq!(
            h.record_failure(t2, &p, true),
            FailureEffect::Ejected(Duration::from_millis(350))
        );
        let t3 = t2 + Duration::from_millis(350);
        assert!(h.try_begin_probe(t3));
        h.record_success(t3, &p);
        assert_eq!(h.availability(t3), Availability::Available);
        assert_eq!(h.view(t3).total_ejections, 3);
        // After staying healthy for a back-off period, the streak is forgotten.
        h.record_success(t3 + Duration::from_secs(1), &p);
        assert_eq!(h.view(t3).ejections_in_row, 0);
    }

    #[test]
    fn abandoned_probe_frees_the_slot_and_capped_ejection_keeps_target() {
        let p = policy();
        let h = TargetHealth::new();
        let t0 = Instant::now();
        for _ in 0..2 {
            h.record_failure(t0, &p, false);
        }
        assert_eq!(h.record_failure(t0, &p, false), FailureEffect::EjectionCapped);
        assert!(h.is_healthy(t0));
        assert!(matches!(
            h.record_failure(t0, &p, true),
            FailureEffect::Ejected(_)
        ));
        let t1 = t0 + Duration::from_millis(100);
        assert!(h.try_begin_probe(t1));
        h.abandon_probe();
        assert!(h.try_begin_probe(t1));
    }

    fn rate() -> FailureRatePolicy {
        FailureRatePolicy {
            window: Duration::from_secs(10),
            min_requests: 10,
            failure_percent: 40,
        }
    }

    #[test]
    fn failure_rate_ejects_a_target_that_never_fails_twice_in_a_row() {
        let p = policy();
        let h = TargetHealth::with_failure_rate(rate());
        let t0 = Instant::now();
        // Every other attempt fails: 50 % > 40 %, but only from the 10th attempt on.
        for i in 0..9u64 {
            let t = t0 + Duration::from_millis(i);
            if i % 2 == 0 {
                assert_eq!(
                    h.record_failure(t, &p, true),
                    FailureEffect::Counted,
                    "attempt {i}"
                );
            } else {
                h.record_success(t, &p);
            }
        }
        assert_eq!(h.view(t0).consecutive_failures, 1);
        let t = t0 + Duration::from_millis(9);
        h.record_success(t, &p); // 10 attempts, 5 failed: the next failure tips it
        assert_eq!(
            h.record_failure(t, &p, true),
            FailureEffect::Ejected(Duration::from_millis(100))
        );
        // Same back-off and half-open return as the consecutive rule, with a fresh window.
        let t1 = t + Duration::from_millis(100);
        assert!(h.try_begin_probe(t1));
        h.record_success(t1, &p);
        assert_eq!(h.availability(t1), Availability::Available);
        assert_eq!(h.view(t1).window_requests, 0);
        assert_eq!(h.record_failure(t1, &p, true), FailureEffect::Counted);
    }

    #[test]
    fn failure_rate_needs_the_minimum_volume_a_recent_window_and_a_share_above_the_threshold() {
        let p = HealthPolicy {
            consecutive_failures: 100,
            ..policy()
        };
        let t0 = Instant::now();
        // Below the minimum volume: 100 % failed but only 9 attempts.
        let h = TargetHealth::with_failure_rate(rate());
        for _ in 0..9 {
            assert_eq!(h.record_failure(t0, &p, true), FailureEffect::Counted);
        }
        // Old outcomes leave the window: the 10th, 11 s later, finds it nearly empty.
        let later = t0 + Duration::from_secs(11);
        assert_eq!(h.record_failure(later, &p, true), FailureEffect::Counted);
        assert_eq!(h.view(later).window_requests, 1);

        // Exactly at the threshold is not above it: 4 of 10 failed with 40 %.
        let h = TargetHealth::with_failure_rate(rate());
        for i in 0..9 {
            if i < 3 {
                assert_eq!(h.record_failure(t0, &p, true), FailureEffect::Counted);
            } else {
                h.record_success(t0, &p);
            }
        }
        assert_eq!(h.record_failure(t0, &p, true), FailureEffect::Counted);
        // 5 of 11 is above 40 %; the route's ejection share still decides.
        assert_eq!(h.record_failure(t0, &p, false), FailureEffect::EjectionCapped);
        assert!(h.is_healthy(t0));

        // 100 turns the rule off.
        let off = FailureRatePolicy {
            failure_percent: 100,
            ..rate()
        };
        let h = TargetHealth::with_failure_rate(off);
        for _ in 0..50 {
            assert_eq!(h.record_failure(t0, &p, true), FailureEffect::Counted);
        }
        assert_eq!(h.view(t0).window_requests, 0);
    }

    #[test]
    fn retry_after_cools_down_without_ejecting() {
        let p = policy();
        let h = TargetHealth::new();
        let t0 = Instant::now();
        h.record_rate_limited(t0, Some(Duration::from_millis(50)), &p);
        assert_eq!(h.availability(t0), Availability::Unavailable);
        assert_eq!(
            h.availability(t0 + Duration::from_millis(50)),
            Availability::Available
        );
        // Capped at max_ejection_ms.
        h.record_rate_limited(t0, Some(Duration::from_secs(3600)), &p);
        assert_eq!(
            h.availability(t0 + Duration::from_millis(351)),
            Availability::Available
        );
        assert!(!h.is_ejected());
    }

    #[test]
    fn active_checks_use_thresholds() {
        let c = ActiveCheck {
            path: "/health".into(),
            interval_ms: 100,
            timeout_ms: 100,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        };
        let h = TargetHealth::new();
        let t0 = Instant::now();
        assert!(!h.record_active(false, &c));
        assert!(h.is_healthy(t0));
        assert!(h.record_active(false, &c));
        assert!(!h.is_healthy(t0));
        assert!(!h.record_active(true, &c));
        assert!(!h.is_healthy(t0));
        assert!(h.record_active(true, &c));
        assert!(h.is_healthy(t0));
    }
}
