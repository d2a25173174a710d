//! Resolution alone (ARCHITECTURE.md §2): merging parsed layers in precedence order and
//! resolving `${…}` placeholders, on a small and a large pair. Pure CPU, no git.
//!
//! `cargo bench -p confhub-server --bench resolve` (add `-- --test` for a smoke run).

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;

use confhub_server::resolve::{digest_of, resolve, ParsedFile};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn parsed(path: &str, text: &str) -> Arc<ParsedFile> {
    Arc::new(
        ParsedFile::from_text(path, text)
            .unwrap_or_else(|e| panic!("bench input {path} does not parse: {e}")),
    )
}

/// The example repository's shape: four small files, a few placeholders.
fn small() -> Vec<Arc<ParsedFile>> {
    vec![
        parsed(
            "orders-prod.yml",
            "db:\n  pool: 60\n  host: orders-db.prod\nfeatures: [fast-checkout]\n",
        ),
        parsed(
            "application-prod.yml",
            "db:\n  host: db.prod\nlogging:\n  level: WARN\n",
        ),
        parsed(
            "orders.yml",
            "app:\n  name: orders\ndb:\n  pool: 20\n  schema: orders\nurl: \"jdbc:postgresql://${db.host}:${db.port:5432}/${db.schema}\"\n",
        ),
        parsed(
            "application.yml",
            "server:\n  port: 8080\ndb:\n  host: localhost\n  timeout-ms: 3000\nlogging:\n  level: INFO\n",
        ),
    ]
}

/// Four layers of 2,000 keys each (20 groups × 100), overlapping, with 200 placeholders.
fn large() -> Vec<Arc<ParsedFile>> {
    let layer = |name: &str, salt: usize, placeholders: bool| {
        let mut s = String::new();
        for g in 0..20 {
            let _ = writeln!(s, "group{g:02}:");
            for k in 0..100 {
                if placeholders && k % 10 == 0 {
                    let _ = writeln!(
                        s,
                        "  key{k:03}: \"${{group{:02}.key{:03}}}-${{missing.key:dflt}}\"",
                        (g + 1) % 20,
                        k + 1
                    );
                } else {
                    let _ = writeln!(s, "  key{k:03}: value-{salt}-{g}-{k}");
                }
            }
        }
        parsed(name, &s)
    };
    vec![
        layer("big-prod.yml", 3, true),
        layer("application-prod.yml", 2, false),
        layer("big.yml", 1, false),
        layer("application.yml", 0, false),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("resolve");
    let small = small();
    g.throughput(Throughput::Elements(1));
    g.bench_function("small_4_layers", |b| {
        b.iter(|| resolve(black_box(small.clone())))
    });
    let large = large();
    g.bench_function("large_4x2000_keys", |b| {
        b.iter(|| resolve(black_box(large.clone())))
    });
    let resolved = resolve(large).unwrap_or_else(|e| panic!("large does not resolve: {e}"));
    g.bench_function("digest_large", |b| {
        b.iter(|| digest_of(black_box(&resolved.values)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
