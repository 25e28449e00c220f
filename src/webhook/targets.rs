//! The relay's target list (`--webhook.relay-targets`): the fleet members an alert may be
//! forwarded to, in Prometheus's `file_sd` format, so operators can point Prometheus and bilge at
//! the same file.
//!
//! - The file is a list of groups `{targets: [host:port, …], labels: {…}}`, JSON when its name
//!   ends in `.json`, YAML when it ends in `.yml` or `.yaml` (as `file_sd_configs` requires).
//!   Unknown keys of a group are ignored, as Prometheus ignores them.
//! - An alert's `instance` names a member when it equals one of the targets (case-insensitive),
//!   or the group's `instance` label, which Prometheus would have written instead. A target
//!   written without a port also answers to `host:80` / `host:443`, the instance Prometheus 2
//!   writes for it.
//! - The relay URL is built from the listed target only, never from the alert:
//!   `<__scheme__>://<target>/api/v1/alerts`, `__scheme__` from the group's labels (`http` or
//!   `https`, default `http`); `__metrics_path__` and the other labels do not matter here.
//! - A file is taken whole or not at all: a target that is not a plain `host[:port]`, a scheme
//!   other than http or https, or one instance listed at two addresses makes the file invalid, and
//!   the error says where. [`Watched`] keeps the last good list when a changed file is invalid.
//!
//! Pure apart from [`load`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;

use super::watched::Watched;

/// Largest targets file read, in bytes.
pub const MAX_TARGETS_FILE: u64 = 4 * 1024 * 1024;

/// The flag that names the file.
pub const FLAG: &str = "--webhook.relay-targets";

/// The targets file, re-read when it changes.
pub type TargetsFile = Watched<Targets>;

/// How a target is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Plain HTTP (Prometheus's default).
    Http,
    /// HTTPS, the target verified against `--webhook.relay-ca-file` or the system's roots.
    Https,
}

impl Scheme {
    /// The URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a target without one is reached on.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// Reads a `__scheme__` label value.
    fn parse(s: &str) -> Result<Scheme, String> {
        match s {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            other => Err(format!("__scheme__ {other:?} is neither http nor https")),
        }
    }
}

/// One fleet member a relay may go to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// From the group's `__scheme__` label.
    pub scheme: Scheme,
    /// `host[:port]` as listed, lower-cased.
    pub address: String,
}

impl Target {
    /// The member's webhook URL.
    pub fn url(&self) -> String {
        format!("{}://{}/api/v1/alerts", self.scheme.as_str(), self.address)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.address)
    }
}

/// The fleet members, by the `instance` an alert would carry for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// Lower-cased instance → member.
    by_instance: HashMap<String, Target>,
}

impl Targets {
    /// The member an alert's `instance` names, if it is listed.
    pub fn get(&self, instance: &str) -> Option<&Target> {
        self.by_instance.get(&instance.trim().to_ascii_lowercase())
    }

    /// How many instance names are listed.
    pub fn len(&self) -> usize {
        self.by_instance.len()
    }

    /// True when nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.by_instance.is_empty()
    }

    /// Every listed instance name (lower-cased) with its member, in no particular order: for
    /// checks that look at the whole list (the `relay_targets` fuzz target).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.by_instance.iter().map(|(i, t)| (i.as_str(), t))
    }

    /// Exactly these `(target, scheme)` pairs (for tests).
    pub fn of(members: &[(&str, Scheme)]) -> Targets {
        let mut t = Targets::default();
        for (address, scheme) in members {
            let target = Target {
                scheme: *scheme,
                address: address.to_ascii_lowercase(),
            };
            t.by_instance.insert(target.address.clone(), target);
        }
        t
    }

    /// Lists `target` under `instance`; refuses a second, different address for one instance.
    fn insert(&mut self, instance: String, target: Target) -> Result<(), String> {
        match self.by_instance.get(&instance) {
            Some(had) if *had != target => Err(format!(
                "instance {instance} is listed twice, as {had} and as {target}; which one should alerts for it go to?"
            )),
            _ => {
                self.by_instance.insert(instance, target);
                Ok(())
            }
        }
    }
}

/// One `file_sd` group as written. Unknown keys are ignored, as Prometheus does.
#[derive(Debug, Deserialize)]
struct Group {
    /// `host:port` entries.
    #[serde(default)]
    targets: Vec<String>,
    /// Labels; `__scheme__` and `instance` matter here.
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The syntax of a targets file, from its name as Prometheus decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `*.json`.
    Json,
    /// `*.yml`, `*.yaml`.
    Yaml,
}

