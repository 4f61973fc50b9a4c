//! Provenance of the scenario file: is it in a git repository, at which commit and branch, and
//! is it (or the repository) dirty. Read with the `git` command; without git, or when git
//! refuses the repository, the answer is "unknown" (`null` in the manifest), never an error.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::ScenarioGit;

/// Each git command gets this long (a huge repository's `status` can be slow; the run should
/// not wait on it for long).
const GIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of a git command's output kept; callers only need a line or "is it empty".
const OUTPUT_LIMIT: u64 = 64 * 1024;

#[derive(Debug)]
struct GitOutput {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `git <args>` in `dir`, bounded in time and output. `None` when git cannot be started (not
/// installed) or does not finish in time.
fn git(program: &str, dir: &Path, args: &[&str]) -> Option<GitOutput> {
    let mut child = Command::new(program)
        // Never take a lock or refresh the index in the researcher's repository (as root that
        // would leave a root-owned .git/index), never run a configured fsmonitor hook.
        .args(["--no-optional-locks", "-c", "core.fsmonitor=false", "-C"])
        .arg(dir)
        .args(args)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let read = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(r) = r {
                let _ = r.take(OUTPUT_LIMIT).read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + GIT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    // The readers end when git's pipes close (it exited or was killed).
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Some(GitOutput {
        ok: status?.success(),
        stdout,
        stderr,
    })
}

/// The git state of the scenario file at `path`, or `None` when it cannot be told.
pub fn scenario_git(path: &Path) -> Option<ScenarioGit> {
    scenario_git_with("git", path)
}

fn scenario_git_with(program: &str, path: &Path) -> Option<ScenarioGit> {
    let git = |dir: &Path, args: &[&str]| git(program, dir, args);
    if !path.is_file() {
        return None;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file = path.file_name()?.to_str()?;
    let inside = git(dir, &["rev-parse", "--is-inside-work-tree"])?;
    if !inside.ok {
        // "not a git repository" is an answer; anything else (e.g. git refusing a repository
        // owned by another user) is not.
        return inside
            .stderr
            .contains("not a git repository")
            .then_some(ScenarioGit {
                in_repo: false,
                commit: None,
                branch: None,
                file_dirty: None,
                repo_dirty: None,
            });
    }
    if inside.stdout.trim() != "true" {
        // Inside a .git directory or a bare repository: not a work tree.
        return Some(ScenarioGit {
            in_repo: false,
            commit: None,
            branch: None,
            file_dirty: None,
            repo_dirty: None,
        });
    }
    let line = |args: &[&str]| {
        git(dir, args)
            .filter(|o| o.ok)
            .map(|o| o.stdout.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = line(&["rev-parse", "--verify", "-q", "HEAD"]);
    let branch = line(&["symbolic-ref", "--short", "-q", "HEAD"]);
    let tracked = git(dir, &["ls-files", "--error-unmatch", "--", file]).map(|o| o.ok);
    let changed = git(dir, &["status", "--porcelain", "--", file])
        .filter(|o| o.ok)
        .map(|o| !o.stdout.trim().is_empty());
    let file_dirty = match (tracked, changed) {
        (Some(false), _) => Some(true),
        (Some(true), Some(c)) => Some(c),
        _ => None,
    };
    let repo_dirty = git(dir, &["status", "--porcelain", "--untracked-files=no"])
        .filter(|o| o.ok)
        .map(|o| !o.stdout.trim().is_empty());
    Some(ScenarioGit {
        in_repo: true,
        commit,
        branch,
        file_dirty,
        repo_dirty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_unknown() {
        assert_eq!(scenario_git(Path::new("/nonexistent/oa-run/x.yaml")), None);
    }

    #[test]
    fn without_git_the_answer_is_unknown_not_an_error() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/demo.yaml");
        assert_eq!(scenario_git_with("/nonexistent/bin/git", &file), None);
    }

    #[test]
    fn git_output_is_captured() {
        let Some(o) = git("git", Path::new("/"), &["--version"]) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "git is required under CI"
            );
            eprintln!("skipped: git is not installed");
            return;
        };
        assert!(o.ok && o.stdout.starts_with("git version"), "{o:?}");
    }
}
