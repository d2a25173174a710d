//! Typed errors of the library. A [`ConfigError`] always says what was wrong and where
//! (file, line, key), because it ends up in front of the person who wrote the config.

use std::fmt;

/// What kind of problem a [`ConfigError`] is; doubles as the stable API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file could not be parsed (bad YAML/JSON/properties, duplicate key, non-map top level).
    Parse,
    /// A placeholder names a missing key, or placeholders form a cycle.
    Placeholder,
    /// `confhub.yml` is invalid, or names a schema that is missing or invalid.
    Manifest,
    /// The resolved config violates its service's JSON Schema.
    Schema,
    /// An encrypted value cannot be decrypted.
    Secret,
    /// Reading the repository failed.
    Git,
}

impl ErrorKind {
    /// The API error code for this kind of problem.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Parse
            | ErrorKind::Placeholder
            | ErrorKind::Manifest
            | ErrorKind::Schema
            | ErrorKind::Secret => "unresolvable",
            ErrorKind::Git => "git",
        }
    }
}

/// A config that cannot be resolved, with its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// What kind of problem this is.
    pub kind: ErrorKind,
    /// Repository-relative path of the file at fault.
    pub file: Option<String>,
    /// 1-based line in `file`, when known.
    pub line: Option<u64>,
    /// Dotted key path at fault, when there is one.
    pub key: Option<String>,
    /// What was wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            file: None,
            line: None,
            key: None,
            message: message.into(),
        }
    }

    pub(crate) fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    pub(crate) fn at_line(mut self, line: Option<u64>) -> Self {
        self.line = line;
        self
    }

    pub(crate) fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The error as the API's JSON body.
    pub fn to_body(&self) -> confhub_client::wire::ErrorBody {
        confhub_client::wire::ErrorBody {
            error: self.kind.code().to_string(),
            message: self.to_string(),
            file: self.file.clone(),
            line: self.line,
            key: self.key.clone(),
        }
    }
}

/// `file:line: message`, the shape editors and CI logs understand.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: ")?,
            (Some(file), None) => write!(f, "{file}: ")?,
            _ => {}
        }
        f.write_str(&self.message)
    }
}

/// Errors of the git or directory source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// libgit2 failed.
    #[error("git: {context}: {source}")]
    Git {
        /// What we were doing.
        context: String,
        /// The libgit2 error.
        #[source]
        source: git2::Error,
    },
    /// Filesystem access failed.
    #[error("{path}: {source}")]
    Io {
        /// The path we tried to read.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The tracked branch does not exist.
    #[error("branch `{0}` not found in the repository")]
    NoBranch(String),
    /// The clone's object store cannot be read in full (and was not repaired).
    #[error("the clone at {path} is damaged: {detail}")]
    Damaged {
        /// The clone.
        path: String,
        /// The first object that could not be read, and why.
        detail: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
    /// The `search_path` setting cannot be read.
    #[error("search_path `{path}` {reason}")]
    SearchPath {
        /// The folder (or whole setting) at fault.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl SourceError {
    pub(crate) fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> SourceError {
        let context = context.into();
        move |source| SourceError::Git { context, source }
    }

    /// Does this say the object store is damaged (an object missing, truncated or
    /// corrupt), rather than the network, the credentials or the settings being wrong?
    pub fn is_object_error(&self) -> bool {
        match self {
            SourceError::Git { source, .. } => is_object_error(source),
            SourceError::Damaged { .. } => true,
            _ => false,
        }
    }
}

/// libgit2 reports unreadable objects and packs in these classes; network, credential
/// and filesystem permission problems come in others (`Net`, `Http`, `Ssh`, `Os`, …).
pub(crate) fn is_object_error(e: &git2::Error) -> bool {
    use git2::ErrorClass;
    matches!(
        e.class(),
        ErrorClass::Odb | ErrorClass::Object | ErrorClass::Zlib | ErrorClass::Tree
    )
}

/// Why a lookup has no config to serve.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No branch, tag or commit by that name.
    #[error("unknown label `{0}`")]
    UnknownLabel(String),
    /// The manifest declares environments and this is not one of them.
    #[error("unknown environment `{0}`: not declared in confhub.yml")]
    UnknownEnv(String),
    /// The config cannot be resolved at that version.
    #[error(transparent)]
    Config(ConfigError),
    /// Reading the repository failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The asker's token may not read this (the message says why).
    #[error("{0}")]
    Forbidden(String),
}

/// The error code a failed lookup answers with, the same over HTTP (the `error` field
/// of the body, ARCHITECTURE.md §4) and WebSocket (`error` frames, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupCode {
    /// `unknown_label`: no branch, tag or commit by that name.
    UnknownLabel,
    /// `unknown_env`: not declared in `confhub.yml`.
    UnknownEnv,
    /// `unresolvable` (or `git` for a repository failure met while resolving).
    Config(ErrorKind),
    /// `forbidden`: outside the token's scopes.
    Forbidden,
    /// `source`: reading the repository failed.
    Source,
}

