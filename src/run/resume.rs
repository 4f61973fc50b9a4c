//! `oa-run resume RUN_DIR`: go on with a study that stopped (interrupted, failed, crashed).
//!
//! A resumed study is a new run (its own directory and manifest, `status` and all) whose
//! manifest links to the run it continues (`resumed_from`). Matches that run completed are
//! kept there and skipped here; the first incomplete match is played again from its start,
//! the partial recordings of the earlier attempt staying in the earlier manifest (where the
//! summary and `report` list them as partial); then the plan goes on to its end. Players are
//! re-admitted by seat, or without seats by the address they had, so each follows the same
//! row of the latency design.
//!
//! Reading the earlier manifest is the one place a manifest is read back: it is this
//! command's input, not the executor's state.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use crate::error::Error;
use crate::manifest::{MANIFEST_FILE, Manifest, ResumedFrom, RunStatus};

/// What the executor needs to resume.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    pub from: ResumedFrom,
    /// Without seats: each earlier player's address → their row of the design.
    pub rows_by_ip: BTreeMap<IpAddr, u32>,
}

/// A match is complete when it ended and every recording of it is complete (the manifest's
/// one rule, as `report` and the summary use it).
pub fn completed_matches(m: &Manifest) -> Vec<u32> {
    m.matches
        .iter()
        .filter(|x| x.replay_of.is_none() && match_complete(m, x.number))
        .map(|x| x.number)
        .collect()
}

fn match_complete(m: &Manifest, n: u32) -> bool {
    m.matches
        .iter()
        .any(|x| x.number == n && x.ended_at.is_some())
        && m.recordings
            .iter()
            .filter(|r| r.match_no == n)
            .all(|r| m.outcome(r.player, n).status == crate::manifest::CellStatus::Complete)
}

/// The first planned match that is not complete (`None`: nothing left to do). A replayed
/// match that completed counts for the match it replays.
pub fn first_incomplete(m: &Manifest) -> Option<u32> {
    let done = completed_matches(m);
    let replayed: Vec<u32> = m
        .matches
        .iter()
        .filter(|x| x.replay_of.is_some() && match_complete(m, x.number))
        .filter_map(|x| x.replay_of)
        .collect();
    m.matches
        .iter()
        .filter(|x| x.replay_of.is_none())
        .map(|x| x.number)
        .find(|n| !done.contains(n) && !replayed.contains(n))
}

/// Read the run to resume and decide where to start. `sha256`: the scenario file's hash now.
pub fn plan_resume(run_dir: &Path, sha256: &str, force: bool) -> Result<ResumePoint, Error> {
    let m = read_previous(run_dir)?;
    check_resumable(&m)?;
    let changed = m.scenario.sha256 != sha256;
    if changed && !force {
        return Err(Error::Usage(format!(
            "the scenario file {} changed since run {} (sha256 {} then, {sha256} now); resuming with another scenario would mix two studies. Restore it, or pass --force to resume anyway (recorded in the manifest)",
            m.scenario.path.display(),
            m.run_id,
            m.scenario.sha256,
        )));
    }
    let Some(from_match) = first_incomplete(&m) else {
        return Err(Error::Usage(format!(
            "run {} has every match complete; nothing to resume",
            m.run_id
        )));
    };
    let rows_by_ip = m
        .players
        .iter()
        .filter_map(|p| Some((p.ip?, p.index)))
        .collect();
    Ok(ResumePoint {
        from: ResumedFrom {
            run_id: m.run_id.to_string(),
            run_dir: m.run_dir.clone(),
            previous_status: m.status.name().to_string(),
            completed_matches: completed_matches(&m),
            from_match,
            forced: changed,
        },
        rows_by_ip,
    })
}

/// The earlier run's manifest.
pub fn read_previous(run_dir: &Path) -> Result<Manifest, Error> {
    crate::manifest::read(&run_dir.join(MANIFEST_FILE))
}

fn check_resumable(m: &Manifest) -> Result<(), Error> {
    match &m.status {
        RunStatus::Completed => Err(Error::Usage(format!(
            "run {} completed; nothing to resume",
            m.run_id
        ))),
        RunStatus::Running => {
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(m.pid as i32), None)
                .is_ok()
                && m.host.hostname == crate::manifest::HostInfo::current().hostname;
            Err(Error::Usage(if alive {
                format!(
                    "run {} is still running (pid {}); it is never touched",
                    m.run_id, m.pid
                )
            } else {
                format!(
                    "run {} says running but its process is gone: recover it first with `oa-run recover {}`",
                    m.run_id,
                    m.run_dir.display()
                )
            }))
        }
        _ => Ok(()),
    }
}

