//! Real git for tests: [`git`] runs the `git` binary isolated from the machine's git
//! configuration, [`TestRepo`] is a repository in a temp dir.
//!
//! Shared by two test crates: the end-to-end tests (`tests/common/mod.rs`) and the
//! server's binary-level tests (`server/tests/common/mod.rs`, through `#[path]`), so it
//! uses nothing but std and `tempfile`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use tempfile::TempDir;

/// `git args` in `dir`, not yet run, isolated from the user's and the system's git
/// configuration (and from a `GIT_DIR` the test itself may run under). For a caller that
/// adds to it (an environment variable a hook reads) or expects it to fail.
pub fn git_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(Stdio::null());
    cmd
}

/// Run `cmd` (made by [`git_command`]). Panics (with git's output) unless it succeeds;
/// returns trimmed stdout.
pub fn run_git(mut cmd: Command) -> String {
    let what = format!(
        "git {:?} in {}",
        cmd.get_args().collect::<Vec<_>>(),
        cmd.get_current_dir().unwrap_or(Path::new(".")).display()
    );
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Run `git args` in `dir` (see [`git_command`]). Panics (with git's output) on failure;
/// returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run_git(git_command(dir, args))
}

/// `git init -b <branch>` in `dir`, with a local identity, and with nothing of the
/// machine's that would change a commit (signing, line endings).
pub fn init(dir: &Path, branch: &str) {
    git(dir, &["init", "-q", "-b", branch]);
    git(dir, &["config", "user.name", "Confhub Tests"]);
    git(dir, &["config", "user.email", "tests@confhub.invalid"]);
    git(dir, &["config", "commit.gpgsign", "false"]);
    git(dir, &["config", "tag.gpgsign", "false"]);
    git(dir, &["config", "core.autocrlf", "false"]);
}

/// A git repository in a fresh temp dir, with a local identity set. Deleted on drop.
pub struct TestRepo {
    dir: TempDir,
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRepo {
    /// `git init -b main`.
    pub fn new() -> Self {
        Self::with_initial_branch("main")
    }

    /// `git init -b <branch>` (e.g. `master`, to test the fallback).
    pub fn with_initial_branch(branch: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("confhub-repo-")
            .tempdir()
            .expect("temp dir for a repo");
        init(dir.path(), branch);
        TestRepo { dir }
    }

    /// The work tree (and, with `.git/`, the repository).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The path as a string, ready for `Settings::new`.
    pub fn path_str(&self) -> String {
        self.path().to_str().expect("utf-8 temp path").to_string()
    }

    /// Run git in the work tree; returns trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        git(self.path(), args)
    }

    /// Write a file (creating parent directories), relative to the work tree.
    pub fn write(&self, rel: &str, contents: &str) -> &Self {
        let path = self.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent dirs");
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {rel}: {e}"));
        self
    }

    /// Delete a file of the work tree.
    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.path().join(rel)).unwrap_or_else(|e| panic!("remove {rel}: {e}"));
        self
    }

    /// `git add -A && git commit -m msg`; returns the new commit's full sha.
    pub fn commit(&self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.head()
    }

    /// `n` commits on the current branch in one `git fast-import` (thousands take about a
    /// second, where `commit` takes a process or three each): commit `i` writes the files
    /// `files(i)` returns, as (path, contents). The work tree and index follow. Returns the
    /// new head's sha.
    pub fn commit_many(&self, n: usize, files: impl Fn(usize) -> Vec<(String, String)>) -> String {
        use std::io::Write as _;
        let branch = self.git(&["symbolic-ref", "HEAD"]);
        let parent = git_command(self.path(), &["rev-parse", "--verify", "-q", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let mut stream = Vec::new();
        let data = |out: &mut Vec<u8>, bytes: &[u8]| {
            writeln!(out, "data {}", bytes.len()).unwrap();
            out.extend_from_slice(bytes);
            out.push(b'\n');
        };
        for i in 0..n {
            writeln!(stream, "commit {branch}").unwrap();
            writeln!(
                stream,
                "committer Confhub Tests <tests@confhub.invalid> {} +0000",
                1_700_000_000 + i
            )
            .unwrap();
            data(&mut stream, format!("generated commit {i}").as_bytes());
            if i == 0 {
                if let Some(p) = &parent {
                    writeln!(stream, "from {p}").unwrap();
                }
            }
            for (path, contents) in files(i) {
                writeln!(stream, "M 100644 inline {path}").unwrap();
                data(&mut stream, contents.as_bytes());
            }
        }
        stream.extend_from_slice(b"done\n");
        let mut child = git_command(self.path(), &["fast-import", "--quiet", "--done"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("git fast-import");
        child.stdin.take().unwrap().write_all(&stream).unwrap();
        assert!(child.wait().unwrap().success(), "git fast-import failed");
        self.git(&["reset", "-q", "--hard"]);
        self.head()
    }

    /// Lightweight tag at HEAD.
    pub fn tag(&self, name: &str) {
        self.git(&["tag", name]);
    }

    /// Annotated tag at HEAD (a tag object that must be peeled to its commit).
    pub fn tag_annotated(&self, name: &str, msg: &str) {
        self.git(&["tag", "-a", name, "-m", msg]);
    }

    /// New branch at HEAD, without switching to it.
    pub fn branch(&self, name: &str) {
        self.git(&["branch", name]);
    }

    /// Switch the work tree to a branch, tag or commit.
    pub fn checkout(&self, name: &str) {
        self.git(&["checkout", "-q", name]);
    }

    /// Create a branch at HEAD and switch to it.
    pub fn checkout_new(&self, name: &str) {
        self.git(&["checkout", "-q", "-b", name]);
    }

    /// Full sha of HEAD.
    pub fn head(&self) -> String {
        self.rev_parse("HEAD")
    }

    /// Full sha of a revision (peeled to a commit).
    pub fn rev_parse(&self, rev: &str) -> String {
        self.git(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
    }

    /// `git clone --bare` this repository into `dest` (which must not exist yet).
    pub fn clone_bare(&self, dest: &Path) {
        let dest = dest.to_str().expect("utf-8 path");
        let src = self.path_str();
        git(
            self.path().parent().expect("temp dir has a parent"),
            &["clone", "-q", "--bare", &src, dest],
        );
    }
}
