//! `confhub encrypt` (stdin into a `{cipher}…` value) and `confhub keygen` (a fresh key).

use std::process::ExitCode;

use anyhow::Context;
use confhub_server::crypto::Key;

use super::keys::KeyArgs;

#[derive(clap::Args)]
pub(crate) struct EncryptArgs {
    #[command(flatten)]
    keys: KeyArgs,
}

pub(crate) fn run(args: EncryptArgs) -> anyhow::Result<ExitCode> {
    let keyring = args
        .keys
        .keyring()?
        .context("no key: give --encrypt-key-file or set CONFHUB_ENCRYPT_KEY")?;
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut plain).context("reading stdin")?;
    // A trailing newline from `echo` is almost never part of the secret.
    let plain = plain.strip_suffix('\n').unwrap_or(&plain);
    println!("'{}'", keyring.encrypt(plain)?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn keygen() -> anyhow::Result<ExitCode> {
    println!("{}", Key::generate());
    Ok(ExitCode::SUCCESS)
}
