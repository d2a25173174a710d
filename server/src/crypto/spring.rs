//! Spring Cloud Config's `{cipher}` formats, decrypted (and produced) the way Spring's
//! own code does, so a repository encrypted for a Spring server is served unchanged.
//!
//! - Symmetric (`encrypt.key`): spring-security-crypto's `Encryptors.text(key, salt)`:
//!   AES-256-CBC with PKCS#5 padding, the key PBKDF2-HMAC-SHA1(passphrase, hex-decoded
//!   salt, 1024 iterations, 256 bits), a random 16-byte IV; the value is
//!   `hex(iv ‖ ciphertext)`.
//! - RSA (`encrypt.key-store.*`, or a PEM private key as `encrypt.key`): `RsaSecretEncryptor`:
//!   `base64(len:u16 ‖ RSA(random 16 bytes) ‖ aes)`, where `aes` is the symmetric format
//!   above (GCM when `encrypt.rsa.strong`) with `hex(random)` as its passphrase and the
//!   RSA salt; RSA padding PKCS#1 v1.5 (`DEFAULT`) or OAEP with SHA-1 (`OAEP`).
//! - Prefixes after `{cipher}`: `{key:alias}` and `{secret:…}` choose the key
//!   (Spring's `EnvironmentPrefixHelper`).

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use aes_gcm::aead::consts::U16;
use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::AesGcm;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore as _;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, Pkcs1v15Encrypt, RsaPrivateKey, RsaPublicKey};

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{CryptoError, NamedKey};

/// Spring's default salt (`encrypt.salt`, `encrypt.rsa.salt`), hex.
pub(crate) const DEFAULT_SALT: &str = "deadbeef";
const ITERATIONS: u32 = 1024;
const IV_LEN: usize = 16;
/// Largest Spring ciphertext accepted (hex or base64 text): far above any config value,
/// small enough that no repository can make one decryption costly.
pub(crate) const MAX_CIPHERTEXT: usize = 64 * 1024;

type CbcEnc = cbc::Encryptor<aes::Aes256>;
type CbcDec = cbc::Decryptor<aes::Aes256>;
type Gcm16 = AesGcm<aes::Aes256, U16>;

/// `encrypt.rsa.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RsaAlgorithm {
    /// Java's `RSA`: PKCS#1 v1.5 padding.
    #[default]
    Default,
    /// Java's `RSA/ECB/OAEPPadding`: OAEP with SHA-1 and MGF1-SHA-1.
    Oaep,
}

impl std::str::FromStr for RsaAlgorithm {
    type Err = CryptoError;
    fn from_str(s: &str) -> Result<Self, CryptoError> {
        match s.to_ascii_uppercase().as_str() {
            "DEFAULT" => Ok(RsaAlgorithm::Default),
            "OAEP" => Ok(RsaAlgorithm::Oaep),
            _ => Err(CryptoError::BadKey(format!(
                "RSA algorithm must be DEFAULT or OAEP, not `{}`",
                s.escape_default()
            ))),
        }
    }
}

/// Hex-decode a salt as spring-security's `Hex.decode` does (even length, hex digits).
pub(crate) fn decode_salt(salt: &str) -> Result<Vec<u8>, CryptoError> {
    hex::decode(salt).map_err(|_| {
        CryptoError::BadKey(
            "the salt must be hex (an even number of 0-9a-f digits), as Spring requires".into(),
        )
    })
}

fn derive(passphrase: &[u8], salt: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    // Java's PBEKeySpec hands PBKDF2 the passphrase's chars as UTF-8.
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(passphrase, salt, ITERATIONS, &mut key);
    key
}

fn failed() -> CryptoError {
    CryptoError::Failed("spring".into())
}

/// AES with a PBKDF2-derived key: spring-security's `AesBytesEncryptor` (CBC) or its GCM
/// form (`Encryptors.stronger`), with a random 16-byte IV in front of the ciphertext.
#[derive(Clone)]
struct Aes {
    key: [u8; 32],
    gcm: bool,
}

impl Aes {
    fn new(passphrase: &[u8], salt: &[u8], gcm: bool) -> Aes {
        Aes {
            key: derive(passphrase, salt),
            gcm,
        }
    }

    fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; IV_LEN];
        rand::rng().fill_bytes(&mut iv);
        let sealed = if self.gcm {
            // In-memory AES-GCM with a valid key and nonce cannot fail.
            Gcm16::new(&self.key.into())
                .encrypt(&iv.into(), plain)
                .unwrap_or_default()
        } else {
            CbcEnc::new(&self.key.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plain)
        };
        let mut out = iv.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    fn decrypt(&self, bytes: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if bytes.len() < IV_LEN + 16 {
            return Err(CryptoError::Malformed("too short for Spring's format"));
        }
        let (iv, body) = bytes.split_at(IV_LEN);
        let iv: [u8; IV_LEN] = iv
            .try_into()
            .map_err(|_| CryptoError::Malformed("too short for Spring's format"))?;
        if self.gcm {
            Gcm16::new(&self.key.into())
                .decrypt(&iv.into(), body)
                .map_err(|_| failed())
        } else {
            CbcDec::new(&self.key.into(), &iv.into())
                .decrypt_padded_vec_mut::<Pkcs7>(body)
                .map_err(|_| failed())
        }
    }
}

/// An RSA key pair as Spring's `RsaSecretEncryptor` uses it.
#[derive(Clone)]
pub struct RsaKey {
    private: RsaPrivateKey,
    algorithm: RsaAlgorithm,
    salt: Vec<u8>,
    strong: bool,
}

impl RsaKey {
    /// A key pair from PEM (`BEGIN RSA PRIVATE KEY` or PKCS#8 `BEGIN PRIVATE KEY`).
    pub fn from_pem(
        pem: &str,
        algorithm: RsaAlgorithm,
        salt: &str,
        strong: bool,
    ) -> Result<RsaKey, CryptoError> {
        let pem = pem.trim();
        let private = RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem))
            .map_err(|_| {
                CryptoError::BadKey(
                    "not a PEM RSA private key (`BEGIN RSA PRIVATE KEY` or `BEGIN PRIVATE KEY`)"
                        .into(),
                )
            })?;
        Self::new(private, algorithm, salt, strong)
    }

    /// A key pair from PKCS#8 DER (as a PKCS#12 keystore holds it).
    pub(crate) fn from_pkcs8_der(
        der: &[u8],
        algorithm: RsaAlgorithm,
        salt: &str,
        strong: bool,
    ) -> Result<RsaKey, CryptoError> {
        let private = RsaPrivateKey::from_pkcs8_der(der).map_err(|_| {
            CryptoError::BadKey("the keystore entry is not an RSA private key".into())
        })?;
        Self::new(private, algorithm, salt, strong)
    }

    fn new(
        private: RsaPrivateKey,
        algorithm: RsaAlgorithm,
        salt: &str,
        strong: bool,
    ) -> Result<RsaKey, CryptoError> {
        // RsaSecretEncryptor takes a non-hex salt as the hex of its UTF-8 bytes.
        let salt = hex::decode(salt).unwrap_or_else(|_| salt.as_bytes().to_vec());
        Ok(RsaKey {
            private,
            algorithm,
            salt,
            strong,
        })
    }

    fn public(&self) -> RsaPublicKey {
        self.private.to_public_key()
    }

    /// The public key as Spring's `GET /key` shows it: `ssh-rsa BASE64 application`.
    pub(crate) fn public_ssh(&self) -> String {
        fn mpint(out: &mut Vec<u8>, n: &[u8]) {
            // Java's BigInteger.toByteArray: big-endian two's complement, so a leading
            // zero byte when the top bit is set.
            let pad = n.first().is_some_and(|b| b & 0x80 != 0);
            let len = n.len() + usize::from(pad);
            out.extend_from_slice(&(len as u32).to_be_bytes());
            if pad {
                out.push(0);
            }
            out.extend_from_slice(n);
        }
        let public = self.public();
        let mut blob = Vec::new();
        blob.extend_from_slice(&[0, 0, 0, 7]);
        blob.extend_from_slice(b"ssh-rsa");
        mpint(&mut blob, &public.e().to_bytes_be());
        mpint(&mut blob, &public.n().to_bytes_be());
        format!("ssh-rsa {} application", B64.encode(blob))
    }

    fn encrypt(&self, plain: &[u8]) -> Result<String, CryptoError> {
        let mut random = [0u8; 16];
        rand::rng().fill_bytes(&mut random);
        let public = self.public();
        let secret = match self.algorithm {
            RsaAlgorithm::Default => public.encrypt(&mut OsRng, Pkcs1v15Encrypt, &random),
            RsaAlgorithm::Oaep => public.encrypt(&mut OsRng, Oaep::new::<sha1::Sha1>(), &random),
        }
        .map_err(|e| CryptoError::BadKey(format!("RSA encryption failed: {e}")))?;
        let aes = Aes::new(hex::encode(random).as_bytes(), &self.salt, self.strong);
        let mut out = Vec::with_capacity(2 + secret.len() + plain.len() + 48);
        out.extend_from_slice(&(secret.len() as u16).to_be_bytes());
        out.extend_from_slice(&secret);
        out.extend_from_slice(&aes.encrypt(plain));
        Ok(B64.encode(out))
    }

    fn decrypt(&self, body: &str) -> Result<Vec<u8>, CryptoError> {
        let bytes = B64
            .decode(body)
            .map_err(|_| CryptoError::Malformed("not base64 (Spring's RSA format)"))?;
        let len = match bytes.as_slice() {
            [a, b, ..] => usize::from(*a) << 8 | usize::from(*b),
            _ => return Err(CryptoError::Malformed("too short for Spring's RSA format")),
        };
        let rest = &bytes[2..];
        if rest.len() < len {
            return Err(CryptoError::Malformed("too short for Spring's RSA format"));
        }
        let (secret, aes) = rest.split_at(len);
        // Blinded: the private key's timing does not depend on the ciphertext.
        let random = match self.algorithm {
            RsaAlgorithm::Default => {
                self.private
                    .decrypt_blinded(&mut OsRng, Pkcs1v15Encrypt, secret)
            }
            RsaAlgorithm::Oaep => {
                self.private
                    .decrypt_blinded(&mut OsRng, Oaep::new::<sha1::Sha1>(), secret)
            }
        }
        .map_err(|_| failed())?;
        Aes::new(hex::encode(random).as_bytes(), &self.salt, self.strong).decrypt(aes)
    }
}

