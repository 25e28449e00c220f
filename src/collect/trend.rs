//! The recent past of one storage filesystem's available space, for the status page's chart:
//! wall-clock samples over [`SPAN`], at most [`POINTS`] of them whatever the measurement rate.
//! Pure: the collector adds each measurement and the page reads the points back.
//!
//! Unlike [`super::forecast`] it keeps wall-clock times (the chart's axis and the cleanups'
//! marks are wall-clock), and a clock that jumps back starts it again.

use std::collections::VecDeque;

/// How far back the chart looks.
pub const SPAN: i64 = 6 * 3600;
/// The most points kept: one every `SPAN / POINTS` seconds, and the newest.
pub const POINTS: usize = 360;

/// Samples `(unix seconds, available bytes)`, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Trend {
    points: VecDeque<(i64, u64)>,
}

impl Trend {
    /// Adds a measurement of `avail` bytes at `at` (unix seconds).
    pub fn add(&mut self, at: i64, avail: u64) {
        if self.points.back().is_some_and(|&(last, _)| at < last) {
            self.points.clear();
        }
        // As in the forecast: every point but the newest is a step after the one before, and
        // the newest replaces a newest that came too soon.
        let step = SPAN / POINTS as i64;
        let n = self.points.len();
        if n >= 2 && self.points[n - 1].0 - self.points[n - 2].0 < step {
            self.points.pop_back();
        }
        self.points.push_back((at, avail));
        while self.points.front().is_some_and(|&(t, _)| at - t > SPAN) {
            self.points.pop_front();
        }
    }

    /// The points, oldest first.
    pub fn points(&self) -> Vec<(i64, u64)> {
        self.points.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_of_samples_every_second_keeps_six_hours_in_at_most_a_few_hundred_points() {
        let mut t = Trend::default();
        let start = 1_800_000_000;
        for i in 0..86_400 {
            t.add(start + i, 1000 - (i as u64 % 1000));
        }
        let p = t.points();
        assert!(p.len() <= POINTS + 2, "{}", p.len());
        let (first, last) = (p[0].0, p[p.len() - 1].0);
        assert_eq!(last, start + 86_399, "the newest is always kept");
        assert!(last - first <= SPAN && last - first > SPAN - 120);
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn the_newest_sample_always_shows_and_a_clock_that_went_back_starts_again() {
        let mut t = Trend::default();
        t.add(100, 5);
        t.add(101, 4);
        t.add(102, 3);
        assert_eq!(t.points(), [(100, 5), (102, 3)]);
        t.add(50, 9);
        assert_eq!(t.points(), [(50, 9)]);
    }
}
