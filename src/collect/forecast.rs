//! When a filesystem will be full, from bilge's own samples of its available space: a
//! least-squares line over a window (default an hour), the shape of Prometheus'
//! `predict_linear(node_filesystem_avail_bytes[1h], …)`. Pure: the collector feeds it each
//! measurement of a storage root and reads the prediction back.
//!
//! Bounded: samples are kept at least a thousandth of the window apart (the newest always), so
//! a window holds at most about a thousand samples whatever the measurement rate.

use std::collections::VecDeque;
use std::time::Duration;

/// The default `--collector.filesystem.forecast-window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// Samples of one filesystem's available bytes over the window.
#[derive(Debug, Clone)]
pub struct Forecast {
    window: f64,
    /// `(seconds on a monotonic clock, available bytes)`, oldest first.
    samples: VecDeque<(f64, f64)>,
}

impl Forecast {
    /// An empty forecast over `window`.
    pub fn new(window: Duration) -> Forecast {
        Forecast {
            window: window.as_secs_f64().max(1.0),
            samples: VecDeque::new(),
        }
    }

    /// Adds a measurement of `avail` bytes at `at` seconds (a monotonic clock); samples older
    /// than the window go.
    pub fn add(&mut self, at: f64, avail: u64) {
        if self.samples.back().is_some_and(|&(last, _)| at < last) {
            // A clock that went back: start again rather than fit nonsense.
            self.samples.clear();
        }
        // Every sample but the newest is at least a thousandth of the window after the one
        // before: the newest so far goes when it is too close to that one, so the latest
        // figure always counts.
        let n = self.samples.len();
        if n >= 2 && self.samples[n - 1].0 - self.samples[n - 2].0 < self.window / 1000.0 {
            self.samples.pop_back();
        }
        self.samples.push_back((at, avail as f64));
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| at - t > self.window)
        {
            self.samples.pop_front();
        }
    }

    /// Seconds until the available space reaches zero on the fitted line, from the newest
    /// sample: `+Inf` when it is not falling, `None` until the samples span a quarter of the
    /// window (at most a minute) with at least three of them.
    pub fn seconds_to_full(&self) -> Option<f64> {
        let n = self.samples.len();
        let (first, last) = (self.samples.front()?.0, self.samples.back()?.0);
        if n < 3 || last - first < (self.window / 4.0).min(60.0) {
            return None;
        }
        let nf = n as f64;
        let mean_t = self.samples.iter().map(|s| s.0).sum::<f64>() / nf;
        let mean_a = self.samples.iter().map(|s| s.1).sum::<f64>() / nf;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for &(t, a) in &self.samples {
            sxy += (t - mean_t) * (a - mean_a);
            sxx += (t - mean_t) * (t - mean_t);
        }
        if sxx <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        if slope >= 0.0 {
            return Some(f64::INFINITY);
        }
        let now = mean_a + slope * (last - mean_t);
        Some((now / -slope).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_steady_fill_is_predicted_full_when_it_will_be() {
        let mut f = Forecast::new(Duration::from_secs(3600));
        // 5 MiB/s out of 1000 MiB, sampled every 2 s for 2 minutes.
        for i in 0..=60 {
            f.add(f64::from(i) * 2.0, 1000 * MIB - (i as u64) * 10 * MIB);
        }
        // 400 MiB left at 5 MiB/s.
        let t = f.seconds_to_full().unwrap_or_default();
        assert!((t - 80.0).abs() < 0.01, "{t}");
    }

    #[test]
    fn a_filesystem_that_is_not_filling_is_never_full() {
        let mut f = Forecast::new(Duration::from_secs(600));
        for i in 0u32..100 {
            f.add(f64::from(i), 500 * MIB + u64::from(i % 2) * MIB);
        }
        assert_eq!(f.seconds_to_full(), Some(f64::INFINITY));
        let mut g = Forecast::new(Duration::from_secs(600));
        for i in 0u32..100 {
            g.add(f64::from(i), 500 * MIB + u64::from(i) * MIB);
        }
        assert_eq!(g.seconds_to_full(), Some(f64::INFINITY));
    }

    #[test]
    fn too_few_or_too_close_samples_say_nothing() {
        let mut f = Forecast::new(Duration::from_secs(3600));
        assert_eq!(f.seconds_to_full(), None);
        f.add(0.0, 100);
        f.add(30.0, 90);
        f.add(59.0, 80);
        assert_eq!(f.seconds_to_full(), None);
        f.add(61.0, 70);
        assert!(f.seconds_to_full().is_some());
    }

    #[test]
    fn the_window_is_bounded_in_time_and_in_samples() {
        let mut f = Forecast::new(Duration::from_secs(100));
        for i in 0..100_000 {
            f.add(f64::from(i) * 0.01, 1000);
        }
        assert!(f.samples.len() <= 1002, "{}", f.samples.len());
        let (first, last) = (f.samples[0].0, f.samples[f.samples.len() - 1].0);
        assert!(last - first <= 100.0);
        // A clock going back starts over.
        f.add(1.0, 5);
        assert_eq!(f.samples.len(), 1);
    }
}
