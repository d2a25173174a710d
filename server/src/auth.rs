//! Access tokens and scopes (ARCHITECTURE.md §8). Tokens live in the settings file as sha256
//! hashes; a request presents the token itself (`Authorization: Bearer`, `X-Config-Token`,
//! or the password of HTTP Basic for Spring clients), which is hashed and compared with
//! every stored hash in constant time.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use crate::errors::TokenError;
use crate::resolve::catalog::Access;

/// A token as written in the settings file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it, for logs and status.
    pub name: String,
    /// Hex sha256 of the token.
    pub sha256: String,
    /// `read:<service glob>/<env glob>` or `admin`.
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Read { service: String, env: String },
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Result<Scope, String> {
        if s == "admin" {
            return Ok(Scope::Admin);
        }
        let pattern = s
            .strip_prefix("read:")
            .ok_or_else(|| format!("scope `{s}` must be `admin` or `read:<service>/<env>`"))?;
        let (service, env) = pattern.split_once('/').ok_or_else(|| {
            format!("scope `{s}` needs `<service glob>/<env glob>`, e.g. `read:orders/*`")
        })?;
        if service.is_empty() || env.is_empty() || env.contains('/') {
            return Err(format!(
                "scope `{s}` needs `<service glob>/<env glob>`, e.g. `read:orders/*`"
            ));
        }
        Ok(Scope::Read {
            service: service.to_string(),
            env: env.to_string(),
        })
    }
}

/// `*` matches any run of characters, `?` exactly one.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    // Over bytes, without allocating: it runs on every request. Names are ASCII (see
    // `names`), so a byte is a character wherever a name can match.
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

#[derive(Debug, Clone)]
struct Token {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
}

/// Who made a request and what they may see.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Token name; `None` when the server runs open (no tokens configured).
    pub name: Option<String>,
    scopes: Vec<Scope>,
    open: bool,
}

impl Principal {
    /// The principal of an open server: may do everything.
    pub fn open() -> Principal {
        Principal {
            name: None,
            scopes: Vec::new(),
            open: true,
        }
    }

    /// The token's name for messages, `anonymous` on an open server.
    pub fn who(&self) -> &str {
        self.name.as_deref().unwrap_or("anonymous")
    }

    /// May this principal administer (encrypt, decrypt, see everything)?
    pub(crate) fn is_admin(&self) -> bool {
        self.open || self.scopes.contains(&Scope::Admin)
    }

    /// May it read `service` in every env of `envs`?
    pub(crate) fn can_read(&self, service: &str, envs: &[String]) -> bool {
        self.is_admin() || envs.iter().all(|env| self.can_read_one(service, env))
    }

    /// May it make this read? The one scope check every surface that serves config goes
    /// through (the store's lookups, the WebSocket push, history): the asked pair must be
    /// in scope, and so must the owner of every file the read touches, as the catalog
    /// reads file names at that version. Asking for (`payments-prod`, `staging`) reads
    /// `payments-prod.yml`, which is (`payments`, `prod`)'s file: a `read:*/staging`
    /// token is refused it.
    pub fn may_read(&self, access: &Access) -> Result<(), Denied> {
        if self.is_admin() {
            return Ok(());
        }
        if !self.can_read(&access.service, &access.envs) {
            return Err(Denied {
                pair: format!("`{}/{}`", access.service, access.envs.join(",")),
                because: None,
            });
        }
        for (owner, file) in &access.foreign {
            let allowed = match &owner.env {
                Some(env) => self.can_read_one(&owner.service, env),
                None => access
                    .envs
                    .iter()
                    .all(|env| self.can_read_one(&owner.service, env)),
            };
            if !allowed {
                let whose = match &owner.env {
                    Some(env) => format!("`{}/{env}`", owner.service),
                    None => format!("service `{}`", owner.service),
                };
                return Err(Denied {
                    pair: format!("`{}/{}`", access.service, access.envs.join(",")),
                    because: Some(format!("it reads `{file}`, which is {whose}'s")),
                });
            }
        }
        Ok(())
    }

    fn can_read_one(&self, service: &str, env: &str) -> bool {
        self.scopes.iter().any(|s| match s {
            Scope::Read {
                service: sg,
                env: eg,
            } => glob_match(sg, service) && glob_match(eg, env),
            Scope::Admin => true,
        })
    }
}

/// A read outside a token's scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The pair as asked, quoted.
    pub pair: String,
    /// Set when the pair is in scope but a file it reads is not.
    pub because: Option<String>,
}

impl Denied {
    /// The 403 message for token `who`.
    pub fn message(&self, who: &str) -> String {
        match &self.because {
            None => format!("token `{who}` has no scope for {}", self.pair),
            Some(why) => format!(
                "token `{who}` may not read {}: {why} (declare environments in confhub.yml if a name is read the wrong way)",
                self.pair
            ),
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("a token is required: send `Authorization: Bearer <token>`, `X-Config-Token`, or HTTP Basic")]
    Missing,
    /// The token matches none configured.
    #[error("unknown token")]
    Unknown,
}

/// The configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<Token>,
}

