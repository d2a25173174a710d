//! The settings file (`--config`, TOML) and its overrides: every key can be set in the
//! file, overridden by a `CONFHUB_*` environment variable, and that by a flag (flags win).
//! Unknown keys in the file are an error naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::{TokenConfig, TokenError};
use crate::crypto::spring::{KeyStoreSettings, SpringKeyError, SpringKeySettings};
use crate::crypto::{CryptoError, Key, Keyring};
use crate::settings::{HttpLimits, LiveSettings, RecoverySettings, Secret, Settings, TlsFiles};

/// Why the settings could not be loaded. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("settings file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("settings file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong, naming the key (and line).
        message: String,
    },
    /// An environment variable or flag has a value of the wrong type.
    #[error("{source_name}: {message}")]
    Override {
        /// `CONFHUB_…` or `--flag`.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// A value is invalid.
    #[error("setting `{key}`: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A key file could not be used.
    #[error("setting `{key}`: {path}: {source}")]
    KeyFile {
        /// The dotted key.
        key: String,
        /// The key file.
        path: String,
        /// What is wrong.
        #[source]
        source: KeyFileError,
    },
    /// A key (or an `encrypt_rsa` choice) was refused.
    #[error("setting `{key}`: {source}")]
    Key {
        /// The dotted key.
        key: &'static str,
        /// What is wrong.
        #[source]
        source: CryptoError,
    },
    /// Spring's `encrypt.*` settings do not make a key.
    #[error("setting `{}`: {}", .0.setting, .0.message)]
    SpringKey(#[from] SpringKeyError),
    /// A `[[tokens]]` entry is invalid.
    #[error("setting `tokens`: {0}")]
    Tokens(#[from] TokenError),
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It could not be read.
    #[error(transparent)]
    Read(#[from] std::io::Error),
    /// It does not hold a key.
    #[error(transparent)]
    Key(#[from] CryptoError),
}

/// The settings file's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// Repository path or URL.
    pub repo: Option<String>,
    /// Tracked branch.
    pub branch: Option<String>,
    /// Listen address.
    pub listen: Option<String>,
    /// Folder holding the config files.
    pub search_path: Option<String>,
    /// Serve a plain directory.
    pub dev: Option<bool>,
    /// Clone directory for remotes.
    pub data_dir: Option<PathBuf>,
    /// Fetch interval for remotes (`30s`, `5m`).
    pub poll: Option<String>,
    /// Token for https remotes (secret).
    pub git_token: Option<String>,
    /// Private key for ssh remotes.
    pub ssh_key: Option<PathBuf>,
    /// Webhook secret (secret).
    pub webhook_secret: Option<String>,
    /// Encryption key, base64 (secret; prefer `encrypt_key_file`).
    pub encrypt_key: Option<String>,
    /// File holding the encryption key.
    pub encrypt_key_file: Option<PathBuf>,
    /// Older key files, for decryption only (rotation).
    pub decrypt_key_files: Option<Vec<PathBuf>>,
    /// Spring's `encrypt.key`: passphrase (or PEM RSA private key) for Spring's `{cipher}`
    /// values (secret).
    pub encrypt_passphrase: Option<String>,
    /// Spring's `encrypt.salt`, hex (default `deadbeef`).
    pub encrypt_salt: Option<String>,
    /// Passphrases chosen by `{cipher}{key:NAME}` (secret).
    pub encrypt_named_passphrases: Option<BTreeMap<String, String>>,
    /// Spring's `encrypt.key-store.*`.
    pub encrypt_key_store: Option<FileKeyStore>,
    /// Spring's `encrypt.rsa.*`.
    pub encrypt_rsa: Option<FileRsa>,
    /// Decrypt `{cipher}` values on the server (default true); `false` without a key
    /// serves them as they are (Spring's `spring.cloud.config.server.encrypt.enabled`).
    pub encrypt_enabled: Option<bool>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Resolved results kept for non-tracked labels.
    pub cache_capacity: Option<usize>,
    /// Bytes those results may hold together.
    pub cache_max_bytes: Option<usize>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Access tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenConfig>,
    /// Limits.
    #[serde(default)]
    pub limits: FileLimits,
}

/// `[encrypt_key_store]`: Spring's `encrypt.key-store.*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKeyStore {
    /// A PKCS#12 keystore (`.p12`, or a `.jks` that keytool wrote as PKCS#12) or a PEM file.
    pub location: Option<PathBuf>,
    /// Password of the store (secret).
    pub password: Option<String>,
    /// Alias of the default key.
    pub alias: Option<String>,
    /// Password of the key (secret; the store password by default).
    pub secret: Option<String>,
    /// `pkcs12`, `jks` or `pem`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// `[encrypt_rsa]`: Spring's `encrypt.rsa.*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRsa {
    /// `DEFAULT` (PKCS#1 v1.5) or `OAEP`.
    pub algorithm: Option<String>,
    /// Salt, hex (default `deadbeef`).
    pub salt: Option<String>,
    /// AES-GCM instead of CBC inside RSA values.
    pub strong: Option<bool>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Largest request body.
    pub max_body_bytes: Option<usize>,
    /// Largest webhook payload.
    pub webhook_max_body_bytes: Option<usize>,
    /// Bytes of not yet authenticated webhook payloads held at once.
    pub webhook_body_budget_bytes: Option<usize>,
    /// Largest request header block.
    pub max_header_bytes: Option<usize>,
    /// Per-request timeout (`30s`).
    pub request_timeout: Option<String>,
    /// Time allowed to send request headers (`10s`).
    pub header_read_timeout: Option<String>,
    /// Open connections at once.
    pub max_connections: Option<usize>,
    /// Requests per second per token.
    pub rate_per_second: Option<u32>,
    /// Burst on top of the rate.
    pub rate_burst: Option<u32>,
    /// Largest WebSocket message from a client.
    pub ws_max_message: Option<usize>,
    /// Subscriptions per WebSocket connection.
    pub ws_max_subscriptions: Option<usize>,
    /// Open WebSocket connections at once.
    pub ws_max_connections: Option<usize>,
    /// Frames that may queue for a connection beyond one per subscription.
    pub ws_send_buffer: Option<usize>,
    /// Distinct watched pairs outside the snapshot, for all connections.
    pub ws_max_extra_pairs: Option<usize>,
    /// How long an instance that fetched over HTTP stays listed (`10m`).
    pub instance_ttl: Option<String>,
    /// Instances listed at once.
    pub max_instances: Option<usize>,
    /// Ping interval (`20s`).
    pub ws_ping_interval: Option<String>,
    /// Idle peers are dropped after this (`60s`).
    pub ws_idle_timeout: Option<String>,
    /// Remote fetches slower than this are reported as failed (`60s`).
    pub fetch_timeout: Option<String>,
    /// Commits walked back at start for a pair failing at the head.
    pub last_good_depth: Option<usize>,
    /// Time that walk may take (`5s`).
    pub last_good_timeout: Option<String>,
    /// Trees and blobs read when verifying the clone.
    pub verify_max_objects: Option<usize>,
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    List,
}

/// Every key that environment variables and `--set` may override, with its type.
/// `CONFHUB_` + the key upper-cased with `.` → `_` is its environment variable.
const KEYS: &[(&str, Kind)] = &[
    ("repo", Kind::Str),
    ("branch", Kind::Str),
    ("listen", Kind::Str),
    ("search_path", Kind::Str),
    ("dev", Kind::Bool),
    ("data_dir", Kind::Str),
    ("poll", Kind::Str),
    ("git_token", Kind::Str),
    ("ssh_key", Kind::Str),
    ("webhook_secret", Kind::Str),
    ("encrypt_key", Kind::Str),
    ("encrypt_key_file", Kind::Str),
    ("decrypt_key_files", Kind::List),
    ("encrypt_passphrase", Kind::Str),
    ("encrypt_salt", Kind::Str),
    ("encrypt_key_store.location", Kind::Str),
    ("encrypt_key_store.password", Kind::Str),
    ("encrypt_key_store.alias", Kind::Str),
    ("encrypt_key_store.secret", Kind::Str),
    ("encrypt_key_store.type", Kind::Str),
    ("encrypt_rsa.algorithm", Kind::Str),
    ("encrypt_rsa.salt", Kind::Str),
    ("encrypt_rsa.strong", Kind::Bool),
    ("encrypt_enabled", Kind::Bool),
    ("log_format", Kind::Str),
    ("cache_capacity", Kind::Int),
    ("cache_max_bytes", Kind::Int),
    ("tls_cert", Kind::Str),
    ("tls_key", Kind::Str),
    ("limits.max_body_bytes", Kind::Int),
    ("limits.webhook_max_body_bytes", Kind::Int),
    ("limits.webhook_body_budget_bytes", Kind::Int),
    ("limits.max_header_bytes", Kind::Int),
    ("limits.request_timeout", Kind::Str),
    ("limits.header_read_timeout", Kind::Str),
    ("limits.max_connections", Kind::Int),
    ("limits.rate_per_second", Kind::Int),
    ("limits.rate_burst", Kind::Int),
    ("limits.ws_max_message", Kind::Int),
    ("limits.ws_max_subscriptions", Kind::Int),
    ("limits.ws_max_connections", Kind::Int),
    ("limits.ws_send_buffer", Kind::Int),
    ("limits.ws_max_extra_pairs", Kind::Int),
    ("limits.instance_ttl", Kind::Str),
    ("limits.max_instances", Kind::Int),
    ("limits.ws_ping_interval", Kind::Str),
    ("limits.ws_idle_timeout", Kind::Str),
    ("limits.fetch_timeout", Kind::Str),
    ("limits.last_good_depth", Kind::Int),
    ("limits.last_good_timeout", Kind::Str),
    ("limits.verify_max_objects", Kind::Int),
];

/// Spring Cloud Config's own environment variables, read (below the `CONFHUB_*` ones)
/// so a Spring deployment's keys configure confhub unchanged.
pub const SPRING_ENV: &[(&str, &str)] = &[
    ("ENCRYPT_KEY", "encrypt_passphrase"),
    ("ENCRYPT_SALT", "encrypt_salt"),
    ("ENCRYPT_KEY_STORE_LOCATION", "encrypt_key_store.location"),
    ("ENCRYPT_KEY_STORE_PASSWORD", "encrypt_key_store.password"),
    ("ENCRYPT_KEY_STORE_ALIAS", "encrypt_key_store.alias"),
    ("ENCRYPT_KEY_STORE_SECRET", "encrypt_key_store.secret"),
    ("ENCRYPT_KEY_STORE_TYPE", "encrypt_key_store.type"),
    ("ENCRYPT_RSA_ALGORITHM", "encrypt_rsa.algorithm"),
    ("ENCRYPT_RSA_SALT", "encrypt_rsa.salt"),
    ("ENCRYPT_RSA_STRONG", "encrypt_rsa.strong"),
    (
        "SPRING_CLOUD_CONFIG_SERVER_ENCRYPT_ENABLED",
        "encrypt_enabled",
    ),
];

/// The environment variable of a settings key.
pub(crate) fn env_name(key: &str) -> String {
    format!("CONFHUB_{}", key.to_ascii_uppercase().replace('.', "_"))
}

/// Every overridable key with its environment variable, for docs and `--help`.
pub fn overridable_keys() -> impl Iterator<Item = (&'static str, String)> {
    KEYS.iter().map(|(k, _)| (*k, env_name(k)))
}

fn typed(kind: Kind, raw: &str) -> Result<toml::Value, String> {
    Ok(match kind {
        Kind::Str => toml::Value::String(raw.to_string()),
        Kind::Int => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("`{raw}` is not a whole number"))?,
        ),
        Kind::Bool => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" | "" => false,
            other => return Err(format!("`{other}` is not true or false")),
        }),
        Kind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
    })
}

