// Shared by build.rs (oa-run's own build identity) and tests/build_info.rs; std only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Run `git -C dir args...`; `None` if git is missing or the command fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // A build started from a git hook inherits these; they would point git elsewhere.
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit the crate at `crate_dir` is built from and whether tracked files differ from it,
/// or `None` when `crate_dir` is not the top of a git work tree (a crates.io tarball, an export
/// without `.git`, a copy unpacked inside some other repository) or git is not installed.
pub fn probe(crate_dir: &Path) -> Option<(String, bool)> {
    let top = git(crate_dir, &["rev-parse", "--show-toplevel"])?;
    // Only this crate's own repository counts, never one that merely contains the folder.
    if std::fs::canonicalize(&top).ok()? != std::fs::canonicalize(crate_dir).ok()? {
        return None;
    }
    let commit = git(crate_dir, &["rev-parse", "--verify", "-q", "HEAD"])?;
    let dirty = !git(
        crate_dir,
        &["status", "--porcelain", "--untracked-files=no"],
    )?
    .is_empty();
    Some((commit, dirty))
}

/// Files whose change moves HEAD or the index (for `cargo:rerun-if-changed`); works in
/// worktrees, where `.git` is a file.
pub fn watch_paths(crate_dir: &Path) -> Vec<PathBuf> {
    let abs = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            crate_dir.join(p)
        }
    };
    let mut v = Vec::new();
    if let Some(d) = git(crate_dir, &["rev-parse", "--git-dir"]).map(abs) {
        v.push(d.join("HEAD"));
        v.push(d.join("index"));
    }
    if let Some(d) = git(crate_dir, &["rev-parse", "--git-common-dir"]).map(abs) {
        v.push(d.join("refs"));
        v.push(d.join("packed-refs"));
    }
    v.into_iter().filter(|p| p.exists()).collect()
}