impl Format {
    /// The format of `path`, by its extension.
    pub fn of(path: &Path) -> Result<Format, String> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Ok(Format::Json),
            Some("yml" | "yaml") => Ok(Format::Yaml),
            _ => Err(format!(
                "{} must end in .json, .yml or .yaml (the names Prometheus's file_sd_configs reads)",
                path.display()
            )),
        }
    }
}

/// Loads the targets file at start-up; the error says what is wrong with it.
pub fn load(path: &Path) -> Result<TargetsFile, String> {
    let parse = match Format::of(path)? {
        Format::Json => parse_json,
        Format::Yaml => parse_yaml,
    };
    Watched::load(path, FLAG, MAX_TARGETS_FILE, parse)
}

/// Parses a `file_sd` file in JSON.
pub fn parse_json(text: &str) -> Result<Targets, String> {
    let groups: Vec<Group> = serde_json::from_str(text)
        .map_err(|e| format!("not a file_sd list of {{targets, labels}} groups: {e}"))?;
    from_groups(groups)
}

/// Parses a `file_sd` file in YAML (JSON is YAML too). An empty file lists nobody.
pub fn parse_yaml(text: &str) -> Result<Targets, String> {
    if text.trim().is_empty() {
        return Ok(Targets::default());
    }
    let groups: Option<Vec<Group>> = serde_yaml_ng::from_str(text)
        .map_err(|e| format!("not a file_sd list of {{targets, labels}} groups: {e}"))?;
    from_groups(groups.unwrap_or_default())
}

/// The members of `groups`, checked.
fn from_groups(groups: Vec<Group>) -> Result<Targets, String> {
    let mut out = Targets::default();
    for (n, g) in groups.into_iter().enumerate() {
        let at = |e: String| format!("group {}: {e}", n + 1);
        let scheme = match g.labels.get("__scheme__") {
            Some(s) => Scheme::parse(s).map_err(at)?,
            None => Scheme::Http,
        };
        let instance = g
            .labels
            .get("instance")
            .map(|i| i.trim().to_ascii_lowercase())
            .filter(|i| !i.is_empty());
        if instance.is_some() && g.targets.len() > 1 {
            return Err(at(format!(
                "the instance label names {} targets at once; give each target its own group",
                g.targets.len()
            )));
        }
        for t in &g.targets {
            let (address, has_port) = check_target(t).map_err(at)?;
            let target = Target { scheme, address };
            match &instance {
                Some(i) => out.insert(i.clone(), target).map_err(at)?,
                None => {
                    if !has_port {
                        let with_port = format!("{}:{}", target.address, scheme.default_port());
                        out.insert(with_port, target.clone()).map_err(at)?;
                    }
                    out.insert(target.address.clone(), target).map_err(at)?;
                }
            }
        }
    }
    Ok(out)
}