/// One Spring key: a passphrase (`encrypt.key`) or an RSA key pair.
#[derive(Clone)]
pub enum SpringKey {
    /// `Encryptors.text(passphrase, salt)`.
    Symmetric(SymmetricKey),
    /// `RsaSecretEncryptor`.
    Rsa(Box<RsaKey>),
}

/// A key derived from a passphrase and salt, as Spring's `encrypt.key`.
#[derive(Clone)]
pub struct SymmetricKey(Aes);

impl SymmetricKey {
    /// From Spring's `encrypt.key` and `encrypt.salt` (hex; [`DEFAULT_SALT`] by default).
    pub fn new(passphrase: &str, salt: &str) -> Result<SymmetricKey, CryptoError> {
        if passphrase.is_empty() {
            return Err(CryptoError::BadKey("the passphrase is empty".into()));
        }
        Ok(SymmetricKey(Aes::new(
            passphrase.as_bytes(),
            &decode_salt(salt)?,
            false,
        )))
    }
}

impl std::fmt::Debug for SpringKey {
    // Never the key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SpringKey::Symmetric(_) => "SpringKey(symmetric)",
            SpringKey::Rsa(_) => "SpringKey(rsa)",
        })
    }
}

impl SpringKey {
    /// What Spring's `EncryptorFactory` makes of an `encrypt.key` value: a PEM RSA
    /// private key is an RSA key, anything else a passphrase.
    pub(crate) fn from_encrypt_key(value: &str, salt: &str) -> Result<SpringKey, CryptoError> {
        if value.contains("PRIVATE KEY-----") {
            return Ok(SpringKey::Rsa(Box::new(RsaKey::from_pem(
                value,
                RsaAlgorithm::Default,
                DEFAULT_SALT,
                false,
            )?)));
        }
        if value.starts_with("ssh-rsa") || value.contains("PUBLIC KEY-----") {
            return Err(CryptoError::BadKey(
                "a public key cannot decrypt: give the private key".into(),
            ));
        }
        Ok(SpringKey::Symmetric(SymmetricKey::new(value, salt)?))
    }

    /// The value's text after `{cipher}` and its prefixes.
    pub fn encrypt(&self, plain: &str) -> Result<String, CryptoError> {
        match self {
            SpringKey::Symmetric(k) => Ok(hex::encode(k.0.encrypt(plain.as_bytes()))),
            SpringKey::Rsa(k) => k.encrypt(plain.as_bytes()),
        }
    }

