//! The webhook's memory of alerts it acted on, so that Alertmanager's retries and an HA pair's
//! second delivery never start a second prune. Keyed by fingerprint and `startsAt` (a new firing
//! of the same alert acts again), bounded in size and in time. Pure: the caller passes `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The shortest time a delivery of an alert already acted on counts as a duplicate.
pub const MIN_DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// Most alerts remembered for deduplication.
pub const DEDUP_CAPACITY: usize = 4096;

/// What an alert is remembered by: its fingerprint and its `startsAt`.
pub type Key = (String, String);

/// The deduplication window for a policy's `cooldown`: the cooldown, at least [`MIN_DEDUP_WINDOW`].
pub fn window(cooldown: Duration) -> Duration {
    cooldown.max(MIN_DEDUP_WINDOW)
}

/// Alerts acted on recently, keyed by (fingerprint, startsAt), bounded.
#[derive(Debug, Default)]
pub struct Dedup {
    /// When each remembered alert was acted on.
    seen: HashMap<Key, Instant>,
}

impl Dedup {
    /// True when `key` was acted on less than `window` before `now`.
    pub fn is_duplicate(&self, key: &Key, now: Instant, window: Duration) -> bool {
        self.seen
            .get(key)
            .is_some_and(|at| now.saturating_duration_since(*at) < window)
    }

    /// Remembers `key` as acted on at `now`, forgetting expired keys and, when full, the oldest.
    pub fn remember(&mut self, key: Key, now: Instant, window: Duration) {
        self.seen
            .retain(|_, at| now.saturating_duration_since(*at) < window);
        while self.seen.len() >= DEDUP_CAPACITY {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.seen.remove(&k),
                None => break,
            };
        }
        self.seen.insert(key, now);
    }

    /// Number of remembered alerts.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_the_window_is_a_duplicate_and_after_it_acts_again() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(600);
        let key = ("abc".to_string(), "2024-05-01T10:00:00Z".to_string());
        assert!(!d.is_duplicate(&key, t0, w));
        d.remember(key.clone(), t0, w);
        assert!(d.is_duplicate(&key, t0 + Duration::from_secs(599), w));
        assert!(!d.is_duplicate(&key, t0 + Duration::from_secs(600), w));
        // A new firing of the same alert (new startsAt) is not a duplicate.
        let again = ("abc".to_string(), "2024-05-01T11:00:00Z".to_string());
        assert!(!d.is_duplicate(&again, t0, w));
    }

    #[test]
    fn the_dedup_memory_is_bounded() {
        let mut d = Dedup::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(3600);
        for i in 0..(DEDUP_CAPACITY + 10) {
            d.remember(
                (format!("fp{i}"), String::new()),
                t0 + Duration::from_millis(i as u64),
                w,
            );
        }
        assert_eq!(d.len(), DEDUP_CAPACITY);
        // The oldest went first.
        assert!(!d.is_duplicate(&("fp0".into(), String::new()), t0, w));
    }

    #[test]
    fn the_window_is_the_cooldown_but_never_under_ten_minutes() {
        assert_eq!(window(Duration::ZERO), MIN_DEDUP_WINDOW);
        assert_eq!(window(Duration::from_secs(3600)), Duration::from_secs(3600));
    }
}