fn set(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(t) = entry {
                set(t, rest, value);
            }
        }
        None => {
            table.insert(key.to_string(), value);
        }
    }
}

/// Load the effective settings: `file` (if any), then `env` (`CONFHUB_*`), then `flags`
/// (`(key, raw value)` pairs; later wins).
pub fn load(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
    flags: &[(String, String)],
) -> Result<FileSettings, SettingsError> {
    let mut table = match file {
        Some(path) => file_table(path)?,
        None => toml::Table::new(),
    };
    apply_env(&mut table, env)?;
    apply_flags(&mut table, flags)?;
    FileSettings::deserialize(toml::Value::Table(table)).map_err(|e| SettingsError::Invalid {
        key: "(settings)".into(),
        message: e.to_string(),
    })
}

/// The settings file as a table, once it is known to have the file's shape.
fn file_table(path: &Path) -> Result<toml::Table, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.display().to_string(),
        source,
    })?;
    // Parsed into the typed struct first so unknown or mistyped keys are reported
    // against the file, with its line.
    let _: FileSettings = toml::from_str(&text).map_err(|e| SettingsError::File {
        path: path.display().to_string(),
        message: e.to_string().trim().to_string(),
    })?;
    toml::from_str::<toml::Table>(&text).map_err(|e| SettingsError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The type of an overridable key.
fn kind_of(key: &str) -> Option<Kind> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, kind)| *kind)
}

