//! Encrypted values: `'{cipher}BASE64'` strings in the repository, decrypted
//! by the server with AES-256-GCM. The key never lives in the repository; its id is in
//! every ciphertext, so old keys can stay configured for decryption while a new one
//! encrypts (rotation).
//!
//! Spring Cloud Config's formats are read too ([`spring`]), so a repository encrypted for
//! a Spring server is served unchanged; confhub's own format stays the one new values get.
//!
//! Ciphertext layout, base64 (standard, padded): `0x01 | key id (4) | nonce (12) | AES-GCM(ciphertext ‖ tag)`.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub mod spring;
pub use spring::SpringKey;

/// The prefix marking an encrypted string value.
pub(crate) const PREFIX: &str = "{cipher}";
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;

/// Why a key or a ciphertext was refused. Never carries plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The key is not base64 of 32 bytes.
    #[error("encryption key must be base64 of 32 bytes: {0}")]
    BadKey(String),
    /// Not our ciphertext format.
    #[error("not a valid {{cipher}} value: {0}")]
    Malformed(&'static str),
    /// Encrypted with a key this server does not have.
    #[error("encrypted with key id {0}, which is not configured here")]
    UnknownKey(String),
    /// Authentication failed: wrong key, or the ciphertext was altered.
    #[error("decryption failed with {0} (wrong key or salt, or altered ciphertext)")]
    Failed(String),
    /// `{key:name}` names no configured key.
    #[error("`{{key:{0}}}` names no configured key (a keystore alias or an entry of encrypt_named_passphrases)")]
    UnknownName(String),
    /// Spring's hex format, and no Spring key.
    #[error("the value is in Spring's format but no Spring key is configured (set encrypt_passphrase, CONFHUB_ENCRYPT_PASSPHRASE or ENCRYPT_KEY, or encrypt_key_store)")]
    NoSpringKey,
    /// The plaintext is not UTF-8.
    #[error("decrypted value is not UTF-8 text")]
    NotText,
}

/// One AES-256 key and its id.
#[derive(Clone)]
pub struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Key {
    // Only the id: the key itself must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", hex::encode(self.id))
    }
}

impl Key {
    /// A key from its base64 text (as in `CONFHUB_ENCRYPT_KEY` or a key file).
    pub fn from_base64(text: &str) -> Result<Key, CryptoError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| CryptoError::BadKey(e.to_string()))?;
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey(format!("got {} bytes", bytes.len())));
        }
        let digest = Sha256::digest(&bytes);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        let cipher =
            Aes256Gcm::new_from_slice(&bytes).map_err(|e| CryptoError::BadKey(e.to_string()))?;
        Ok(Key { id, cipher })
    }

    /// A fresh random key, as base64.
    pub fn generate() -> String {
        B64.encode(Aes256Gcm::generate_key(&mut OsRng))
    }

    /// `version | id | nonce | AES-GCM(plaintext)`, with a fresh random nonce.
    fn seal(&self, plaintext: &str) -> Vec<u8> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let sealed = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The key id (hex), as it appears in errors.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }
}

/// The keys a server holds: confhub's own (the first encrypts new values; all decrypt)
/// and Spring Cloud Config's (a default key, and keys chosen by `{key:name}`).
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
    spring: Option<SpringKey>,
    named: BTreeMap<String, NamedKey>,
}

/// A Spring key chosen by `{key:name}` (a keystore alias or a named passphrase), with
/// the `{secret:…}` that unlocks it when it has one.
#[derive(Clone)]
pub struct NamedKey {
    /// The key.
    pub key: SpringKey,
    /// What a `{secret:…}` prefix must say, if anything.
    pub secret: Option<String>,
}

impl std::fmt::Debug for NamedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamedKey({:?})", self.key)
    }
}

impl Keyring {
    /// A keyring of confhub keys only; `keys[0]` is the one new values are encrypted with.
    pub fn new(keys: Vec<Key>) -> Option<Keyring> {
        Keyring::with_spring(keys, None, BTreeMap::new())
    }