    /// Decrypt the text after `{cipher}` and its prefixes.
    pub fn decrypt(&self, body: &str) -> Result<String, CryptoError> {
        if body.len() > MAX_CIPHERTEXT {
            return Err(CryptoError::Malformed("longer than 64 KiB"));
        }
        let plain = match self {
            SpringKey::Symmetric(k) => {
                let bytes = hex::decode(body)
                    .map_err(|_| CryptoError::Malformed("not hex (Spring's symmetric format)"))?;
                k.0.decrypt(&bytes)?
            }
            SpringKey::Rsa(k) => k.decrypt(body)?,
        };
        String::from_utf8(plain).map_err(|_| CryptoError::NotText)
    }

    /// The RSA key, if this is one.
    pub fn rsa(&self) -> Option<&RsaKey> {
        match self {
            SpringKey::Rsa(k) => Some(k),
            SpringKey::Symmetric(_) => None,
        }
    }
}

/// Is `s` hex as spring-security's `Hex.decode` reads it (even length, hex digits)?
pub(crate) fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `{key:alias}{secret:…}` prefixes in front of a ciphertext, as Spring's
/// `EnvironmentPrefixHelper` reads them, and the ciphertext after them.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Prefixes<'a> {
    /// `{key:…}`: the key (keystore alias) to use.
    pub key: Option<&'a str>,
    /// `{secret:…}`: the password of that key.
    pub secret: Option<&'a str>,
    /// The ciphertext.
    pub body: &'a str,
}

/// Split `{name:value}` prefixes off `text` (others than `key` and `secret` are ignored,
/// as Spring's locators ignore them).
pub(crate) fn split_prefixes(text: &str) -> Prefixes<'_> {
    let mut out = Prefixes {
        body: text,
        ..Prefixes::default()
    };
    let mut rest = text;
    while let Some(inner) = rest.strip_prefix('{') {
        let Some(end) = inner.find('}') else { break };
        let token = &inner[..end];
        let Some((name, value)) = token.split_once(':') else {
            break;
        };
        match name {
            "key" => out.key = Some(value),
            "secret" => out.secret = Some(value),
            _ => {}
        }
        rest = &inner[end + 1..];
    }
    out.body = rest.trim();
    out
}

/// Spring's `encrypt.*` settings, as confhub takes them.
#[derive(Debug, Clone, Default)]
pub struct SpringKeySettings {
    /// `encrypt.key`: a passphrase, or a PEM RSA private key.
    pub passphrase: Option<String>,
    /// `encrypt.salt` (hex; [`DEFAULT_SALT`] by default).
    pub salt: Option<String>,
    /// `encrypt.key-store.*`.
    pub key_store: Option<KeyStoreSettings>,
    /// `encrypt.rsa.algorithm`.
    pub rsa_algorithm: RsaAlgorithm,
    /// `encrypt.rsa.salt` ([`DEFAULT_SALT`] by default).
    pub rsa_salt: Option<String>,
    /// `encrypt.rsa.strong`: AES-GCM instead of CBC inside RSA values.
    pub rsa_strong: bool,
    /// Passphrases chosen by `{key:name}` (a confhub addition).
    pub named_passphrases: BTreeMap<String, String>,
}

/// `encrypt.key-store.*`: a PKCS#12 keystore or a PEM file holding an RSA key pair.
#[derive(Debug, Clone, Default)]
pub struct KeyStoreSettings {
    /// `location`.
    pub location: PathBuf,
    /// `password` of the store.
    pub password: String,
    /// `alias` of the default key.
    pub alias: Option<String>,
    /// `secret`: the key's password (the store password by default).
    pub secret: Option<String>,
    /// `type`: `pkcs12`, `jks` (read as PKCS#12, as Java does for PKCS#12 files) or `pem`.
    pub kind: Option<String>,
}

/// Which setting a Spring key failed on, and why.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpringKeyError {
    /// The settings key (`encrypt_passphrase`, `encrypt_key_store.location`, …).
    pub setting: &'static str,
    /// What is wrong (never key material).
    pub message: String,
}

fn bad(setting: &'static str, message: impl std::fmt::Display) -> SpringKeyError {
    SpringKeyError {
        setting,
        message: message.to_string(),
    }
}

