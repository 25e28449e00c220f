//! Cleanup levels and the host's cleanup policy. Pure: no I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::format::FreeTarget;

/// One cleanup level. Each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Build cache records not in use.
    BuildCache,
    /// Stopped (exited, created, dead) containers.
    StoppedContainers,
    /// Untagged images no container uses.
    DanglingImages,
    /// Every image no container uses.
    UnusedImages,
    /// Volumes no container uses (only where `allow_volumes`).
    UnusedVolumes,
}

impl Level {
    /// Every level, in the order they run.
    pub const ALL: [Level; 5] = [
        Level::BuildCache,
        Level::StoppedContainers,
        Level::DanglingImages,
        Level::UnusedImages,
        Level::UnusedVolumes,
    ];
    /// The `standard` preset: the first three levels.
    pub const STANDARD: Level = Level::DanglingImages;
    /// The `aggressive` preset: all five levels.
    pub const AGGRESSIVE: Level = Level::UnusedVolumes;

    /// The name used in flags, labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::BuildCache => "build_cache",
            Level::StoppedContainers => "stopped_containers",
            Level::DanglingImages => "dangling_images",
            Level::UnusedImages => "unused_images",
            Level::UnusedVolumes => "unused_volumes",
        }
    }

    /// Parses a level name or a preset (`standard`, `aggressive`) into the highest level it runs.
    pub fn parse(s: &str) -> Result<Level, String> {
        match s.trim() {
            "build_cache" => Ok(Level::BuildCache),
            "stopped_containers" => Ok(Level::StoppedContainers),
            "dangling_images" | "standard" => Ok(Level::DanglingImages),
            "unused_images" => Ok(Level::UnusedImages),
            "unused_volumes" | "aggressive" => Ok(Level::UnusedVolumes),
            other => Err(format!(
                "{other:?} is not a cleanup level (build_cache, stopped_containers, dangling_images, unused_images, unused_volumes, standard, aggressive)"
            )),
        }
    }

    /// The levels up to and including `self`, in order.
    pub fn up_to(self) -> impl Iterator<Item = Level> {
        Level::ALL.into_iter().filter(move |l| *l <= self)
    }

    /// True for levels beyond `standard`, which ask for confirmation on a terminal.
    pub fn is_aggressive(self) -> bool {
        self > Level::STANDARD
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host's cleanup policy: what may be removed, how much, how often.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    /// Only objects older than this are removed.
    pub until: Duration,
    /// Labels (`key` or `key=value`) that protect an object from every level.
    pub protect_labels: Vec<String>,
    /// The highest level any request may reach on this host.
    pub max_level: Level,
    /// Whether `unused_volumes` may run at all.
    pub allow_volumes: bool,
    /// Stop once the data root has this much available.
    pub target_free: FreeTarget,
    /// Least time between the start of two runs from the webhook or watermarks.
    pub cooldown: Duration,
    /// Start the standard level when available space falls under this.
    pub low_watermark: Option<FreeTarget>,
    /// With a low watermark: clean until available space is above this.
    pub high_watermark: Option<FreeTarget>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            until: Duration::from_secs(24 * 3600),
            protect_labels: vec!["bilge.keep=true".into()],
            max_level: Level::STANDARD,
            allow_volumes: false,
            target_free: FreeTarget::Percent(15.0),
            cooldown: Duration::from_secs(300),
            low_watermark: None,
            high_watermark: None,
        }
    }
}

impl Policy {
    /// The highest level a request for `wanted` may run on this host.
    pub fn cap(&self, wanted: Level) -> Level {
        let mut top = wanted.min(self.max_level);
        if top == Level::UnusedVolumes && !self.allow_volumes {
            top = Level::UnusedImages;
        }
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_name_the_highest_level_they_run() {
        assert_eq!(Level::parse("standard"), Ok(Level::DanglingImages));
        assert_eq!(Level::parse("aggressive"), Ok(Level::UnusedVolumes));
        assert_eq!(Level::STANDARD.up_to().count(), 3);
        assert!(Level::parse("everything").is_err());
    }

    #[test]
    fn a_request_never_goes_beyond_the_hosts_policy() {
        let p = Policy::default();
        assert_eq!(p.cap(Level::UnusedVolumes), Level::DanglingImages);
        let p = Policy {
            max_level: Level::UnusedVolumes,
            ..Policy::default()
        };
        assert_eq!(p.cap(Level::UnusedVolumes), Level::UnusedImages);
        let p = Policy {
            allow_volumes: true,
            ..p
        };
        assert_eq!(p.cap(Level::UnusedVolumes), Level::UnusedVolumes);
    }
}
