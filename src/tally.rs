//! Totals of the recorded history: builds by project, result and reason (with their durations
//! and last times), cleanup runs by trigger and result, bytes freed by action. Plain data with
//! plain arithmetic: the store keeps one [`Tally`] in its summary tables (updated in the same
//! transaction as every row it counts), and the metrics show one at scrape time. No I/O here.
//!
//! The project label cap lives here too ([`Tally::capped`]): the first `max` projects seen keep
//! their names, the later ones are folded into [`OTHER_PROJECT`], whatever order they are read in.

use std::collections::BTreeMap;

use crate::model::Reason;
use crate::model::{Action, BuildResult, CleanupResult, Trigger};

/// Build duration buckets, 1 s to 2 h (the upper bounds of `bilge_build_duration_seconds`).
pub const BUILD_DURATION_BUCKETS: [f64; 13] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 5400.0, 7200.0,
];

/// The label value of every project beyond the cap.
pub const OTHER_PROJECT: &str = "other";

/// The durations of the builds of one project and result, as a histogram keeps them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Durations {
    /// Builds counted.
    pub count: u64,
    /// Sum of their seconds.
    pub sum: f64,
    /// Builds per bucket of [`BUILD_DURATION_BUCKETS`] (not cumulative); the last entry counts
    /// the builds longer than the largest bound.
    pub buckets: [u64; BUILD_DURATION_BUCKETS.len() + 1],
    /// The newest finish time, Unix seconds.
    pub last_finished: f64,
}

impl Durations {
    /// Counts one build of `seconds` that finished at `finished` (Unix seconds).
    pub fn observe(&mut self, seconds: f64, finished: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        let i = BUILD_DURATION_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BUILD_DURATION_BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += seconds;
        self.last_finished = self.last_finished.max(finished);
    }

    /// Adds `other`'s builds to these.
    pub fn merge(&mut self, other: &Durations) {
        self.count += other.count;
        self.sum += other.sum;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.last_finished = self.last_finished.max(other.last_finished);
    }

    /// The cumulative bucket counts, as Prometheus exposes them (without `+Inf`, which is `count`).
    pub fn cumulative(&self) -> Vec<u64> {
        self.buckets[..BUILD_DURATION_BUCKETS.len()]
            .iter()
            .scan(0, |acc, n| {
                *acc += n;
                Some(*acc)
            })
            .collect()
    }
}

/// Totals of builds and cleanup runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tally {
    /// Builds by (project, result, reason).
    pub builds: BTreeMap<(String, BuildResult, Reason), u64>,
    /// Durations and last finish time by (project, result).
    pub durations: BTreeMap<(String, BuildResult), Durations>,
    /// Every project name, in the order the first build of each was recorded.
    pub projects: Vec<String>,
    /// Builds by (host, result, reason); the host "" is this host (a build recorded without one).
    pub host_builds: BTreeMap<(String, BuildResult, Reason), u64>,
    /// Every host name, in the order the first build of each was recorded.
    pub hosts: Vec<String>,
    /// Cleanup runs by (trigger, result); `Running` is never a key.
    pub cleanup_runs: BTreeMap<(Trigger, CleanupResult), u64>,
    /// Bytes freed by action (the level that freed them).
    pub cleanup_bytes: BTreeMap<Action, u64>,
    /// When the last run that pruned ended, Unix seconds.
    pub cleanup_last_run: Option<f64>,
}

impl Tally {
    /// Counts one build, run on `host` ("" for this host).
    pub fn observe_build(
        &mut self,
        host: &str,
        project: &str,
        result: BuildResult,
        reason: Reason,
        seconds: f64,
        finished: f64,
    ) {
        if !self.projects.iter().any(|p| p == project) {
            self.projects.push(project.to_string());
        }
        if !self.hosts.iter().any(|h| h == host) {
            self.hosts.push(host.to_string());
        }
        *self
            .host_builds
            .entry((host.to_string(), result, reason))
            .or_default() += 1;
        *self
            .builds
            .entry((project.to_string(), result, reason))
            .or_default() += 1;
        self.durations
            .entry((project.to_string(), result))
            .or_default()
            .observe(seconds, finished);
    }