/// The default Spring key and the named ones.
pub type SpringKeys = (Option<SpringKey>, BTreeMap<String, NamedKey>);

/// Build the Spring keys `settings` describe. Keystore keys (RSA) win over the
/// passphrase as the default, as in Spring when both are set.
pub fn build(settings: &SpringKeySettings) -> Result<SpringKeys, SpringKeyError> {
    let salt = settings.salt.as_deref().unwrap_or(DEFAULT_SALT);
    decode_salt(salt).map_err(|e| bad("encrypt_salt", e))?;
    let rsa_salt = settings.rsa_salt.as_deref().unwrap_or(DEFAULT_SALT);
    let mut named = BTreeMap::new();
    for (name, phrase) in &settings.named_passphrases {
        let key = SymmetricKey::new(phrase, salt)
            .map_err(|e| bad("encrypt_named_passphrases", format!("`{name}`: {e}")))?;
        named.insert(
            name.clone(),
            NamedKey {
                key: SpringKey::Symmetric(key),
                secret: None,
            },
        );
    }
    let mut default = match settings.passphrase.as_deref() {
        Some(p) => {
            Some(SpringKey::from_encrypt_key(p, salt).map_err(|e| bad("encrypt_passphrase", e))?)
        }
        None => None,
    };
    if let Some(store) = &settings.key_store {
        let (key, aliases) =
            load_key_store(store, settings.rsa_algorithm, rsa_salt, settings.rsa_strong)?;
        default = Some(key);
        named.extend(aliases);
    }
    Ok((default, named))
}

/// How RSA values are read: Spring's `encrypt.rsa.*`.
#[derive(Clone, Copy)]
struct RsaOptions<'a> {
    algorithm: RsaAlgorithm,
    salt: &'a str,
    strong: bool,
}

fn load_key_store(
    store: &KeyStoreSettings,
    algorithm: RsaAlgorithm,
    salt: &str,
    strong: bool,
) -> Result<(SpringKey, BTreeMap<String, NamedKey>), SpringKeyError> {
    let rsa = RsaOptions {
        algorithm,
        salt,
        strong,
    };
    let shown = store.location.display();
    let bytes = std::fs::read(&store.location)
        .map_err(|e| bad("encrypt_key_store.location", format!("{shown}: {e}")))?;
    let kind = store.kind.as_deref().unwrap_or("jks").to_ascii_lowercase();
    if kind == "pem" || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return pem_store(store, &bytes, rsa);
    }
    let secret = pkcs12_secret(store, &bytes, &kind)?;
    let named = pkcs12_keys(store, &bytes, &secret, rsa)?;
    let default = default_key(store, &named)?;
    Ok((default, named))
}

/// A PEM file: its one key is the default, and also named by the alias if one is set.
fn pem_store(
    store: &KeyStoreSettings,
    bytes: &[u8],
    rsa: RsaOptions<'_>,
) -> Result<(SpringKey, BTreeMap<String, NamedKey>), SpringKeyError> {
    let shown = store.location.display();
    let text = String::from_utf8_lossy(bytes);
    let key = RsaKey::from_pem(&text, rsa.algorithm, rsa.salt, rsa.strong)
        .map_err(|e| bad("encrypt_key_store.location", format!("{shown}: {e}")))?;
    let key = SpringKey::Rsa(Box::new(key));
    let mut named = BTreeMap::new();
    if let Some(alias) = &store.alias {
        named.insert(
            alias.clone(),
            NamedKey {
                key: key.clone(),
                secret: None,
            },
        );
    }
    Ok((key, named))
}

/// The password of the keys in a PKCS#12 store, once the store is known to be one
/// confhub can read.
fn pkcs12_secret(
    store: &KeyStoreSettings,
    bytes: &[u8],
    kind: &str,
) -> Result<String, SpringKeyError> {
    let shown = store.location.display();
    if bytes.starts_with(&[0xFE, 0xED, 0xFE, 0xED]) {
        return Err(bad(
            "encrypt_key_store.location",
            format!("{shown} is a JKS keystore, which confhub cannot read: convert it with `keytool -importkeystore -srckeystore {shown} -destkeystore keys.p12 -deststoretype pkcs12`"),
        ));
    }
    if !matches!(kind, "jks" | "pkcs12" | "p12") {
        return Err(bad(
            "encrypt_key_store.type",
            format!("`{}` is not pkcs12, jks or pem", kind.escape_default()),
        ));
    }
    let secret = store
        .secret
        .clone()
        .unwrap_or_else(|| store.password.clone());
    if secret != store.password {
        return Err(bad(
            "encrypt_key_store.secret",
            "differs from the store password: confhub reads PKCS#12 keystores whose keys use the store password (keytool's default)",
        ));
    }
    Ok(secret)
}

