//! `confhub instances [SERVICE [ENV]]`: which instance holds which config, from a running
//! server's `GET /v1/instances`, one line per instance and pair.

use std::process::ExitCode;

use anyhow::Context;
use confhub_client::wire::InstancesResponse;

#[derive(clap::Args)]
pub(crate) struct InstancesArgs {
    /// Only instances of this service.
    service: Option<String>,
    /// Only this environment (`prod`, or `prod,eu` as the instance asked).
    env: Option<String>,
    /// Server URL.
    #[arg(long, env = "CONFHUB_SERVER", default_value = "http://127.0.0.1:8888")]
    server: String,
    /// Access token.
    #[arg(long, env = "CONFHUB_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the server's JSON answer as it is.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: InstancesArgs) -> anyhow::Result<ExitCode> {
    let mut url = format!("{}/v1/instances", args.server.trim_end_matches('/'));
    let query: Vec<String> = [("service", &args.service), ("env", &args.env)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    let body = super::remote::http_get(&url, args.token.as_deref())?;
    if args.json {
        println!("{body}");
        return Ok(ExitCode::SUCCESS);
    }
    let answer: InstancesResponse =
        serde_json::from_str(&body).with_context(|| format!("reading the answer of {url}"))?;
    print!("{}", table(&answer));
    Ok(ExitCode::SUCCESS)
}

/// Columns: instance, pair, state, digest and version (short), rollout, transport,
/// address, last seen, error.
fn table(answer: &InstancesResponse) -> String {
    let short = |s: &Option<String>| {
        s.as_deref()
            .map_or("-".to_string(), |s| s.chars().take(12).collect())
    };
    let mut rows = vec![[
        "INSTANCE",
        "PAIR",
        "STATE",
        "DIGEST",
        "VERSION",
        "ROLLOUT",
        "TRANSPORT",
        "ADDRESS",
        "LAST SEEN",
        "ERROR",
    ]
    .map(str::to_string)];
    for i in &answer.instances {
        let id = if i.anonymous {
            format!("({})", i.id)
        } else {
            i.id.clone()
        };
        for p in &i.pairs {
            rows.push([
                id.clone(),
                format!("{}/{}", p.service, p.env),
                p.state.clone(),
                short(&p.digest),
                short(&p.version),
                p.rollout.clone().unwrap_or_else(|| "-".into()),
                i.transport.clone(),
                i.address.clone(),
                i.last_seen.clone(),
                p.error.clone().unwrap_or_default(),
            ]);
        }
    }
    let widths: Vec<usize> = (0..10)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
