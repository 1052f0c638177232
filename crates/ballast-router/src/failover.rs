//! Region failover of one route: the local region serves first while its healthy share is at or
//! above the threshold; below it, traffic spills to the other regions; it comes back only after
//! the local region stayed above the threshold for the hold-down period (no flapping).

use std::time::{Duration, Instant};

/// A change of the route's region preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Traffic left the local region.
    Out,
    /// Traffic returned to the local region.
    Back,
}

/// Whether a route currently avoids its local region.
#[derive(Debug, Default)]
pub struct FailoverState {
    failed_over: bool,
    healthy_since: Option<Instant>,
    /// The home region the state is about; a reload that changes it starts afresh.
    home: String,
}

impl FailoverState {
    /// Whether traffic currently avoids the local region.
    #[must_use]
    pub fn failed_over(&self) -> bool {
        self.failed_over
    }

    /// Makes `home` the region this state is about. A different one than before (a reload
    /// changed the route's region order) clears the state: a failover of the old home region
    /// says nothing about the new one.
    pub fn set_home(&mut self, home: &str) {
        if self.home != home {
            self.home.clear();
            self.home.push_str(home);
            self.failed_over = false;
            self.healthy_since = None;
        }
    }

    /// Feeds the local region's current verdict; returns a transition when one happens.
    pub fn update(&mut self, now: Instant, local_ok: bool, hold_down: Duration) -> Option<Transition> {
        match (self.failed_over, local_ok) {
            (false, true) => None,
            (false, false) => {
                self.failed_over = true;
                self.healthy_since = None;
                Some(Transition::Out)
            }
            (true, false) => {
                self.healthy_since = None;
                None
            }
            (true, true) => {
                let since = *self.healthy_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= hold_down {
                    self.failed_over = false;
                    self.healthy_since = None;
                    Some(Transition::Back)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_over_at_once_and_back_only_after_the_hold_down() {
        let hold = Duration::from_secs(10);
        let mut f = FailoverState::default();
        let t0 = Instant::now();
        assert_eq!(f.update(t0, true, hold), None);
        assert_eq!(f.update(t0, false, hold), Some(Transition::Out));
        assert!(f.failed_over());
        assert_eq!(f.update(t0 + Duration::from_secs(1), true, hold), None);
        // Flaps: the hold-down starts again.
        assert_eq!(f.update(t0 + Duration::from_secs(5), false, hold), None);
        assert_eq!(f.update(t0 + Duration::from_secs(6), true, hold), None);
        assert_eq!(f.update(t0 + Duration::from_secs(15), true, hold), None);
        assert_eq!(
            f.update(t0 + Duration::from_secs(16), true, hold),
            Some(Transition::Back)
        );
        assert!(!f.failed_over());
    }

    #[test]
    fn a_new_home_region_starts_afresh() {
        let hold = Duration::from_secs(10);
        let mut f = FailoverState::default();
        let t0 = Instant::now();
        f.set_home("eu");
        assert_eq!(f.update(t0, false, hold), Some(Transition::Out));
        f.set_home("eu");
        assert!(f.failed_over());
        f.set_home("us");
        assert!(!f.failed_over());
        assert_eq!(f.update(t0, true, hold), None);
    }
}
