#![allow(clippy::unwrap_used)]
use confhub_server::parse::parse_file;
use confhub_server::resolve::{resolve, ParsedFile};
use std::sync::Arc;
fn f(text: &str) -> Arc<ParsedFile> {
    Arc::new(ParsedFile {
        path: "a.yml".into(),
        values: parse_file("a.yml", text.as_bytes()).unwrap(),
        text: text.into(),
        secrets: vec![],
    })
}
#[test]
fn chain() {
    let n: usize = std::env::var("N").unwrap().parse().unwrap();
    let mut t = String::new();
    for i in 0..n {
        t.push_str(&format!("k{i}: ${{k{}}}\n", i + 1));
    }
    t.push_str(&format!("k{n}: end\n"));
    let file = f(&t);
    let r = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || resolve(vec![file]).map(|r| r.values["k0"].clone()))
        .unwrap()
        .join()
        .unwrap();
    println!("chain {n}: {r:?} ({} bytes)", t.len());
}
