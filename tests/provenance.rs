//! Scenario provenance in the manifest: a scenario inside a temporary git repository, clean and
//! dirty (the file, the repository, an uncommitted file, a detached HEAD), and one outside any
//! repository; `report` prints it.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use oa_run::manifest::{Manifest, RunDir, ScenarioGit, Timestamp};
use oa_run::scenario::{SecretsMode, load_file};

const SCENARIO: &str = r#"
name: prov
server: { launch: {}, address: 127.0.0.1:27960, rcon_password: rc }
players: { humans: 1 }
warmup: { duration: 10s }
matches: { timelimit: 20s, repeats: 1 }
latency: { interface: lo, levels: [0ms], shaper: none }
obs: { password: pw, recording: {} }
"#;

fn git(dir: &Path, args: &[&str]) -> String {
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
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn scenario_git(file: &Path) -> Option<ScenarioGit> {
    let env: BTreeMap<String, String> = BTreeMap::new();
    let loaded = load_file(file, &[], &env, SecretsMode::Optional).unwrap();
    let out = tempfile::tempdir().unwrap();
    let rd = RunDir::create(out.path(), "prov", Timestamp::now()).unwrap();
    Manifest::new(&loaded, &rd).scenario.git
}

#[test]
fn scenario_in_a_git_repository_clean_and_dirty() {
    if let Some(why) = support::missing_program("git") {
        return support::skip(&why);
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    git(repo, &["init", "-q", "-b", "study"]);
    std::fs::create_dir(repo.join("scenarios")).unwrap();
    let file = repo.join("scenarios/prov.yaml");
    std::fs::write(&file, SCENARIO).unwrap();
    std::fs::write(repo.join("README"), "x").unwrap();

    // Not committed yet: in a repository, no commit, the file counts as dirty.
    let g = scenario_git(&file).unwrap();
    assert!(g.in_repo);
    assert_eq!(g.commit, None);
    assert_eq!(g.file_dirty, Some(true));

    git(repo, &["add", "."]);
    git(repo, &["commit", "-qm", "study"]);
    let head = git(repo, &["rev-parse", "HEAD"]);
    let clean = scenario_git(&file).unwrap();
    assert_eq!(
        clean,
        ScenarioGit {
            in_repo: true,
            commit: Some(head.clone()),
            branch: Some("study".into()),
            file_dirty: Some(false),
            repo_dirty: Some(false),
        }
    );

    // Another tracked file changed: the repository is dirty, the scenario is not.
    std::fs::write(repo.join("README"), "y").unwrap();
    let g = scenario_git(&file).unwrap();
    assert_eq!((g.file_dirty, g.repo_dirty), (Some(false), Some(true)));
    // An untracked file does not make the repository dirty.
    git(repo, &["checkout", "-q", "--", "README"]);
    std::fs::write(repo.join("scratch.txt"), "z").unwrap();
    assert_eq!(scenario_git(&file).unwrap().repo_dirty, Some(false));

    // The scenario itself edited: both dirty; reading never touched the index.
    let index_before = std::fs::read(repo.join(".git/index")).unwrap();
    std::fs::write(&file, format!("{SCENARIO}\n# edited\n")).unwrap();
    let g = scenario_git(&file).unwrap();
    assert_eq!((g.file_dirty, g.repo_dirty), (Some(true), Some(true)));
    assert_eq!(
        std::fs::read(repo.join(".git/index")).unwrap(),
        index_before
    );

    // Detached HEAD: the commit, no branch.
    git(repo, &["checkout", "-q", "--", "scenarios/prov.yaml"]);
    git(repo, &["checkout", "-q", "--detach"]);
    let g = scenario_git(&file).unwrap();
    assert_eq!(
        (g.commit.as_deref(), g.branch.as_deref()),
        (Some(head.as_str()), None)
    );

    // Written into the manifest and printed by `report`.
    let env: BTreeMap<String, String> = BTreeMap::new();
    let loaded = load_file(&file, &[], &env, SecretsMode::Optional).unwrap();
    let out = tempfile::tempdir().unwrap();
    let rd = RunDir::create(out.path(), "prov", Timestamp::now()).unwrap();
    let mut m = Manifest::new(&loaded, &rd);
    let w = oa_run::manifest::ManifestWriter::create(rd.path(), &mut m).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path()).unwrap()).unwrap();
    assert_eq!(json["scenario"]["git"]["commit"], head.as_str());
    assert!(
        json["scenario"]["git"].get("branch").is_none(),
        "detached: no branch"
    );
    let o = Command::new(support::oa_run())
        .arg("report")
        .arg(rd.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains(&format!(
            "git:       commit {} (detached HEAD); file clean, repository clean",
            &head[..12]
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("oa-run:    {}", m.tool.describe())),
        "{text}"
    );
}

#[test]
fn scenario_outside_any_repository() {
    if let Some(why) = support::missing_program("git") {
        return support::skip(&why);
    }
    let tmp = tempfile::tempdir().unwrap();
    // Make sure no repository above the temp dir is found.
    if Command::new("git")
        .arg("-C")
        .arg(tmp.path())
        .args(["rev-parse", "--is-inside-work-tree"])
        .output()
        .unwrap()
        .status
        .success()
    {
        return support::skip("the temp directory is inside a git repository");
    }
    let file = tmp.path().join("prov.yaml");
    std::fs::write(&file, SCENARIO).unwrap();
    let g = scenario_git(&file).unwrap();
    assert!(!g.in_repo);
    assert_eq!(g.commit, None);
}