/// sha256 hex of a token, as stored in the settings file.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Auth {
    /// Tokens from the settings file; fails naming the first bad entry.
    pub fn new(configs: &[TokenConfig]) -> Result<Auth, TokenError> {
        let mut tokens = Vec::with_capacity(configs.len());
        for c in configs {
            let err = |message: String| TokenError {
                name: c.name.clone(),
                message,
            };
            let bytes = hex::decode(c.sha256.trim())
                .map_err(|_| err("sha256 must be 64 hex digits".into()))?;
            let hash: [u8; 32] = bytes
                .try_into()
                .map_err(|_| err("sha256 must be 64 hex digits".into()))?;
            // The one hash any client can present: an empty (or missing) header value.
            if hash == <[u8; 32]>::from(Sha256::digest(b"")) {
                return Err(err(
                    "sha256 is the hash of the empty token, which any request could present; make a token with `confhub token new`".into(),
                ));
            }
            if c.scopes.is_empty() {
                return Err(err("has no scopes".into()));
            }
            let scopes = c
                .scopes
                .iter()
                .map(|s| Scope::parse(s))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            tokens.push(Token {
                name: c.name.clone(),
                hash,
                scopes,
            });
        }
        Ok(Auth { tokens })
    }

    /// True when no token is configured: every request is allowed.
    pub(crate) fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The principal for a presented token.
    pub(crate) fn principal_for(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal::open());
        }
        let token = token.ok_or(AuthError::Missing)?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every stored hash, without stopping early, so timing says nothing
        // about which (or whether one) matched.
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&presented)) {
                found = Some(t);
            }
        }
        let t = found.ok_or(AuthError::Unknown)?;
        Ok(Principal {
            name: Some(t.name.clone()),
            scopes: t.scopes.clone(),
            open: false,
        })
    }

    /// The principal of a request, from its headers.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, AuthError> {
        self.principal_for(presented_token(headers).as_deref())
    }
}

/// The token a request presents, from any of the accepted headers.
pub(crate) fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers.get("x-config-token").and_then(|v| v.to_str().ok()) {
        return Some(t.trim().to_string());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = auth.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        // Spring clients send `user:token`; the user name is ignored.
        let decoded = B64.decode(rest.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, pw)| pw.to_string());
    }
    None
}

/// A fresh random token (32 bytes, URL-safe base64), for `confhub token new`.
pub fn generate_token() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let bytes: [u8; 32] = rand::random();
    format!("chub_{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth::new(&[
            TokenConfig {
                name: "orders".into(),
                sha256: token_hash("t-orders"),
                scopes: vec!["read:orders/*".into()],
            },
            TokenConfig {
                name: "staging".into(),
                sha256: token_hash("t-staging"),
                scopes: vec!["read:*/staging".into(), "read:pay?ents/prod".into()],
            },
            TokenConfig {
                name: "ops".into(),
                sha256: token_hash("t-admin"),
                scopes: vec!["admin".into()],
            },
        ])
        .unwrap()
    }

    fn envs(e: &[&str]) -> Vec<String> {
        e.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("orders*", "orders-api"));
        assert!(glob_match("*-api", "orders-api"));
        assert!(glob_match("o?ders", "orders"));
        assert!(!glob_match("orders", "orders-api"));
        assert!(!glob_match("o?ders", "oders"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn scopes_decide_per_service_and_env() {
        let a = auth();
        let orders = a.principal_for(Some("t-orders")).unwrap();
        assert!(orders.can_read("orders", &envs(&["prod"])));
        assert!(!orders.can_read("payments", &envs(&["prod"])));
        assert!(!orders.is_admin());
        let staging = a.principal_for(Some("t-staging")).unwrap();
        assert!(staging.can_read("orders", &envs(&["staging"])));
        assert!(!staging.can_read("orders", &envs(&["prod"])));
        assert!(
            !staging.can_read("orders", &envs(&["staging", "prod"])),
            "every env must be allowed"
        );
        assert!(staging.can_read("payments", &envs(&["prod"])));
        assert!(a.principal_for(Some("t-admin")).unwrap().is_admin());
        assert_eq!(a.principal_for(None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            a.principal_for(Some("nope")).unwrap_err(),
            AuthError::Unknown
        );
        assert!(Auth::default().principal_for(None).unwrap().is_admin());
    }

    #[test]
    fn bad_settings_name_the_token() {
        let bad = |sha: &str, scope: &str| {
            Auth::new(&[TokenConfig {
                name: "x".into(),
                sha256: sha.into(),
                scopes: vec![scope.into()],
            }])
            .unwrap_err()
            .to_string()
        };
        assert!(bad("zz", "admin").contains("token `x`: sha256"));
        assert!(bad(&token_hash("a"), "write:orders/*").contains("must be `admin` or `read:"));
        assert!(bad(&token_hash("a"), "read:orders").contains("<service glob>/<env glob>"));
    }

    #[test]
    fn tokens_are_read_from_every_header_form() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_token(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert("x-config-token", HeaderValue::from_static("abc"));
        assert_eq!(presented_token(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        let basic = format!("Basic {}", B64.encode("user:abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&basic).unwrap(),
        );
        assert_eq!(presented_token(&h).as_deref(), Some("abc"));
        assert_eq!(presented_token(&HeaderMap::new()), None);
    }

    #[test]
    fn generated_tokens_are_random() {
        let (a, b) = (generate_token(), generate_token());
        assert_ne!(a, b);
        assert!(a.starts_with("chub_") && a.len() > 40);
    }
}
