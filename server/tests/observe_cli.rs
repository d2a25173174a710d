//! The real `confhub serve` binary's logs: a request carrying a W3C `traceparent` is
//! logged with its trace id and request id, in both `--log-format json` and `text`,
//! and the `x-request-id` is echoed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestRepo;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(20);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("orders.yml", "db:\n  pool: 7\n").commit("init");
    repo
}

/// A running `confhub serve`, killed on drop, whose stderr lines arrive on `lines`.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(repo: &Path, format: &str) -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_confhub"))
            .args(["serve", "--repo"])
            .arg(repo)
            .args(["--listen", "127.0.0.1:0", "--log-format", format])
            .arg("--data-dir")
            .arg(data.path())
            .env("RUST_LOG", "info,confhub_server=debug")
            .env_remove("CONFHUB_WEBHOOK_SECRET")
            .current_dir(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start confhub serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            lines,
            seen: Vec::new(),
            _data: data,
        }
    }

    /// The first stderr line (seen or to come, within [`DEADLINE`]) that satisfies `pred`.
    fn line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no log line for {what} within {DEADLINE:?}; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// `127.0.0.1:port` from the "listening" line.
    fn addr(&mut self) -> String {
        let line = self.line("listening", |l| l.contains("listening"));
        let start = line.find("127.0.0.1:").expect("an address");
        line[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect()
    }
}

/// A raw HTTP/1.1 GET; returns the response head and body.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        let mut resp = String::new();
        stream.read_to_string(&mut resp).unwrap();
        // Until the first snapshot is loaded, config requests answer 503.
        if !resp.starts_with("HTTP/1.1 503") || Instant::now() > deadline {
            return resp;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn check_format(format: &str) {
    let repo = repo();
    let mut server = Server::start(repo.path(), format);
    let addr = server.addr();
    let request_id = format!("cli-test-{format}");
    let resp = get(
        &addr,
        "/v1/config/orders/default",
        &[
            ("traceparent", &format!("00-{TRACE_ID}-00f067aa0ba902b7-01")),
            ("x-request-id", &request_id),
        ],
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains(&format!("x-request-id: {request_id}")),
        "{resp}"
    );
    let line = server.line("the request with the trace id", |l| {
        l.contains(TRACE_ID) && l.contains("request finished")
    });
    assert!(line.contains(&request_id), "{line}");
    if format == "json" {
        let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(event["span"]["trace_id"], TRACE_ID, "{line}");
        assert_eq!(event["span"]["request_id"], request_id.as_str(), "{line}");
        assert_eq!(
            event["span"]["route"], "/v1/config/{service}/{env}",
            "{line}"
        );
    }
}

#[test]
fn json_logs_carry_the_trace_id() {
    check_format("json");
}

#[test]
fn text_logs_carry_the_trace_id() {
    check_format("text");
}