/// Spring's environment variables, then ours (which win).
fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), SettingsError> {
    let spring = SPRING_ENV
        .iter()
        .map(|(name, key)| ((*name).to_string(), *key, kind_of(key).unwrap_or(Kind::Str)));
    let ours = KEYS.iter().map(|(key, kind)| (env_name(key), *key, *kind));
    for (name, key, kind) in spring.chain(ours) {
        let Some(raw) = env.get(&name) else { continue };
        let value = typed(kind, raw).map_err(|message| SettingsError::Override {
            source_name: name.clone(),
            message,
        })?;
        set(table, key, value);
    }
    Ok(())
}

/// `--flag` and `--set key=value` values, in order (a later one wins).
fn apply_flags(table: &mut toml::Table, flags: &[(String, String)]) -> Result<(), SettingsError> {
    for (key, raw) in flags {
        let kind = kind_of(key).ok_or_else(|| SettingsError::Override {
            source_name: format!("--set {key}"),
            message: format!("unknown setting `{key}`"),
        })?;
        let value = typed(kind, raw).map_err(|message| SettingsError::Override {
            source_name: format!("--{}", key.replace('_', "-")),
            message,
        })?;
        set(table, key, value);
    }
    Ok(())
}

/// `30s`, `5m`, `500ms`, `1h`, or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 5m or 500ms"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    })
}

