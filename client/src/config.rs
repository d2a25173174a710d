//! [`Config`]: one resolved configuration, as fetched, pushed or read from the cache.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;
use crate::path::lookup;
use crate::wire::ConfigResponse;

/// Where a [`Config`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// Fetched from, or pushed by, the server with this base URL.
    Server {
        /// The server's base URL, as given to the builder.
        url: String,
    },
    /// Read from the last-known-good cache because no server was reachable.
    Cache {
        /// The cache file.
        path: PathBuf,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Server { url } => write!(f, "server {url}"),
            Origin::Cache { path } => write!(f, "cache {}", path.display()),
        }
    }
}

/// A resolved configuration of one (service, env): its values, its version (the commit)
/// and its digest.
///
/// ```
/// use confhub_client::Config;
/// use serde_json::json;
///
/// let config = Config::from_values(json!({"db": {"pool": 60, "hosts": ["a", "b"]}}));
/// assert_eq!(config.get::<u32>("db.pool")?, 60);
/// assert_eq!(config.get::<String>("db.hosts[1]")?, "b");
/// assert!(config.get::<u32>("db.missing").is_err());
///
/// #[derive(serde::Deserialize)]
/// struct Db { pool: u32 }
/// #[derive(serde::Deserialize)]
/// struct App { db: Db }
/// assert_eq!(config.deserialize::<App>()?.db.pool, 60);
/// # Ok::<(), confhub_client::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    response: ConfigResponse,
    origin: Origin,
}

impl Config {
    pub(crate) fn new(response: ConfigResponse, origin: Origin) -> Self {
        Config { response, origin }
    }

    /// A config holding `values` and nothing else (empty version and digest, no server):
    /// for tests and examples that need a [`Config`] without a server.
    pub fn from_values(values: Value) -> Self {
        Config {
            response: ConfigResponse {
                service: String::new(),
                env: String::new(),
                label: String::new(),
                version: String::new(),
                digest: String::new(),
                values,
                sources: Vec::new(),
                rollout: None,
            },
            origin: Origin::Server { url: String::new() },
        }
    }

    /// The value at `path`, deserialized into `T`.
    ///
    /// `path` is dotted with list indices (`db.pool`, `features[0]`, `a.b[1].c`), or a
    /// JSON pointer when it starts with `/` (`/db/pool`, for keys that contain dots). The
    /// empty path is the whole config.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let value = lookup(&self.response.values, path).ok_or_else(|| Error::MissingKey {
            path: path.to_string(),
        })?;
        T::deserialize(value).map_err(|source| Error::Deserialize {
            path: Some(path.to_string()),
            source,
        })
    }

    /// The raw value at `path` (same syntax as [`get`](Self::get)), if present.
    pub fn get_value(&self, path: &str) -> Option<&Value> {
        lookup(&self.response.values, path)
    }

    /// The whole config deserialized into `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, Error> {
        T::deserialize(&self.response.values)
            .map_err(|source| Error::Deserialize { path: None, source })
    }

    /// The resolved, nested values.
    pub fn values(&self) -> &Value {
        &self.response.values
    }

    /// The version: the commit sha the config was resolved at (a content hash for
    /// servers in `--dev` mode).
    pub fn version(&self) -> &str {
        &self.response.version
    }

    /// The rollout this config comes from, when the server picked this instance for one
    /// (README "Gray release").
    pub fn rollout(&self) -> Option<&str> {
        self.response.rollout.as_deref()
    }

    /// sha256 of the canonical JSON of the values, as computed by the server; equal
    /// digests mean equal values.
    pub fn digest(&self) -> &str {
        &self.response.digest
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.response.service
    }

    /// The environment(s), as sent (`prod` or `prod,eu`).
    pub fn env(&self) -> &str {
        &self.response.env
    }

    /// The label (branch, tag or sha) the config was read at.
    pub fn label(&self) -> &str {
        &self.response.label
    }

    /// The files that contributed, highest precedence first. Empty for configs that
    /// arrived over the WebSocket, whose frames do not carry it.
    pub fn sources(&self) -> &[String] {
        &self.response.sources
    }

    /// Where this config came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// True when this config was read from the last-known-good cache.
    pub fn is_from_cache(&self) -> bool {
        matches!(self.origin, Origin::Cache { .. })
    }

    /// The wire form of this config.
    pub fn as_response(&self) -> &ConfigResponse {
        &self.response
    }

    /// Consume into the wire form.
    pub fn into_response(self) -> ConfigResponse {
        self.response
    }
}
