//! `confhub token new`: a fresh random token on stdout, and on stderr the `[[tokens]]`
//! entry (its hash, never the token) to paste into the settings file.

use std::process::ExitCode;

use confhub_server::auth::{generate_token, token_hash, Auth, TokenConfig};

#[derive(clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a fresh random token and the `[[tokens]]` entry (its hash) for the settings file.
    New {
        /// Who will hold the token.
        #[arg(long)]
        name: String,
        /// `service/env` glob to grant read access to (e.g. `orders/*`, `*/staging`), or `admin`; repeatable.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
}

pub(crate) fn run(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::New { name, scopes } => new(name, scopes),
    }
}

fn new(name: String, scopes: Vec<String>) -> anyhow::Result<ExitCode> {
    let token = generate_token();
    let entry = TokenConfig {
        name,
        sha256: token_hash(&token),
        scopes: scopes.into_iter().map(read_scope).collect(),
    };
    // The entry is checked as the server will check it, so a bad scope fails here.
    Auth::new(std::slice::from_ref(&entry))?;
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        tokens: [&'a TokenConfig; 1],
    }
    eprintln!("token (give it to the client; it is not stored anywhere):");
    println!("{token}");
    eprintln!("\nadd to the settings file:");
    eprint!("{}", toml::to_string(&Entry { tokens: [&entry] })?);
    Ok(ExitCode::SUCCESS)
}

/// `orders/*` is short for `read:orders/*`.
fn read_scope(s: String) -> String {
    if s == "admin" || s.starts_with("read:") {
        s
    } else {
        format!("read:{s}")
    }
}