fn duration(
    key: &str,
    value: &Option<String>,
    default: Duration,
) -> Result<Duration, SettingsError> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v).map_err(|message| SettingsError::Invalid {
            key: key.to_string(),
            message,
        }),
    }
}

fn key_file(key: &str, path: &Path) -> Result<Key, SettingsError> {
    let read =
        || -> Result<Key, KeyFileError> { Ok(Key::from_base64(&std::fs::read_to_string(path)?)?) };
    read().map_err(|source| SettingsError::KeyFile {
        key: key.to_string(),
        path: path.display().to_string(),
        source,
    })
}

impl FileSettings {
    /// The listen address (default `127.0.0.1:8888`).
    pub fn listen(&self) -> &str {
        self.listen.as_deref().unwrap_or("127.0.0.1:8888")
    }

    /// The log format (default `text`).
    pub fn log_format(&self) -> &str {
        self.log_format.as_deref().unwrap_or("text")
    }

    /// A copy with every secret replaced by `<redacted>`, for `--print-settings`.
    pub fn masked(&self) -> FileSettings {
        let mut m = self.clone();
        let mask = |v: &mut Option<String>| {
            if v.is_some() {
                *v = Some("<redacted>".into());
            }
        };
        mask(&mut m.git_token);
        mask(&mut m.webhook_secret);
        mask(&mut m.encrypt_key);
        mask(&mut m.encrypt_passphrase);
        if let Some(named) = &mut m.encrypt_named_passphrases {
            named.values_mut().for_each(|v| *v = "<redacted>".into());
        }
        if let Some(store) = &mut m.encrypt_key_store {
            mask(&mut store.password);
            mask(&mut store.secret);
        }
        m
    }

