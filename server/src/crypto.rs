//! Encrypted values (DESIGN §2): `'{cipher}BASE64'` strings in the repository, decrypted
//! by the server with AES-256-GCM. The key never lives in the repository; its id is in
//! every ciphertext, so old keys can stay configured for decryption while a new one
//! encrypts (rotation).
//!
//! Ciphertext layout, base64 (standard, padded): `0x01 | key id (4) | nonce (12) | AES-GCM(ciphertext ‖ tag)`.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The prefix marking an encrypted string value.
pub const PREFIX: &str = "{cipher}";
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
    #[error("decryption failed with key id {0} (wrong key or altered ciphertext)")]
    Failed(String),
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

    /// The key id (hex), as it appears in errors.
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }
}

/// The keys a server holds: the first encrypts; all decrypt.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A keyring; `keys[0]` is the one new values are encrypted with.
    pub fn new(keys: Vec<Key>) -> Option<Keyring> {
        (!keys.is_empty()).then_some(Keyring { keys })
    }

    /// `{cipher}BASE64` of `plaintext`, with a fresh random nonce.
    pub fn encrypt(&self, plaintext: &str) -> String {
        let key = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption with a valid key and nonce cannot fail for in-memory buffers.
        let sealed = key
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// Decrypt a value, with or without its `{cipher}` prefix.
    pub fn decrypt(&self, value: &str) -> Result<String, CryptoError> {
        let body = value.strip_prefix(PREFIX).unwrap_or(value).trim();
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
            .map_err(|_| CryptoError::Failed(key.id()))?;
        String::from_utf8(plain).map_err(|_| CryptoError::NotText)
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
        let a = r.encrypt("s3cret");
        let b = r.encrypt("s3cret");
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
        let value = ring(&[&old]).encrypt("v");
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
            .decode(r.encrypt("v").strip_prefix(PREFIX).unwrap())
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
