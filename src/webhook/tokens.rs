//! The API tokens of the webhook and the build API (`--webhook.token-file`), and the check of a
//! request's credentials against them.
//!
//! - The file holds one token a line; blank lines and the whitespace around each line are
//!   ignored, so the old and the new token can both be in force during a rotation. It is
//!   re-read when it changes ([`Watched`]); a file that turns empty, unreadable or invalid keeps
//!   the last good tokens in force and is logged once.
//! - A request presents a token as `Authorization: Bearer <token>`, or as the password of basic
//!   auth (the user name is ignored, as Alertmanager's `basic_auth` sends it).
//! - The check is constant-time in the tokens' content and length: the presented token and every
//!   token of the file are compared as SHA-256 digests, each with `subtle`, and the results are
//!   combined without an early exit, so timing does not tell whether, or which, token matched.
//!   Only the digests are kept in memory.
//! - A relay forwards the credential the delivery presented ([`Credential`]), never another
//!   token of the file: see [`super::relay`].

use ring::digest::{SHA256, digest};
use subtle::{Choice, ConstantTimeEq};

use super::watched::Watched;

/// Largest token file read, in bytes (a few tokens fit many times over).
pub const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// The flag that names the token file.
pub const FLAG: &str = "--webhook.token-file";

/// The token file, re-read when it changes.
pub type Tokens = Watched<TokenSet>;

/// Loads the token file at start-up; the error says what is wrong with it.
pub fn load(path: &std::path::Path) -> Result<Tokens, String> {
    Watched::load(path, FLAG, MAX_TOKEN_FILE, parse)
}

/// The tokens in force, as SHA-256 digests.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// One digest per token, in the file's order.
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("tokens", &self.digests.len())
            .finish()
    }
}

/// SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// Parses a token file: one token a line, blank lines and surrounding whitespace ignored, at
/// least one token, none with whitespace or control characters inside.
pub fn parse(text: &str) -> Result<TokenSet, String> {
    let mut digests = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let token = line.trim();
        if token.is_empty() {
            continue;
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "line {}: a token cannot hold spaces or control characters (one token a line)",
                n + 1
            ));
        }
        digests.push(sha256(token.as_bytes()));
    }
    if digests.is_empty() {
        return Err("the file holds no token (one token a line)".into());
    }
    Ok(TokenSet { digests })
}

impl TokenSet {
    /// Exactly these tokens (for tests).
    pub fn of(tokens: &[&str]) -> TokenSet {
        TokenSet {
            digests: tokens.iter().map(|t| sha256(t.as_bytes())).collect(),
        }
    }

    /// How many tokens are in force.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// True when no token is in force (never, for a set that [`parse`] made).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// True when `credential` is one of the tokens. Every token is compared, in constant time.
    pub fn accepts(&self, credential: &Credential) -> bool {
        let given = sha256(&credential.0);
        let mut any = Choice::from(0u8);
        for d in &self.digests {
            any |= d.ct_eq(&given);
        }
        bool::from(any)
    }
}

/// The token a request presented. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential(Vec<u8>);

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(…)")
    }
}

impl Credential {
    /// A credential presenting `token` (for tests and relays).
    pub fn new(token: &str) -> Credential {
        Credential(token.as_bytes().to_vec())
    }

    /// The token's bytes, to present it again.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The token in an `Authorization` header value: a bearer token, or the password of basic auth.
/// `None` for no header, another scheme, or a malformed value.
pub fn presented(header: Option<&str>) -> Option<Credential> {
    let h = header?.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| Credential(rest.as_bytes().to_vec()));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let password = &decoded[colon + 1..];
    (!password.is_empty()).then(|| Credential(password.to_vec()))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    /// True when the header carries one of `tokens`.
    fn authorized(header: Option<&str>, tokens: &[&str]) -> bool {
        presented(header).is_some_and(|c| TokenSet::of(tokens).accepts(&c))
    }

    #[test]
    fn bearer_and_basic_auth_carry_the_token() {
        assert!(authorized(Some("Bearer s3cret"), &["s3cret"]));
        assert!(authorized(Some("bearer s3cret"), &["s3cret"]));
        assert!(!authorized(Some("Bearer s3cre"), &["s3cret"]));
        assert!(!authorized(Some("Bearer s3crett"), &["s3cret"]));
        assert!(!authorized(Some("Bearer "), &["s3cret"]));
        assert!(!authorized(None, &["s3cret"]));
        let basic = base64::engine::general_purpose::STANDARD.encode("alertmanager:s3cret");
        assert!(authorized(Some(&format!("Basic {basic}")), &["s3cret"]));
        let wrong = base64::engine::general_purpose::STANDARD.encode("s3cret:nope");
        assert!(!authorized(Some(&format!("Basic {wrong}")), &["s3cret"]));
        assert!(!authorized(Some("Basic !!!"), &["s3cret"]));
        assert!(!authorized(Some("Token s3cret"), &["s3cret"]));
    }

    #[test]
    fn any_token_of_the_file_is_accepted_and_no_other() {
        let set = parse("  old-token  \n\n\tnew-token\n").unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.accepts(&Credential::new("old-token")));
        assert!(set.accepts(&Credential::new("new-token")));
        assert!(!set.accepts(&Credential::new("old-tokennew-token")));
        assert!(!set.accepts(&Credential::new("")));
        assert!(!set.accepts(&Credential::new("new-toke")));
    }

    #[test]
    fn a_file_without_a_token_or_with_two_on_a_line_is_refused() {
        assert!(parse("").unwrap_err().contains("no token"));
        assert!(parse("\n  \n").unwrap_err().contains("no token"));
        let e = parse("one\ntwo three\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }

    #[test]
    fn neither_a_token_set_nor_a_credential_shows_a_token_when_printed() {
        let set = parse("s3cret\n").unwrap();
        assert_eq!(format!("{set:?}"), "TokenSet { tokens: 1 }");
        assert!(!format!("{:?}", Credential::new("s3cret")).contains("s3cret"));
    }
}
