//! Basic auth for the web config's `basic_auth_users`: the `Authorization: Basic` header checked
//! against bcrypt hashes, as exporter-toolkit does.
//!
//! bcrypt is slow by design (tens of milliseconds at cost 10), so a success is remembered for
//! [`CACHE_TTL`] under an HMAC, with a key made at start, of the user, the stored hash and the
//! password that worked: a scrape every 15 s pays bcrypt about once a minute, a different password
//! (or a changed hash) never meets a remembered entry, and the memory holds no password. Failures
//! are never remembered. An unknown user costs one bcrypt run against a decoy hash, so timing does
//! not tell which users exist. At most [`MAX_VERIFYING`] bcrypt runs go at once, off the async
//! threads: a flood of wrong passwords queues there instead of stalling every other request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::hmac;

use crate::sync::lock;

/// How long a verified user and password are taken without bcrypt.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// Most remembered successes (a few users, each with one password, fit many times over).
const CACHE_MAX: usize = 256;
/// Most bcrypt verifications running at once.
pub const MAX_VERIFYING: usize = 2;
/// The cost of the decoy hash an unknown user is checked against (htpasswd's usual cost).
const DECOY_COST: u32 = 10;

/// User name and password from an `Authorization: Basic …` header value.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Checks basic-auth credentials against the configured users; long-lived, so its memory of
/// successes outlives reloads of the web config.
#[derive(Debug)]
pub struct Authenticator {
    /// Keys the cache entries; made at start and never leaves the process.
    key: HmacKey,
    /// Tags of verified (user, hash, password) triples and when they were verified.
    cache: Mutex<HashMap<[u8; 32], Instant>>,
    /// Bounds the bcrypt runs in flight.
    permits: tokio::sync::Semaphore,
}

/// The hash an unknown user's password is checked against, made on first use (off the async
/// threads, like every bcrypt run).
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        // Hashing fails only for a cost outside 4..=31; DECOY_COST is inside.
        bcrypt::hash("bilge decoy password", DECOY_COST).unwrap_or_default()
    })
}

/// The HMAC key, kept out of `Debug` output.
struct HmacKey(hmac::Key);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new()
    }
}

impl Authenticator {
    /// A fresh authenticator with a random cache key.
    pub fn new() -> Authenticator {
        let rng = ring::rand::SystemRandom::new();
        // Generating a key fails only when the OS has no randomness source at all; a key from
        // the clock is still unknown to clients, and the tag still covers the whole password.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
            let seed = format!("{:?}{:?}", Instant::now(), std::time::SystemTime::now());
            hmac::Key::new(hmac::HMAC_SHA256, seed.as_bytes())
        });
        Authenticator {
            key: HmacKey(key),
            cache: Mutex::new(HashMap::new()),
            permits: tokio::sync::Semaphore::new(MAX_VERIFYING),
        }
    }

    /// True when `header` (the `Authorization` value) names one of `users` with its password.
    pub async fn allows(&self, users: &BTreeMap<String, String>, header: Option<&str>) -> bool {
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return false;
        };
        let hash = users.get(&user).cloned();
        let tag = hash.as_deref().map(|h| self.tag(&user, h, &password));
        if let Some(t) = &tag
            && self.remembered(t)
        {
            return true;
        }
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let verified = tokio::task::spawn_blocking(move || match hash {
            Some(h) => bcrypt::verify(password.as_bytes(), &h).unwrap_or(false),
            None => {
                // The answer is false whatever the decoy says; the run only costs the same time.
                let _ = bcrypt::verify(password.as_bytes(), decoy());
                false
            }
        })
        .await
        .unwrap_or(false);
        if verified && let Some(t) = tag {
            self.remember(t);
        }
        verified
    }

    /// The cache tag of one (user, hash, password) triple.
    fn tag(&self, user: &str, hash: &str, password: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key.0);
        for part in [user, hash, password] {
            // Length-prefixed, so no two different triples feed the same bytes.
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether `tag` was verified within [`CACHE_TTL`].
    fn remembered(&self, tag: &[u8; 32]) -> bool {
        lock(&self.cache)
            .get(tag)
            .is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    /// Remembers a verified `tag`, dropping expired entries (or all, when still full).
    fn remember(&self, tag: [u8; 32]) {
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, at| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(tag, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `user:password` as an `Authorization` header value.
    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn users() -> BTreeMap<String, String> {
        BTreeMap::from([(
            "prometheus".to_string(),
            bcrypt::hash("right", 4).unwrap_or_default(),
        )])
    }

    #[test]
    fn basic_credentials_are_read_from_the_header() {
        assert_eq!(
            basic_credentials(&basic("a", "b:c")),
            Some(("a".into(), "b:c".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("nocolon");
        assert_eq!(basic_credentials(&format!("Basic {no_colon}")), None);
    }

    #[tokio::test]
    async fn only_a_configured_user_with_its_password_gets_in() {
        let auth = Authenticator::new();
        let users = users();
        assert!(
            auth.allows(&users, Some(&basic("prometheus", "right")))
                .await
        );
        assert!(
            !auth
                .allows(&users, Some(&basic("prometheus", "wrong")))
                .await
        );
        assert!(!auth.allows(&users, Some(&basic("someone", "right"))).await);
        assert!(!auth.allows(&users, None).await);
        assert!(
            !auth
                .allows(&BTreeMap::new(), Some(&basic("prometheus", "right")))
                .await
        );
    }

    #[tokio::test]
    async fn a_remembered_success_never_lets_a_wrong_password_in() {
        let auth = Authenticator::new();
        let users = users();
        assert!(
            auth.allows(&users, Some(&basic("prometheus", "right")))
                .await
        );
        assert_eq!(lock(&auth.cache).len(), 1);
        for wrong in ["wrong", "righ", "right ", "", "RIGHT"] {
            assert!(
                !auth.allows(&users, Some(&basic("prometheus", wrong))).await,
                "{wrong:?} got in after the right password was remembered"
            );
        }
        // Failures are not remembered; the success still is.
        assert_eq!(lock(&auth.cache).len(), 1);
        assert!(
            auth.allows(&users, Some(&basic("prometheus", "right")))
                .await
        );
    }

    #[tokio::test]
    async fn a_changed_hash_is_verified_again() {
        let auth = Authenticator::new();
        assert!(
            auth.allows(&users(), Some(&basic("prometheus", "right")))
                .await
        );
        let changed = BTreeMap::from([(
            "prometheus".to_string(),
            bcrypt::hash("new", 4).unwrap_or_default(),
        )]);
        assert!(
            !auth
                .allows(&changed, Some(&basic("prometheus", "right")))
                .await
        );
        assert!(
            auth.allows(&changed, Some(&basic("prometheus", "new")))
                .await
        );
    }

    #[tokio::test]
    async fn a_remembered_success_skips_bcrypt() {
        let auth = Authenticator::new();
        let users = BTreeMap::from([("p".to_string(), bcrypt::hash("pw", 10).unwrap_or_default())]);
        let first = Instant::now();
        assert!(auth.allows(&users, Some(&basic("p", "pw"))).await);
        let first = first.elapsed();
        let again = Instant::now();
        assert!(auth.allows(&users, Some(&basic("p", "pw"))).await);
        let again = again.elapsed();
        println!("bcrypt cost 10: first check {first:?}, remembered {again:?}");
        assert!(
            again * 10 < first,
            "the second check took {again:?}, the first (bcrypt) {first:?}"
        );
    }
}