    /// Spring's `encrypt.*` settings as given, checked for empty values.
    fn spring_keys(&self) -> Result<SpringKeySettings, SettingsError> {
        let invalid = |key: &str, message: String| SettingsError::Invalid {
            key: key.to_string(),
            message,
        };
        if self
            .encrypt_passphrase
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            return Err(invalid(
                "encrypt_passphrase",
                format!(
                    "is empty (set in the settings file, by {}, ENCRYPT_KEY or a flag): give a passphrase, or leave it unset",
                    env_name("encrypt_passphrase")
                ),
            ));
        }
        let rsa = self.encrypt_rsa.clone().unwrap_or_default();
        let key_store = match &self.encrypt_key_store {
            None => None,
            Some(store) => {
                let location = store.location.clone().ok_or_else(|| {
                    invalid(
                        "encrypt_key_store.location",
                        "is required with [encrypt_key_store]".into(),
                    )
                })?;
                Some(KeyStoreSettings {
                    location,
                    password: store.password.clone().unwrap_or_default(),
                    alias: store.alias.clone(),
                    secret: store.secret.clone(),
                    kind: store.kind.clone(),
                })
            }
        };
        Ok(SpringKeySettings {
            passphrase: self.encrypt_passphrase.clone(),
            salt: self.encrypt_salt.clone(),
            key_store,
            rsa_algorithm: match &rsa.algorithm {
                Some(a) => a.parse().map_err(|source| SettingsError::Key {
                    key: "encrypt_rsa.algorithm",
                    source,
                })?,
                None => Default::default(),
            },
            rsa_salt: rsa.salt,
            rsa_strong: rsa.strong.unwrap_or(false),
            named_passphrases: self.encrypt_named_passphrases.clone().unwrap_or_default(),
        })
    }

    /// Build the server's [`Settings`], checking every value (in this order, so the
    /// first error reported stays the same whatever else is wrong).
    pub fn into_settings(self) -> Result<Settings, SettingsError> {
        self.refuse_empty_keys()?;
        let mut s = self.base()?;
        s.keyring = self.keyring()?;
        s.pass_ciphers_through = !self.encrypt_enabled.unwrap_or(true);
        crate::auth::Auth::new(&self.tokens)?;
        s.tokens = self.tokens.clone();
        s.tls = self.tls()?;
        s.refuse_empty().map_err(|e| empty(e.key, e.why))?;
        s.limits = self.limits.http()?;
        s.live = self.limits.live()?;
        s.recovery = self.limits.recovery()?;
        Ok(s)
    }

    /// Key material becomes a keyring: blank keys are refused here, the other secrets
    /// on [`Settings::refuse_empty`].
    fn refuse_empty_keys(&self) -> Result<(), SettingsError> {
        if self
            .encrypt_key
            .as_deref()
            .is_some_and(|k| k.trim().is_empty())
        {
            return Err(empty("encrypt_key", "give a base64 key, or leave it unset"));
        }
        let blank_path = |p: &Path| p.to_string_lossy().trim().is_empty();
        if self.encrypt_key_file.as_deref().is_some_and(blank_path) {
            return Err(empty(
                "encrypt_key_file",
                "name the key file, or leave it unset",
            ));
        }
        if self
            .decrypt_key_files
            .iter()
            .flatten()
            .any(|p| blank_path(p))
        {
            return Err(empty("decrypt_key_files", "an entry names no file"));
        }
        Ok(())
    }

    /// The repository and how it is read.
    fn base(&self) -> Result<Settings, SettingsError> {
        let repo = self.repo.clone().ok_or_else(|| SettingsError::Invalid {
            key: "repo".into(),
            message: "is required (--repo, CONFHUB_REPO or `repo` in the settings file)".into(),
        })?;
        let mut s = Settings::new(repo);
        s.branch = self.branch.clone();
        s.search_path = self.search_path.clone();
        s.dev = self.dev.unwrap_or(false);
        s.data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./confhub-data"));
        s.poll = duration("poll", &self.poll, s.poll)?;
        s.git_token = self.git_token.clone().map(Secret::new);
        s.ssh_key = self.ssh_key.clone();
        s.webhook_secret = self.webhook_secret.clone().map(Secret::new);
        if let Some(c) = self.cache_capacity {
            s.cache_capacity = c;
        }
        if let Some(c) = self.cache_max_bytes {
            s.cache_max_bytes = c;
        }
        Ok(s)
    }

    /// Our base64 keys (the first encrypts) and Spring's; none when no key is set.
    fn keyring(&self) -> Result<Option<Keyring>, SettingsError> {
        let mut keys = Vec::new();
        if let Some(k) = &self.encrypt_key {
            keys.push(Key::from_base64(k).map_err(|source| SettingsError::Key {
                key: "encrypt_key",
                source,
            })?);
        }
        if let Some(path) = &self.encrypt_key_file {
            keys.push(key_file("encrypt_key_file", path)?);
        }
        for path in self.decrypt_key_files.iter().flatten() {
            keys.push(key_file("decrypt_key_files", path)?);
        }
        let (spring, named) = crate::crypto::spring::build(&self.spring_keys()?)?;
        Ok(Keyring::with_spring(keys, spring, named))
    }

    fn tls(&self) -> Result<Option<TlsFiles>, SettingsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            _ => Err(SettingsError::Invalid {
                key: "tls_cert".into(),
                message: "tls_cert and tls_key go together".into(),
            }),
        }
    }
}

