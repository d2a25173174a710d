//! The subcommands of the `confhub` binary, one module each; `main.rs` parses the
//! arguments and dispatches here. This folder owns what only the binary does: reading
//! flags and the environment, printing results and choosing exit codes. Everything a
//! subcommand computes comes from the `confhub_server` library (`tools::check`,
//! `tools::history`, `settings::file`, `crypto`, `auth`, `run`).
//!
//! - `serve`: settings file + env + flags, then the library's `run` on a bound listener;
//! - `check`: `tools::check` over a repository, `file:line: message` or JSON;
//! - `get`, `history`, `diff`: ask a running server, or (`history`, `diff`) read a
//!   repository directly through `tools::history`;
//! - `instances`: who holds which config, from a running server;
//! - `rollout promote|abandon`: the commit that ends a rollout, from `tools::rollout`;
//! - `encrypt` (and `keygen`): `{cipher}` values from the keys in `keys`;
//! - `token`: `token new`, a fresh token and its `[[tokens]]` entry;
//! - `health`: a 2xx probe for container health checks;
//! - `keys`: the key flags `check` and `encrypt` share; `remote`: where `history` and
//!   `diff` read from, and the one HTTP GET the client subcommands make.

pub(crate) mod check;
pub(crate) mod diff;
pub(crate) mod encrypt;
pub(crate) mod get;
pub(crate) mod health;
pub(crate) mod history;
pub(crate) mod instances;
pub(crate) mod keys;
pub(crate) mod remote;
pub(crate) mod rollout;
pub(crate) mod serve;
pub(crate) mod token;
