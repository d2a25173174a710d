//! `confhub health`: exit 0 if the URL answers 2xx, for container health checks in
//! images without curl.

use std::process::ExitCode;

pub(crate) fn run(url: &str) -> ExitCode {
    match super::remote::http_get(url, None) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
