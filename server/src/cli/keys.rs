//! The key flags `check` and `encrypt` share: our base64 keys and Spring's `encrypt.*`
//! settings, each also read from its environment variable.

use std::path::PathBuf;

use anyhow::Context;
use confhub_server::crypto::spring::{KeyStoreSettings, SpringKeySettings};
use confhub_server::crypto::{Key, Keyring};

/// Where the keys for `{cipher}` values come from.
#[derive(clap::Args)]
pub(crate) struct KeyArgs {
    /// The encryption key, base64 of 32 bytes (prefer the file or the environment).
    #[arg(
        long = "encrypt-key",
        env = "CONFHUB_ENCRYPT_KEY",
        hide_env_values = true,
        hide = true
    )]
    key: Option<String>,
    /// File holding the encryption key (base64 of 32 bytes); new values are encrypted with it.
    #[arg(long, env = "CONFHUB_ENCRYPT_KEY_FILE")]
    encrypt_key_file: Option<PathBuf>,
    /// Older key files still accepted for decryption (key rotation); repeatable.
    #[arg(long)]
    decrypt_key_file: Vec<PathBuf>,
    /// Spring's `encrypt.key`: a passphrase (or a PEM RSA private key) for Spring's
    /// `{cipher}` values; Spring's own `ENCRYPT_KEY` variable is read too.
    #[arg(
        long,
        env = "CONFHUB_ENCRYPT_PASSPHRASE",
        hide_env_values = true,
        hide = true
    )]
    encrypt_passphrase: Option<String>,
    /// Spring's `encrypt.salt` (hex, default `deadbeef`); `ENCRYPT_SALT` is read too.
    #[arg(long, env = "CONFHUB_ENCRYPT_SALT")]
    encrypt_salt: Option<String>,
    /// Spring's `encrypt.key-store.location`: a PKCS#12 keystore or PEM file with an RSA key.
    #[arg(long, env = "CONFHUB_ENCRYPT_KEY_STORE_LOCATION")]
    key_store: Option<PathBuf>,
    /// Spring's `encrypt.key-store.password`.
    #[arg(
        long,
        env = "CONFHUB_ENCRYPT_KEY_STORE_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    key_store_password: Option<String>,
    /// Spring's `encrypt.key-store.alias`: the default key of the keystore.
    #[arg(long, env = "CONFHUB_ENCRYPT_KEY_STORE_ALIAS")]
    key_store_alias: Option<String>,
}

/// Spring's own environment variable for `name`, when ours is not set.
fn spring_env(ours: &Option<String>, spring: &str) -> Option<String> {
    ours.clone()
        .or_else(|| std::env::var(spring).ok().filter(|v| !v.is_empty()))
}

impl KeyArgs {
    /// Every key given, or `None` when none is.
    pub(crate) fn keyring(&self) -> anyhow::Result<Option<Keyring>> {
        let keys = self.base64_keys()?;
        let (default, named) = confhub_server::crypto::spring::build(&self.spring())
            .map_err(|e| anyhow::anyhow!("{}: {}", e.setting, e.message))?;
        Ok(Keyring::with_spring(keys, default, named))
    }

    /// Our own keys: the one in the environment, then the key files.
    fn base64_keys(&self) -> anyhow::Result<Vec<Key>> {
        let mut keys = Vec::new();
        if let Some(k) = &self.key {
            keys.push(Key::from_base64(k).context("CONFHUB_ENCRYPT_KEY")?);
        }
        for file in self.encrypt_key_file.iter().chain(&self.decrypt_key_file) {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading key file {}", file.display()))?;
            keys.push(
                Key::from_base64(&text).with_context(|| format!("key file {}", file.display()))?,
            );
        }
        Ok(keys)
    }

    /// Spring's `encrypt.*` settings, from the flags or Spring's variables.
    fn spring(&self) -> SpringKeySettings {
        let store_location = self
            .key_store
            .clone()
            .or_else(|| std::env::var_os("ENCRYPT_KEY_STORE_LOCATION").map(PathBuf::from));
        SpringKeySettings {
            passphrase: spring_env(&self.encrypt_passphrase, "ENCRYPT_KEY"),
            salt: spring_env(&self.encrypt_salt, "ENCRYPT_SALT"),
            key_store: store_location.map(|location| KeyStoreSettings {
                location,
                password: spring_env(&self.key_store_password, "ENCRYPT_KEY_STORE_PASSWORD")
                    .unwrap_or_default(),
                alias: spring_env(&self.key_store_alias, "ENCRYPT_KEY_STORE_ALIAS"),
                secret: None,
                kind: None,
            }),
            ..Default::default()
        }
    }
}
