//! Snapshots from git (ARCHITECTURE.md §3): building every (service, env) of a commit, rebuilding
//! after a commit ([`Store::refresh`]), and the read path with and without a rebuild
//! running beside it.
//!
//! The repositories are made here with `git fast-import` by the same generator as the
//! load tool (`bench/src/repo.rs`): small = 3 services × 3 envs; large = 100 services ×
//! 5 envs, 1,006 files (the "100 services × 5 envs (~1,000 files)").
//!
//! `cargo bench -p confhub-server --bench snapshot` (add `-- --test` for a smoke run).

#[allow(dead_code)]
#[path = "../../bench/src/repo.rs"]
mod repo;

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use confhub_server::source::git::GitSource;
use confhub_server::store::entry::Body;
use confhub_server::store::snapshot::Snapshot;
use confhub_server::store::Store;
use confhub_server::Settings;
use criterion::{criterion_group, criterion_main, Criterion};

fn make_repo(dir: &Path, services: usize, envs: usize) -> usize {
    let spec = repo::Spec {
        services,
        envs,
        commits: 1,
    };
    repo::generate(dir, &spec).unwrap_or_else(|e| panic!("generating a repo: {e:#}"))
}

/// Two commits on `main` (A, then B changing one pair file), so refreshes can flip between them.
fn two_commits(dir: &Path) -> (git2::Oid, git2::Oid) {
    let mut c = repo::Committer::open(dir).unwrap_or_else(|e| panic!("{e:#}"));
    let a = c
        .prepare("svc000-prod.yml", &repo::pair_yml(0, "prod", 1, "a"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    c.publish(a).unwrap_or_else(|e| panic!("{e:#}"));
    let b = c
        .prepare("svc000-prod.yml", &repo::pair_yml(0, "prod", 2, "b"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    (a, b)
}

fn set_main(dir: &Path, oid: git2::Oid) {
    let r = git2::Repository::open(dir).unwrap_or_else(|e| panic!("{e}"));
    r.reference("refs/heads/main", oid, true, "bench")
        .unwrap_or_else(|e| panic!("{e}"));
}

fn build_once(git: &GitSource, uri: &Arc<str>, previous: Option<&Snapshot>) -> Snapshot {
    git.with_repo(|repo| {
        let (branch, oid) = git.tracked(repo)?;
        let mut view = git.view(repo, oid)?;
        Ok(Snapshot::build(&mut view, &branch, uri, previous))
    })
    .unwrap_or_else(|e| panic!("building a snapshot: {e}"))
}

fn bench_build(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("snapshot_build");
    g.sample_size(20);
    for (name, services, envs) in [("small_3x3", 3, 3), ("large_100x5", 100, 5)] {
        let dir = tmp.path().join(name);
        let files = make_repo(&dir, services, envs);
        let git = GitSource::open(&Settings::new(dir.display().to_string()))
            .unwrap_or_else(|e| panic!("{e}"));
        let uri: Arc<str> = git.uri().into();
        let snap = build_once(&git, &uri, None);
        let pairs: usize = snap.pairs.values().map(|e| e.len()).sum();
        assert_eq!(pairs, services * envs, "{name}: every pair resolves");
        assert!(snap.errors().is_empty(), "{name}: {:?}", snap.errors());
        eprintln!("{name}: {files} files, {pairs} pairs");
        g.bench_function(format!("{name}_{files}_files"), |b| {
            b.iter(|| black_box(build_once(&git, &uri, Some(&snap))))
        });
    }
    g.finish();
}

fn bench_refresh(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let dir = tmp.path().join("large");
    make_repo(&dir, 100, 5);
    let (a, b) = two_commits(&dir);
    let store =
        Store::open(&Settings::new(dir.display().to_string())).unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("store");
    g.sample_size(20);
    // What the refresh loop runs after each commit: read the ref, rebuild every pair,
    // diff digests, swap. Each iteration moves `main` to the other commit first.
    let mut flip = false;
    g.bench_function("refresh_after_commit_large_100x5", |bench| {
        bench.iter(|| {
            flip = !flip;
            set_main(&dir, if flip { b } else { a });
            let changes = store.refresh(false).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(changes.changed.len(), 1);
            changes
        })
    });

    // The read path of `GET /v1/config/{service}/{env}`: load the snapshot, find the
    // slot, take the pre-rendered body.
    let read = |store: &Store| {
        let snap = store.snapshot();
        let slot = snap
            .pair("svc042", "prod")
            .unwrap_or_else(|| panic!("no slot"));
        let entry = slot.entry.as_ref().unwrap_or_else(|| panic!("no entry"));
        entry.body(Body::Json)
    };
    g.bench_function("read_quiet", |bench| bench.iter(|| black_box(read(&store))));

    // The same read while another thread rebuilds the snapshot non-stop (2 cores: the
    // rebuild has one to itself).
    let store = Arc::new(store);
    let stop = Arc::new(AtomicBool::new(false));
    let rebuilds = Arc::new(AtomicU64::new(0));
    let rebuilder = {
        let (store, stop, rebuilds, dir) =
            (store.clone(), stop.clone(), rebuilds.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut flip = false;
            while !stop.load(Ordering::Acquire) {
                flip = !flip;
                set_main(&dir, if flip { b } else { a });
                let _ = store.refresh(false);
                rebuilds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while rebuilds.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    g.bench_function("read_during_rebuilds", |bench| {
        bench.iter(|| black_box(read(&store)))
    });
    stop.store(true, Ordering::Release);
    let _ = rebuilder.join();
    eprintln!(
        "read_during_rebuilds: {} rebuilds ran beside the reads",
        rebuilds.load(Ordering::Relaxed)
    );
    g.finish();
}

criterion_group!(benches, bench_build, bench_refresh);
criterion_main!(benches);
