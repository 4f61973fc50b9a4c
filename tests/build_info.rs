//! oa-run's build identity: build.rs's git probe (shared source, build_support/git.rs) in a
//! checkout, in a copy without `.git`, and in a folder inside some other repository; and the
//! commit `--version` reports.

#[path = "../build_support/git.rs"]
mod git_probe;

mod support;

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn have_git() -> bool {
    if let Some(why) = support::missing_program("git") {
        support::skip(&why);
        return false;
    }
    true
}

#[test]
fn probe_reads_a_checkout_and_nothing_else() {
    if !have_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("oa-run");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("Cargo.toml"), "[package]\n").unwrap();

    // No .git (a source export, a crates.io tarball): nothing, and no error.
    assert_eq!(git_probe::probe(&repo), None);

    git(&repo, &["init", "-q"]);
    // A repository without commits: nothing to report.
    assert_eq!(git_probe::probe(&repo), None);
    git(&repo, &["add", "Cargo.toml"]);
    git(&repo, &["commit", "-qm", "one"]);
    let (commit, dirty) = git_probe::probe(&repo).expect("a checkout");
    assert_eq!(commit.len(), 40);
    assert!(!dirty);
    std::fs::write(repo.join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
    assert_eq!(git_probe::probe(&repo), Some((commit.clone(), true)));
    // An untracked file does not make the build dirty.
    git(&repo, &["checkout", "-q", "--", "Cargo.toml"]);
    std::fs::write(repo.join("notes.txt"), "x").unwrap();
    assert_eq!(git_probe::probe(&repo), Some((commit, false)));

    // A crate folder inside some other repository does not take that repository's commit.
    let inner = repo.join("vendor/oa-run");
    std::fs::create_dir_all(&inner).unwrap();
    assert_eq!(git_probe::probe(&inner), None);
    assert!(!git_probe::watch_paths(&repo).is_empty());
}

#[test]
fn version_reports_the_build_commit() {
    let o = Command::new(support::oa_run())
        .arg("--version")
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.starts_with(&format!("oa-run {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    // Built from this checkout: the commit is the checkout's (as build.rs saw it).
    match git_probe::probe(Path::new(env!("CARGO_MANIFEST_DIR"))) {
        Some((commit, _)) => assert!(out.contains(&commit[..12]), "{out} vs {commit}"),
        None => assert!(out.contains("commit unknown"), "{out}"),
    }
    assert_eq!(
        oa_run::build_info::commit().is_some(),
        !out.contains("commit unknown")
    );
}