    /// A keyring of confhub keys and Spring keys; `None` when it would hold no key at all.
    pub fn with_spring(
        keys: Vec<Key>,
        spring: Option<SpringKey>,
        named: BTreeMap<String, NamedKey>,
    ) -> Option<Keyring> {
        (!keys.is_empty() || spring.is_some() || !named.is_empty()).then_some(Keyring {
            keys,
            spring,
            named,
        })
    }

    /// The default Spring key, if one is configured.
    pub fn spring(&self) -> Option<&SpringKey> {
        self.spring.as_ref()
    }

    /// `{cipher}…` of `plaintext`: confhub's format when a confhub key is configured,
    /// else Spring's with the default Spring key.
    pub fn encrypt(&self, plaintext: &str) -> Result<String, CryptoError> {
        Ok(format!("{PREFIX}{}", self.encrypt_bare(plaintext)?))
    }

    /// What Spring's `POST /encrypt` answers: the ciphertext without `{cipher}`. A
    /// `{key:name}` prefix on the input picks that named key, and is kept in front of the
    /// output, as Spring does.
    pub(crate) fn encrypt_bare(&self, input: &str) -> Result<String, CryptoError> {
        let p = spring::split_prefixes(input);
        if let Some(name) = p.key {
            let named = self.named_key(name, p.secret)?;
            // The plaintext is what follows the prefixes, untrimmed.
            let plain = plain_after_prefixes(input);
            return Ok(format!("{{key:{name}}}{}", named.encrypt(plain)?));
        }
        if let Some(key) = self.keys.first() {
            return Ok(B64.encode(key.seal(input)));
        }
        match &self.spring {
            Some(k) => k.encrypt(input),
            None => Err(CryptoError::UnknownKey("(no default key)".into())),
        }
    }

    fn named_key(&self, name: &str, secret: Option<&str>) -> Result<&SpringKey, CryptoError> {
        match self.named.get(name) {
            Some(named) => {
                if let (Some(given), Some(wanted)) = (secret, &named.secret) {
                    let same: bool =
                        subtle::ConstantTimeEq::ct_eq(given.as_bytes(), wanted.as_bytes()).into();
                    if !same {
                        return Err(CryptoError::Failed(format!(
                            "key `{name}`: its {{secret:…}} does not unlock it"
                        )));
                    }
                }
                Ok(&named.key)
            }
            // Spring's single-key locator ignores `{key:…}`: a repository written for
            // one `encrypt.key` may carry the prefix anyway.
            None if self.named.is_empty() && self.spring.is_some() => self
                .spring
                .as_ref()
                .ok_or_else(|| CryptoError::UnknownName(name.into())),
            None => Err(CryptoError::UnknownName(name.into())),
        }
    }

    /// Is `body` confhub's format, sealed with one of our keys?
    fn is_ours(&self, body: &str) -> bool {
        B64.decode(body).is_ok_and(|bytes| {
            bytes.len() > 1 + KEY_ID_LEN
                && bytes[0] == VERSION
                && self.keys.iter().any(|k| k.id == bytes[1..1 + KEY_ID_LEN])
        })
    }

    /// Decrypt a value, with or without its `{cipher}` prefix, in confhub's format or
    /// Spring's (symmetric hex or RSA base64, `{key:…}{secret:…}` prefixes).
    pub fn decrypt(&self, value: &str) -> Result<String, CryptoError> {
        let body = value.strip_prefix(PREFIX).unwrap_or(value).trim();
        let p = spring::split_prefixes(body);
        if let Some(name) = p.key {
            let key = self.named_key(name, p.secret)?;
            return key
                .decrypt(p.body)
                .map_err(|e| name_spring(e, &format!("key `{name}`")));
        }
        if !self.is_ours(p.body) {
            if let Some(key) = &self.spring {
                return key.decrypt(p.body).map_err(|e| {
                    name_spring(
                        e,
                        "the Spring key (encrypt_passphrase, ENCRYPT_KEY or encrypt_key_store)",
                    )
                });
            }
            // Spring writes lowercase hex of at least an IV and one block.
            if spring::is_hex(p.body)
                && p.body.len() >= 64
                && !p.body.bytes().any(|b| b.is_ascii_uppercase())
            {
                return Err(CryptoError::NoSpringKey);
            }
        }
        self.decrypt_ours(p.body)
    }