impl LookupCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            LookupCode::UnknownLabel => "unknown_label",
            LookupCode::UnknownEnv => "unknown_env",
            LookupCode::Config(kind) => kind.code(),
            LookupCode::Forbidden => "forbidden",
            LookupCode::Source => "source",
        }
    }
}

impl LookupError {
    /// Its error code.
    pub fn code(&self) -> LookupCode {
        match self {
            LookupError::UnknownLabel(_) => LookupCode::UnknownLabel,
            LookupError::UnknownEnv(_) => LookupCode::UnknownEnv,
            LookupError::Config(c) => LookupCode::Config(c.kind),
            LookupError::Forbidden(_) => LookupCode::Forbidden,
            LookupError::Source(_) => LookupCode::Source,
        }
    }

    /// The error as the JSON error body both surfaces send: its code and message, and
    /// the file, line and key of a config error.
    pub fn to_body(&self) -> confhub_client::wire::ErrorBody {
        match self {
            LookupError::Config(c) => c.to_body(),
            other => confhub_client::wire::ErrorBody {
                error: other.code().as_str().to_string(),
                message: other.to_string(),
                file: None,
                line: None,
                key: None,
            },
        }
    }
}

/// Errors that stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// I/O error on the listener.
    #[error("server i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The repository could not be opened, cloned or read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An access token's settings are invalid.
    #[error("settings: {0}")]
    Token(#[from] TokenError),
    /// A secret or key file is set but blank.
    #[error("settings: {0}")]
    EmptySetting(#[from] EmptySetting),
    /// The TLS certificate or key cannot be used.
    #[error("settings: {0}")]
    Tls(#[from] TlsError),
    /// The webhook body limits contradict each other.
    #[error("settings: {0}")]
    WebhookBudget(#[from] BudgetError),
}

/// Why TLS could not be set up (`net::tls_acceptor`).
#[derive(Debug, thiserror::Error)]
#[error("TLS: {path}: {message}")]
pub struct TlsError {
    /// The certificate or key file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Why the webhook body budget (`http::webhook::BodyBudget`) cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A single body could never fit.
    #[error("setting `limits.webhook_body_budget_bytes` ({budget}) is smaller than `limits.webhook_max_body_bytes` ({max_body}): no signed webhook could ever be read")]
    SmallerThanOneBody {
        /// The budget.
        budget: usize,
        /// The per-body limit.
        max_body: usize,
    },
    /// More than the budget can count.
    #[error(
        "setting `limits.webhook_body_budget_bytes` ({0}) is over the maximum of 4294967295 bytes"
    )]
    TooLarge(usize),
}

/// Errors of `confhub diff --repo`.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// A bad service, env or label name.
    #[error(transparent)]
    Name(#[from] crate::names::NameError),
    /// No branch, tag or commit by that name.
    #[error("unknown label `{0}`")]
    UnknownLabel(String),
    /// The pair does not resolve at one of the labels.
    #[error(transparent)]
    Config(ConfigError),
    /// Reading the repository failed.
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// A settings error naming the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("token `{name}`: {message}")]
pub struct TokenError {
    /// The token's name.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

/// A secret or key file that is set but blank. Never "no secret": an empty webhook
/// secret would let anyone compute a valid signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting `{key}` is empty: {why}")]
pub struct EmptySetting {
    /// The settings key (`webhook_secret`, `tls_key`, …).
    pub key: &'static str,
    /// Why that matters, and what to do instead.
    pub why: &'static str,
}