/// A secret or key file set to nothing.
fn empty(key: &str, why: &str) -> SettingsError {
    SettingsError::Invalid {
        key: key.to_string(),
        message: format!(
            "is empty (set in the settings file, by {} or by a flag): {why}",
            env_name(key)
        ),
    }
}

impl FileLimits {
    fn http(&self) -> Result<HttpLimits, SettingsError> {
        let d = HttpLimits::default();
        Ok(HttpLimits {
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            webhook_max_body_bytes: self
                .webhook_max_body_bytes
                .unwrap_or(d.webhook_max_body_bytes),
            webhook_body_budget_bytes: self
                .webhook_body_budget_bytes
                .unwrap_or(d.webhook_body_budget_bytes),
            max_header_bytes: self.max_header_bytes.unwrap_or(d.max_header_bytes),
            request_timeout: duration(
                "limits.request_timeout",
                &self.request_timeout,
                d.request_timeout,
            )?,
            header_read_timeout: duration(
                "limits.header_read_timeout",
                &self.header_read_timeout,
                d.header_read_timeout,
            )?,
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            rate_per_second: self.rate_per_second.unwrap_or(d.rate_per_second),
            rate_burst: self.rate_burst.unwrap_or(d.rate_burst),
        })
    }

    fn live(&self) -> Result<LiveSettings, SettingsError> {
        let live = LiveSettings::default();
        Ok(LiveSettings {
            ws_max_message: self.ws_max_message.unwrap_or(live.ws_max_message),
            ws_max_subscriptions: self
                .ws_max_subscriptions
                .unwrap_or(live.ws_max_subscriptions),
            ws_max_connections: self.ws_max_connections.unwrap_or(live.ws_max_connections),
            ws_send_buffer: self.ws_send_buffer.unwrap_or(live.ws_send_buffer),
            ws_max_extra_pairs: self.ws_max_extra_pairs.unwrap_or(live.ws_max_extra_pairs),
            instance_ttl: duration("limits.instance_ttl", &self.instance_ttl, live.instance_ttl)?,
            max_instances: self.max_instances.unwrap_or(live.max_instances),
            ws_ping_interval: duration(
                "limits.ws_ping_interval",
                &self.ws_ping_interval,
                live.ws_ping_interval,
            )?,
            ws_idle_timeout: duration(
                "limits.ws_idle_timeout",
                &self.ws_idle_timeout,
                live.ws_idle_timeout,
            )?,
            fetch_timeout: duration(
                "limits.fetch_timeout",
                &self.fetch_timeout,
                live.fetch_timeout,
            )?,
            ..live
        })
    }