    fn decrypt_ours(&self, body: &str) -> Result<String, CryptoError> {
        let bytes = B64
            .decode(body)
            .map_err(|_| CryptoError::Malformed("not base64"))?;
        if bytes.len() < 1 + KEY_ID_LEN + NONCE_LEN + 16 {
            return Err(CryptoError::Malformed("too short"));
        }
        if bytes[0] != VERSION {
            return Err(CryptoError::Malformed("unknown format version"));
        }
        let id = &bytes[1..1 + KEY_ID_LEN];
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey(hex::encode(id)))?;
        let nonce = Nonce::from_slice(&bytes[1 + KEY_ID_LEN..1 + KEY_ID_LEN + NONCE_LEN]);
        let plain = key
            .cipher
            .decrypt(nonce, &bytes[1 + KEY_ID_LEN + NONCE_LEN..])
            .map_err(|_| CryptoError::Failed(format!("key id {}", key.id())))?;
        String::from_utf8(plain).map_err(|_| CryptoError::NotText)
    }
}

/// The plaintext of a `POST /encrypt` body after its `{name:value}` prefixes.
fn plain_after_prefixes(input: &str) -> &str {
    let mut rest = input;
    while let Some(inner) = rest.strip_prefix('{') {
        match inner.find('}') {
            Some(end) if inner[..end].contains(':') => rest = &inner[end + 1..],
            _ => break,
        }
    }
    rest
}

fn name_spring(e: CryptoError, which: &str) -> CryptoError {
    match e {
        CryptoError::Failed(_) => CryptoError::Failed(which.to_string()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> Keyring {
        Keyring::new(keys.iter().map(|k| Key::from_base64(k).unwrap()).collect()).unwrap()
    }

    #[test]
    fn round_trips_with_a_fresh_nonce_each_time() {
        let k = Key::generate();
        let r = ring(&[&k]);
        let a = r.encrypt("s3cret").unwrap();
        let b = r.encrypt("s3cret").unwrap();
        assert!(a.starts_with(PREFIX));
        assert_ne!(a, b, "nonces must differ");
        assert_eq!(r.decrypt(&a).unwrap(), "s3cret");
        assert_eq!(
            r.decrypt(a.strip_prefix(PREFIX).unwrap()).unwrap(),
            "s3cret"
        );
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let (old, new) = (Key::generate(), Key::generate());
        let value = ring(&[&old]).encrypt("v").unwrap();
        let rotated = ring(&[&new, &old]);
        assert_eq!(rotated.decrypt(&value).unwrap(), "v");
        let only_new = ring(&[&new]);
        assert!(matches!(
            only_new.decrypt(&value),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampering_and_garbage_are_refused() {
        let r = ring(&[&Key::generate()]);
        let mut bytes = B64
            .decode(r.encrypt("v").unwrap().strip_prefix(PREFIX).unwrap())
            .unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            r.decrypt(&B64.encode(&bytes)),
            Err(CryptoError::Failed(_))
        ));
        assert!(matches!(
            r.decrypt("{cipher}!!!"),
            Err(CryptoError::Malformed(_))
        ));
        assert!(matches!(
            r.decrypt("{cipher}AAAA"),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(Key::from_base64("AAAA").is_err());
        assert!(Key::from_base64("not base64!").is_err());
        let dbg = format!("{:?}", Key::from_base64(&Key::generate()).unwrap());
        assert!(dbg.starts_with("Key(") && dbg.len() == 13, "{dbg}");
    }
}