/// The scenario overrides to apply again: the earlier run's, except those that held a secret
/// value (recorded with `***`), which must come again from `--set` (or `${VAR}`s).
pub fn overrides(m: &Manifest, given: &[String]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for o in &m.scenario.overrides {
        let key = o.split_once('=').map(|(k, _)| k).unwrap_or(o);
        let redacted = crate::scenario::load::is_redacted(o);
        let regiven = given
            .iter()
            .any(|g| g.split_once('=').map(|(k, _)| k) == Some(key));
        if regiven {
            continue;
        }
        if redacted {
            return Err(Error::Usage(format!(
                "run {} was started with a secret override of `{key}`, which is not recorded; give it again: --set {key}=…",
                m.run_id
            )));
        }
        out.push(o.clone());
    }
    // The resumed run must have the same plan: the same seed, also when it was drawn.
    let seed_given = out
        .iter()
        .chain(given)
        .any(|o| o.split_once('=').map(|(k, _)| k) == Some("design.seed"));
    if !seed_given && let Some(d) = &m.design {
        out.push(format!("design.seed={}", d.seed));
    }
    out.extend(given.iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{RecordingRecord, Timestamp};

    fn manifest() -> Manifest {
        crate::run::state::tests::manifest()
    }

    fn done(m: &mut Manifest, n: u32, recs_ok: bool) {
        let now = Timestamp::now();
        let mm = m.matches.iter_mut().find(|x| x.number == n).unwrap();
        mm.started_at = Some(now);
        mm.ended_at = Some(now);
        mm.ended_by = Some(crate::manifest::MatchEnding::Runner);
        for p in 1..=2 {
            let mut r = RecordingRecord::planned(p, n, format!("m{n}p{p}"));
            r.path = Some(format!("/r/m{n}p{p}.mkv"));
            r.started_at = Some(now);
            r.stopped_at = Some(now);
            if !recs_ok && p == 2 {
                r.error = Some("stopped early by cleanup".into());
            }
            m.recordings.push(r);
        }
    }

    #[test]
    fn the_first_match_not_complete_is_resumed() {
        let mut m = manifest();
        assert_eq!(first_incomplete(&m), Some(1));
        done(&mut m, 1, true);
        assert_eq!(first_incomplete(&m), Some(2));
        // Ended, but a recording was cut: not complete.
        done(&mut m, 2, false);
        assert_eq!(first_incomplete(&m), Some(2));
        assert_eq!(completed_matches(&m), vec![1]);
    }

    #[test]
    fn a_fully_complete_run_has_nothing_to_resume() {
        let mut m = manifest();
        for n in 1..=m.matches.len() as u32 {
            done(&mut m, n, true);
        }
        assert_eq!(first_incomplete(&m), None);
    }

    #[test]
    fn a_replayed_match_counts_for_the_match_it_replays() {
        let mut m = manifest();
        done(&mut m, 1, false);
        let mut replay = m.matches[0].clone();
        replay.number = 3;
        replay.replay_of = Some(1);
        replay.ended_at = None;
        m.matches.push(replay);
        done(&mut m, 3, true);
        assert_eq!(first_incomplete(&m), Some(2));
    }

    #[test]
    fn secret_overrides_must_be_given_again() {
        let mut m = manifest();
        m.scenario.overrides = vec!["matches.repeats=2".into(), "obs.password=***".into()];
        assert!(overrides(&m, &[]).is_err());
        let o = overrides(&m, &["obs.password=again".into()]).unwrap();
        let seed = format!("design.seed={}", m.design.as_ref().unwrap().seed);
        assert_eq!(o, vec!["matches.repeats=2", &seed, "obs.password=again"]);
    }

    #[test]
    fn seat_overrides_are_applied_again_unless_they_held_a_password() {
        let seats = r#"players.seats=[{"name":"pc1","ip":"10.0.0.11"}]"#;
        let mut m = manifest();
        m.scenario.overrides = vec![seats.into()];
        let seed = format!("design.seed={}", m.design.as_ref().unwrap().seed);
        assert_eq!(overrides(&m, &[]).unwrap(), vec![seats, &seed]);
        m.scenario.overrides =
            vec![r#"players.seats=[{"name":"pc1","obs":{"password":"***"}}]"#.into()];
        let e = overrides(&m, &[]).unwrap_err().to_string();
        assert!(e.contains("--set players.seats="), "{e}");
    }

    #[test]
    fn the_resumed_plan_has_the_stopped_runs_seed() {
        let mut m = manifest();
        m.scenario.overrides = vec![];
        let seed = m.design.as_ref().unwrap().seed;
        assert_eq!(
            overrides(&m, &[]).unwrap(),
            vec![format!("design.seed={seed}")]
        );
        // Given again, the new value wins and is not doubled.
        let o = overrides(&m, &["design.seed=5".into()]).unwrap();
        assert_eq!(o, vec!["design.seed=5"]);
    }

    #[test]
    fn running_and_completed_runs_are_refused() {
        let mut m = manifest();
        m.status = RunStatus::Completed;
        assert!(check_resumable(&m).is_err());
        m.status = RunStatus::Running;
        m.pid = std::process::id();
        let e = check_resumable(&m).unwrap_err().to_string();
        assert!(e.contains("still running"), "{e}");
        m.status = RunStatus::Interrupted {
            signal: None,
            reason: "x".into(),
        };
        assert!(check_resumable(&m).is_ok());
    }
}
