//! `Watched::get()` (ARCHITECTURE.md §7: lock-free): the cost of reading the current value of a
//! watched config, alone and while another thread reads it too, against a real
//! confhub server run in-process on a `--dev` directory.
//!
//! `cargo bench -p confhub-client --bench watched` (add `-- --test` for a smoke run).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use confhub_client::{Client, Watched};
use criterion::{criterion_group, criterion_main, Criterion};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Settings {
    db: Db,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Db {
    host: String,
    pool: u32,
}

/// A server on a temporary `--dev` directory, running on its own runtime until dropped.
struct Server {
    url: String,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let files = [
            ("application.yml", "db:\n  host: localhost\n  pool: 10\n"),
            ("application-prod.yml", "db:\n  host: db.prod\n"),
            ("orders.yml", "features: [audit, metrics]\n"),
            ("orders-prod.yml", "db:\n  pool: 60\n"),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("{e}"));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!(
            "http://{}",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let mut settings = confhub_server::Settings::new(dir.path().display().to_string());
        settings.dev = true;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = confhub_server::run(listener, settings, shutdown).await {
                eprintln!("server failed: {e}");
            }
        });
        Server {
            url,
            runtime,
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn watch(&self) -> Watched<Settings> {
        let client = Client::builder()
            .server(self.url.clone())
            .service("orders")
            .env("prod")
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        self.runtime.block_on(async {
            for _ in 0..200 {
                match client.watch::<Settings>().await {
                    Ok(w) => return w,
                    Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
                }
            }
            panic!("the in-process server never served orders/prod")
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn bench(c: &mut Criterion) {
    let server = Server::start();
    let watched = server.watch();
    assert_eq!(watched.get().db.pool, 60);

    let mut g = c.benchmark_group("watched");
    g.bench_function("get", |b| b.iter(|| black_box(watched.get())));
    g.bench_function("get_field", |b| b.iter(|| black_box(watched.get().db.pool)));
    g.bench_function("snapshot", |b| b.iter(|| black_box(watched.snapshot())));

    // Another thread hammering get() on a clone: the reads share the same ArcSwap and
    // the same Arc's reference count.
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (w, stop) = (watched.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(w.get());
            }
        })
    };
    g.bench_function("get_with_a_concurrent_reader", |b| {
        b.iter(|| black_box(watched.get()))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
    g.finish();
    drop(watched);
    drop(server);
}

criterion_group!(benches, bench);
criterion_main!(benches);