    fn recovery(&self) -> Result<RecoverySettings, SettingsError> {
        let recovery = RecoverySettings::default();
        Ok(RecoverySettings {
            last_good_depth: self.last_good_depth.unwrap_or(recovery.last_good_depth),
            last_good_timeout: duration(
                "limits.last_good_timeout",
                &self.last_good_timeout,
                recovery.last_good_timeout,
            )?,
            verify_max_objects: self
                .verify_max_objects
                .unwrap_or(recovery.verify_max_objects),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_overridable_key_exists_in_the_file_shape() {
        for (key, kind) in KEYS {
            let sample = match kind {
                Kind::Str => "1s",
                Kind::Int => "1",
                Kind::Bool => "true",
                Kind::List => "a,b",
            };
            let got = load(None, &env(&[(&env_name(key), sample)]), &[]);
            assert!(got.is_ok(), "{key}: {got:?}");
        }
    }

    #[test]
    fn precedence_is_file_then_env_then_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(
            &path,
            "repo = \"/file\"\nbranch = \"file\"\npoll = \"1m\"\n[limits]\nmax_connections = 5\n",
        )
        .unwrap();
        let s = load(
            Some(&path),
            &env(&[
                ("CONFHUB_BRANCH", "env"),
                ("CONFHUB_POLL", "2m"),
                ("CONFHUB_LIMITS_MAX_CONNECTIONS", "6"),
            ]),
            &[("poll".into(), "3m".into())],
        )
        .unwrap();
        assert_eq!(s.repo.as_deref(), Some("/file"));
        assert_eq!(s.branch.as_deref(), Some("env"));
        assert_eq!(s.poll.as_deref(), Some("3m"));
        assert_eq!(s.limits.max_connections, Some(6));
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "repo = \"/x\"\nlisten_addr = \"x\"\n").unwrap();
        let e = load(Some(&path), &BTreeMap::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_addr"), "{e}");
        std::fs::write(&path, "[limits]\nmax_conns = 1\n").unwrap();
        let e = load(Some(&path), &BTreeMap::new(), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_conns"), "{e}");
        let e = load(
            None,
            &env(&[("CONFHUB_LIMITS_MAX_CONNECTIONS", "many")]),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("CONFHUB_LIMITS_MAX_CONNECTIONS") && e.contains("many"),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_masked() {
        let s = load(
            None,
            &env(&[
                ("CONFHUB_WEBHOOK_SECRET", "hush"),
                ("CONFHUB_GIT_TOKEN", "tok"),
            ]),
            &[],
        )
        .unwrap();
        let shown = toml::to_string(&s.masked()).unwrap();
        assert!(
            !shown.contains("hush") && !shown.contains("tok\""),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn empty_secrets_and_key_files_are_refused_by_name() {
        for (var, key) in [
            ("CONFHUB_WEBHOOK_SECRET", "webhook_secret"),
            ("CONFHUB_GIT_TOKEN", "git_token"),
            ("CONFHUB_ENCRYPT_KEY", "encrypt_key"),
            ("CONFHUB_ENCRYPT_KEY_FILE", "encrypt_key_file"),
            ("CONFHUB_SSH_KEY", "ssh_key"),
        ] {
            for value in ["", "  "] {
                let e = load(None, &env(&[("CONFHUB_REPO", "/x"), (var, value)]), &[])
                    .unwrap()
                    .into_settings()
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains(&format!("`{key}`")) && e.contains("empty") && e.contains(var),
                    "{var}={value:?}: {e}"
                );
            }
        }
        let e = load(
            None,
            &env(&[
                ("CONFHUB_REPO", "/x"),
                ("CONFHUB_TLS_CERT", "/c.pem"),
                ("CONFHUB_TLS_KEY", ""),
            ]),
            &[],
        )
        .unwrap()
        .into_settings()
        .unwrap_err()
        .to_string();
        assert!(e.contains("`tls_key`") && e.contains("empty"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("5 minutes").is_err());
    }
}