    /// Counts `runs` runs of `trigger` that ended with `result`, having freed `bytes` per level,
    /// the last of them ending at `finished` (Unix seconds). A run still executing counts nothing.
    pub fn observe_cleanup(
        &mut self,
        trigger: Trigger,
        result: CleanupResult,
        runs: u64,
        bytes: &[(Action, u64)],
        finished: f64,
    ) {
        if result == CleanupResult::Running {
            return;
        }
        *self.cleanup_runs.entry((trigger, result)).or_default() += runs;
        if result.pruned() {
            for (action, b) in bytes {
                *self.cleanup_bytes.entry(*action).or_default() += b;
            }
            self.cleanup_last_run = Some(self.cleanup_last_run.unwrap_or(0.0).max(finished));
        }
    }

    /// Adds everything `other` counted (its new projects after this one's, in its order).
    pub fn merge(&mut self, other: &Tally) {
        for p in &other.projects {
            if !self.projects.contains(p) {
                self.projects.push(p.clone());
            }
        }
        for h in &other.hosts {
            if !self.hosts.contains(h) {
                self.hosts.push(h.clone());
            }
        }
        for (k, n) in &other.builds {
            *self.builds.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.host_builds {
            *self.host_builds.entry(k.clone()).or_default() += n;
        }
        for (k, d) in &other.durations {
            self.durations.entry(k.clone()).or_default().merge(d);
        }
        for (k, n) in &other.cleanup_runs {
            *self.cleanup_runs.entry(*k).or_default() += n;
        }
        for (k, n) in &other.cleanup_bytes {
            *self.cleanup_bytes.entry(*k).or_default() += n;
        }
        if let Some(t) = other.cleanup_last_run {
            self.cleanup_last_run = Some(self.cleanup_last_run.unwrap_or(0.0).max(t));
        }
    }

    /// The build totals with at most `max` project names and `max_hosts` host names: the first
    /// ones seen keep theirs, the rest are added up under [`OTHER_PROJECT`] (cleanup totals are
    /// copied as they are). The host "" becomes `own`, this host's name.
    pub fn capped(&self, max: usize, max_hosts: usize, own: &str) -> Tally {
        let (projects, label) = cap(&self.projects, max, str::to_string);
        let (hosts, host_label) = cap(&self.hosts, max_hosts, |h: &str| {
            if h.is_empty() { own } else { h }.to_string()
        });
        let mut out = Tally {
            cleanup_runs: self.cleanup_runs.clone(),
            cleanup_bytes: self.cleanup_bytes.clone(),
            cleanup_last_run: self.cleanup_last_run,
            ..Tally::default()
        };
        out.projects = projects;
        out.hosts = hosts;
        for ((p, r, why), n) in &self.builds {
            *out.builds.entry((label(p), *r, *why)).or_default() += n;
        }
        for ((p, r), d) in &self.durations {
            out.durations.entry((label(p), *r)).or_default().merge(d);
        }
        for ((h, r, why), n) in &self.host_builds {
            *out.host_builds
                .entry((host_label(h), *r, *why))
                .or_default() += n;
        }
        out
    }
}

/// A cap of `max` label values over `names` (in first-seen order, each taken through `rename`):
/// the first `max` distinct ones keep their name, the rest become [`OTHER_PROJECT`]. Returns the
/// labels in first-seen order and the label of any name.
fn cap<'a>(
    names: &[String],
    max: usize,
    rename: impl Fn(&str) -> String + 'a,
) -> (Vec<String>, impl Fn(&str) -> String + 'a) {
    let mut seen: Vec<String> = Vec::new();
    for n in names {
        let n = rename(n);
        if !seen.contains(&n) {
            seen.push(n);
        }
    }
    let keep: std::collections::HashSet<String> = seen.iter().take(max).cloned().collect();
    let mut labels: Vec<String> = Vec::new();
    for n in seen {
        let l = if keep.contains(&n) {
            n
        } else {
            OTHER_PROJECT.to_string()
        };
        if !labels.contains(&l) {
            labels.push(l);
        }
    }
    let label = move |n: &str| {
        let n = rename(n);
        if keep.contains(&n) {
            n
        } else {
            OTHER_PROJECT.to_string()
        }
    };
    (labels, label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Level;

    #[test]
    fn a_duration_lands_in_the_first_bucket_that_holds_it() {
        let mut d = Durations::default();
        d.observe(1.0, 10.0);
        d.observe(4.0, 30.0);
        d.observe(9000.0, 20.0);
        assert_eq!(d.buckets[0], 1);
        assert_eq!(d.buckets[1], 1);
        assert_eq!(d.buckets[BUILD_DURATION_BUCKETS.len()], 1);
        assert_eq!((d.count, d.sum, d.last_finished), (3, 9005.0, 30.0));
        assert_eq!(d.cumulative()[..2], [1, 2]);
        assert_eq!(d.cumulative().last(), Some(&2));
    }

    #[test]
    fn projects_beyond_the_cap_are_added_up_as_other() {
        let mut t = Tally::default();
        for (p, at) in [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0), ("a", 5.0)] {
            t.observe_build("", p, BuildResult::Success, Reason::None, 5.0, at);
        }
        let c = t.capped(2, 64, "me");
        assert_eq!(c.projects, ["a", "b", "other"]);
        let key = |p: &str| (p.to_string(), BuildResult::Success, Reason::None);
        assert_eq!(c.builds.get(&key("a")), Some(&2));
        assert_eq!(c.builds.get(&key("other")), Some(&2));
        assert_eq!(c.builds.get(&key("c")), None);
        let other = &c.durations[&("other".to_string(), BuildResult::Success)];
        assert_eq!((other.count, other.last_finished), (2, 4.0));
    }

    #[test]
    fn builds_count_for_the_host_that_ran_them_this_host_by_its_name_and_the_rest_as_other() {
        let mut t = Tally::default();
        let no_space = Reason::NoSpace;
        for h in ["", "ci-7", "ci-8", "ci-9", "ci-7"] {
            t.observe_build(h, "p", BuildResult::Failure, no_space, 5.0, 1.0);
        }
        // Recorded for this host without a name, and under its name by another's bilge: one host.
        t.observe_build("ci-1", "p", BuildResult::Failure, no_space, 5.0, 1.0);
        let c = t.capped(50, 3, "ci-1");
        assert_eq!(c.hosts, ["ci-1", "ci-7", "ci-8", "other"]);
        let key = |h: &str| (h.to_string(), BuildResult::Failure, no_space);
        assert_eq!(c.host_builds.get(&key("ci-1")), Some(&2));
        assert_eq!(c.host_builds.get(&key("ci-7")), Some(&2));
        assert_eq!(c.host_builds.get(&key("other")), Some(&1));
        assert_eq!(c.host_builds.get(&key("")), None);
        // The per-project totals are the same builds.
        assert_eq!(
            c.builds[&("p".to_string(), BuildResult::Failure, no_space)],
            6
        );
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_newest_times() {
        let mut a = Tally::default();
        a.observe_cleanup(
            Trigger::Cli,
            CleanupResult::Success,
            1,
            &[(Action::Prune(Level::BuildCache), 10)],
            100.0,
        );
        let mut b = Tally::default();
        b.observe_cleanup(
            Trigger::Cli,
            CleanupResult::Success,
            1,
            &[(Action::Prune(Level::BuildCache), 5)],
            50.0,
        );
        b.observe_cleanup(Trigger::Webhook, CleanupResult::Skipped, 7, &[], 900.0);
        b.observe_cleanup(
            Trigger::Webhook,
            CleanupResult::Running,
            1,
            &[(Action::Prune(Level::BuildCache), 99)],
            900.0,
        );
        a.merge(&b);
        assert_eq!(a.cleanup_runs[&(Trigger::Cli, CleanupResult::Success)], 2);
        assert_eq!(
            a.cleanup_runs[&(Trigger::Webhook, CleanupResult::Skipped)],
            7
        );
        assert_eq!(a.cleanup_bytes[&Action::Prune(Level::BuildCache)], 15);
        // A skipped run pruned nothing: it moves no last-run time; a running one counts nothing.
        assert_eq!(a.cleanup_last_run, Some(100.0));
        assert!(
            !a.cleanup_runs
                .contains_key(&(Trigger::Webhook, CleanupResult::Running))
        );
    }
}