/// Every private key of a PKCS#12 store, by alias.
fn pkcs12_keys(
    store: &KeyStoreSettings,
    bytes: &[u8],
    secret: &str,
    rsa: RsaOptions<'_>,
) -> Result<BTreeMap<String, NamedKey>, SpringKeyError> {
    let shown = store.location.display();
    let p12 = p12_keystore::KeyStore::from_pkcs12(bytes, &store.password).map_err(|_| {
        bad(
            "encrypt_key_store.location",
            format!("{shown}: not a PKCS#12 keystore, or the password is wrong"),
        )
    })?;
    let mut named = BTreeMap::new();
    for (alias, entry) in p12.entries() {
        if let p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) = entry {
            let key = RsaKey::from_pkcs8_der(chain.key(), rsa.algorithm, rsa.salt, rsa.strong)
                .map_err(|e| {
                    bad(
                        "encrypt_key_store.location",
                        format!("{shown}: alias `{alias}`: {e}"),
                    )
                })?;
            named.insert(
                alias.clone(),
                NamedKey {
                    key: SpringKey::Rsa(Box::new(key)),
                    secret: Some(secret.to_string()),
                },
            );
        }
    }
    Ok(named)
}

/// The key named by the alias, or the only one when no alias is set.
fn default_key(
    store: &KeyStoreSettings,
    named: &BTreeMap<String, NamedKey>,
) -> Result<SpringKey, SpringKeyError> {
    let shown = store.location.display();
    match &store.alias {
        Some(alias) => named.get(alias).map(|n| n.key.clone()).ok_or_else(|| {
            bad(
                "encrypt_key_store.alias",
                format!(
                    "{shown} has no private key `{alias}` (it has: {})",
                    named.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        }),
        None if named.len() == 1 => named
            .values()
            .next()
            .map(|n| n.key.clone())
            .ok_or_else(|| bad("encrypt_key_store.alias", "no key")),
        None => Err(bad(
            "encrypt_key_store.alias",
            format!(
                "{shown} holds {} private keys: name the default one",
                named.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spring_known_answer_decrypts() {
        // spring-cloud-commons, spring-cloud-context/src/test/java/org/springframework/
        // cloud/bootstrap/encrypt/EncryptionIntegrationTests.java:43-44: `encrypt.key:pie`
        // (default salt) decrypts this to "test".
        let key = SpringKey::from_encrypt_key("pie", DEFAULT_SALT).unwrap();
        assert_eq!(
            key.decrypt("bf29452295df354e6153c5b31b03ef23c70e55fba24299aa85c63438f1c43c95")
                .unwrap(),
            "test"
        );
        let other = SpringKey::from_encrypt_key("cake", DEFAULT_SALT).unwrap();
        assert!(other
            .decrypt("bf29452295df354e6153c5b31b03ef23c70e55fba24299aa85c63438f1c43c95")
            .is_err());
    }

    #[test]
    fn symmetric_round_trips_and_salt_matters() {
        let key = SpringKey::from_encrypt_key("s3cr3t", "0011aabb").unwrap();
        let c = key.encrypt("hello").unwrap();
        assert!(is_hex(&c), "{c}");
        assert_eq!(key.decrypt(&c).unwrap(), "hello");
        let salted = SpringKey::from_encrypt_key("s3cr3t", DEFAULT_SALT).unwrap();
        assert!(salted.decrypt(&c).is_err());
        assert!(SymmetricKey::new("x", "xyz").is_err());
    }

    #[test]
    fn prefixes_split_as_spring_does() {
        let p = split_prefixes("{key:mykey}{secret:pw}abc");
        assert_eq!(
            (p.key, p.secret, p.body),
            (Some("mykey"), Some("pw"), "abc")
        );
        assert_eq!(split_prefixes("abc").body, "abc");
        assert_eq!(split_prefixes("{name:x}abc").body, "abc");
    }
}