/// Checks that `t` is a plain `host`, `host:port` or `[v6]:port`: nothing that could add a user,
/// a path or a query to the URL built from it. Returns it lower-cased, and whether it has a port.
fn check_target(t: &str) -> Result<(String, bool), String> {
    let bad = |why: &str| format!("target {t:?} {why}; write host:port");
    if t.is_empty() {
        return Err(bad("is empty"));
    }
    if t.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '/' | '@' | '?' | '#' | '\\' | '%')
    }) {
        return Err(bad("is not a plain address"));
    }
    let has_port = match t.rsplit_once(':') {
        // `[::1]` alone has colons only inside its brackets.
        Some((host, port)) if !port.ends_with(']') => {
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad("has no valid port"));
            }
            true
        }
        _ => false,
    };
    let url = reqwest::Url::parse(&format!("http://{t}/"))
        .map_err(|e| bad(&format!("is not an address ({e})")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("names no host"));
    }
    Ok((t.to_ascii_lowercase(), has_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The URL an alert for `instance` would be relayed to, if any.
    fn url(t: &Targets, instance: &str) -> Option<String> {
        t.get(instance).map(Target::url)
    }

    #[test]
    fn a_json_file_lists_its_targets_with_the_scheme_of_their_group() {
        let t = parse_json(
            r#"[
              {"targets": ["web1:9830", "Web2:9830"], "labels": {"job": "bilge"}},
              {"targets": ["[::1]:9830"], "labels": {"__scheme__": "https", "__metrics_path__": "/m"}}
            ]"#,
        )
        .unwrap();
        assert_eq!(
            url(&t, "web1:9830").as_deref(),
            Some("http://web1:9830/api/v1/alerts")
        );
        assert_eq!(
            url(&t, "WEB2:9830").as_deref(),
            Some("http://web2:9830/api/v1/alerts")
        );
        assert_eq!(
            url(&t, "[::1]:9830").as_deref(),
            Some("https://[::1]:9830/api/v1/alerts")
        );
        assert_eq!(url(&t, "web3:9830"), None);
        assert_eq!(url(&t, "web1:9831"), None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn a_yaml_file_reads_the_same_as_its_json() {
        let yaml = parse_yaml(
            "# the fleet\n- targets: [web1:9830]\n  labels:\n    __scheme__: https\n- targets:\n    - web2:9830\n",
        )
        .unwrap();
        let json = parse_json(
            r#"[{"targets": ["web1:9830"], "labels": {"__scheme__": "https"}}, {"targets": ["web2:9830"]}]"#,
        )
        .unwrap();
        assert_eq!(yaml, json);
        assert_eq!(
            url(&yaml, "web1:9830").as_deref(),
            Some("https://web1:9830/api/v1/alerts")
        );
        assert_eq!(parse_yaml("").unwrap(), Targets::default());
        assert_eq!(parse_yaml("[]").unwrap(), Targets::default());
    }

    #[test]
    fn a_group_instance_label_names_its_one_target() {
        let t = parse_yaml(
            "- targets: [10.0.0.7:9830]\n  labels: {instance: ci-7, __scheme__: https}\n",
        )
        .unwrap();
        assert_eq!(
            url(&t, "ci-7").as_deref(),
            Some("https://10.0.0.7:9830/api/v1/alerts")
        );
        assert_eq!(url(&t, "10.0.0.7:9830"), None);
        let e = parse_yaml("- targets: [a:1, b:1]\n  labels: {instance: ci}\n").unwrap_err();
        assert!(e.contains("group 1") && e.contains("its own group"), "{e}");
    }

    #[test]
    fn a_target_without_a_port_also_answers_to_the_port_prometheus_2_adds() {
        let t = parse_json(
            r#"[{"targets": ["web1"]}, {"targets": ["web2"], "labels": {"__scheme__": "https"}}]"#,
        )
        .unwrap();
        for (instance, want) in [
            ("web1", "http://web1/api/v1/alerts"),
            ("web1:80", "http://web1/api/v1/alerts"),
            ("web2:443", "https://web2/api/v1/alerts"),
        ] {
            assert_eq!(url(&t, instance).as_deref(), Some(want), "{instance}");
        }
        assert_eq!(url(&t, "web2:80"), None);
    }

    #[test]
    fn a_file_with_a_bad_scheme_or_address_is_refused_and_says_where() {
        for (text, words) in [
            (
                r#"[{"targets": ["a:1"], "labels": {"__scheme__": "ftp"}}]"#,
                "group 1: __scheme__ \"ftp\"",
            ),
            (
                r#"[{"targets": ["a:1"]}, {"targets": ["user@b:1"]}]"#,
                "group 2: target \"user@b:1\"",
            ),
            (r#"[{"targets": ["b:1/x"]}]"#, "not a plain address"),
            (r#"[{"targets": ["b:99999"]}]"#, "no valid port"),
            (r#"[{"targets": [":9830"]}]"#, "target \":9830\""),
            (r#"[{"targets": [""]}]"#, "is empty"),
            (
                r#"[{"targets": ["a:1"]}, {"targets": ["A:1"], "labels": {"__scheme__": "https"}}]"#,
                "listed twice",
            ),
            (r#"{"targets": ["a:1"]}"#, "not a file_sd list"),
            (r#"[{"targets": "a:1"}]"#, "not a file_sd list"),
            ("[{", "not a file_sd list"),
        ] {
            let e = parse_json(text).unwrap_err();
            assert!(e.contains(words), "{text}: {e}");
        }
        let e = parse_yaml("- targets: [a:1]\n  labels: [x]\n").unwrap_err();
        assert!(e.contains("not a file_sd list"), "{e}");
    }

    #[test]
    fn the_same_target_in_two_groups_with_one_scheme_is_fine() {
        let t =
            parse_json(r#"[{"targets": ["a:1"]}, {"targets": ["a:1"], "labels": {"env": "x"}}]"#)
                .unwrap();
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_format_comes_from_the_file_name_as_in_prometheus() {
        assert_eq!(Format::of(Path::new("/etc/x/fleet.json")), Ok(Format::Json));
        assert_eq!(Format::of(Path::new("fleet.yml")), Ok(Format::Yaml));
        assert_eq!(Format::of(Path::new("fleet.yaml")), Ok(Format::Yaml));
        let e = Format::of(Path::new("fleet.txt")).unwrap_err();
        assert!(e.contains(".json, .yml or .yaml"), "{e}");
    }
}
