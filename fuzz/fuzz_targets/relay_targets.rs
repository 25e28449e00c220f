//! Fuzzes the relay's fleet list, `bilge::webhook::targets::{parse_json, parse_yaml}`: the
//! Prometheus `file_sd` file that `--webhook.relay-targets` names, re-read whenever it changes.
//! It decides where a relay (which carries the fleet's token) may go, so its promise is a
//! security one.
//!
//! The input is read as both syntaxes. Promises checked on every list either accepts, besides
//! "no panic": every member's relay URL is `http` or `https` to a plain host (with a port when
//! one was listed) and the path `/api/v1/alerts`, with no user, password, query or fragment
//! that a file could smuggle in; every listed instance name is trimmed, lower-cased and
//! non-empty, and looking it up (in any letter case) finds its member.

#![no_main]

use bilge::webhook::targets::{Scheme, Target, Targets, parse_json, parse_yaml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = parse_json(text) {
        check(&t);
    }
    if let Ok(t) = parse_yaml(text) {
        check(&t);
    }
});

/// Asserts the promises on one accepted list.
fn check(targets: &Targets) {
    assert_eq!(targets.iter().count(), targets.len());
    for (instance, target) in targets.iter() {
        assert!(!instance.is_empty(), "an empty instance name");
        assert_eq!(
            instance,
            instance.trim().to_ascii_lowercase(),
            "{instance:?}"
        );
        assert_eq!(targets.get(instance), Some(target), "{instance:?}");
        let upper = instance.to_ascii_uppercase();
        assert_eq!(targets.get(&upper), Some(target), "{upper:?}");
        plain(target);
    }
}

/// Asserts that `target`'s relay URL goes to a plain host and the webhook's path only.
fn plain(target: &Target) {
    let url = target.url();
    let parsed = match url::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => panic!("{target:?} makes the relay URL {url:?}, which is not a URL: {e}"),
    };
    let scheme = match target.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    assert_eq!(parsed.scheme(), scheme, "{url}");
    assert!(
        parsed.host_str().is_some_and(|h| !h.is_empty()),
        "{url} names no host"
    );
    assert_eq!(parsed.username(), "", "{url} carries a user");
    assert_eq!(parsed.password(), None, "{url} carries a password");
    assert_eq!(parsed.path(), "/api/v1/alerts", "{url} goes elsewhere");
    assert_eq!(parsed.query(), None, "{url} carries a query");
    assert_eq!(parsed.fragment(), None, "{url} carries a fragment");
}
