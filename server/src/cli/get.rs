//! `confhub get`: the resolved config of a pair from a running server, printed as served.

use std::process::ExitCode;

#[derive(clap::Args)]
pub(crate) struct GetArgs {
    /// Service name.
    service: String,
    /// Environment(s), e.g. `prod` or `prod,eu`.
    env: String,
    /// Server URL.
    #[arg(long, env = "CONFHUB_SERVER", default_value = "http://127.0.0.1:8888")]
    server: String,
    /// Access token.
    #[arg(long, env = "CONFHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(long, default_value = "json", value_parser = ["json", "yaml", "properties", "env"])]
    format: String,
    /// Branch, tag or sha.
    #[arg(long)]
    label: Option<String>,
}

pub(crate) fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    let mut url = format!(
        "{}/v1/config/{}/{}?format={}",
        args.server.trim_end_matches('/'),
        args.service,
        args.env,
        args.format
    );
    if let Some(label) = &args.label {
        url.push_str(&format!("&label={label}"));
    }
    print!("{}", super::remote::http_get(&url, args.token.as_deref())?);
    Ok(ExitCode::SUCCESS)
}
