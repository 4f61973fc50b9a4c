//! Crash recovery: a run whose oa-run died without cleaning up (SIGKILL, power cut) leaves its
//! manifest saying `running`, every player's OBS recording, and possibly its latency tree on
//! the interface. This finds such runs and cleans up after them:
//!
//! - a manifest with status `running` whose pid is dead on this host (a live pid, or another
//!   host, is never touched);
//! - every recording the run started and did not stop: its player's OBS (named in the manifest)
//!   is asked whether it is recording, and a recording whose length matches the time since this
//!   run started it is stopped, waiting for STOPPED (the file is final), with its path recorded;
//!   an OBS recording something else is left alone;
//! - the run's leftover latency tree (`netem::reset`, which refuses while another run holds the
//!   interface), or the userspace shaper's iptables chains (`netem::nfq::reset`, likewise);
//! - the manifest is marked `crashed`, with what was recovered and what could not be.
//!
//! Passwords are never in a manifest: they come from the scenario (with its environment).
//! `oa-run recover RUN_DIR` runs it for one run; at start the executor runs [`recover_all`]
//! on `output.dir`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use crate::error::Error;
use crate::manifest::{
    self, Event, EventKind, MANIFEST_FILE, Manifest, ManifestWriter, RunStatus, Timestamp,
};
use crate::obs::{ObsClient, ObsConfig, ObsTarget};
use crate::scenario::{Scenario, Shaper};
use crate::term::escape;

/// An active recording is taken for the one the crashed run started when its length is within
/// this of the time since the run saw it start (OBS's clock and ours, plus the start latency).
const SAME_RECORDING_SLACK_MS: i64 = 15_000;

/// Why a run directory was left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Its manifest is final already (`completed`, `failed`, …).
    Finished(&'static str),
    /// Its oa-run is still alive: never touched.
    Alive(u32),
    /// It ran on another host; whether its pid is alive cannot be known here.
    OtherHost(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::Finished(s) => write!(f, "the run is {s}; nothing to recover"),
            Skip::Alive(pid) => write!(f, "its oa-run (pid {pid}) is still running; left alone"),
            Skip::OtherHost(h) => write!(f, "it ran on host {}; recover it there", escape(h)),
        }
    }
}

/// What one recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// (player, match, final path) of each recording stopped.
    pub stopped: Vec<(u32, u32, Option<String>)>,
    pub latency_removed: Vec<String>,
    pub problems: Vec<String>,
}

/// The outcome for one run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Skipped(Skip),
    Recovered(Recovered),
}

/// Whether `m` is a crashed run this host may recover: `running`, on this host, pid dead.
pub fn needs_recovery(
    m: &Manifest,
    this_host: &str,
    alive: impl Fn(u32) -> bool,
) -> Result<(), Skip> {
    if m.status.is_final() {
        return Err(Skip::Finished(m.status.name()));
    }
    if m.host.hostname != this_host {
        return Err(Skip::OtherHost(m.host.hostname.clone()));
    }
    if alive(m.pid) {
        return Err(Skip::Alive(m.pid));
    }
    Ok(())
}

/// Whether a pid is alive on this host (also a zombie or another user's process: then it is
/// not ours to judge, and the run is left alone).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}

/// Whether an active recording `active_ms` long is the one the crashed run saw start at
/// `started` (it is `now` now): OBS keeps recording after its client dies, so its length is
/// the time since the start.
pub fn same_recording(active_ms: u64, started: &Timestamp, now: &Timestamp) -> bool {
    let expected = now.millis_since(started);
    let active = i64::try_from(active_ms).unwrap_or(i64::MAX);
    expected >= 0 && (expected - active).abs() <= SAME_RECORDING_SLACK_MS
}

/// The OBS of player `index` as the manifest names it, with the password from `s` (the seat's
/// own, else `obs.password`).
fn target_of(m: &Manifest, s: &Scenario, index: u32) -> Option<ObsTarget> {
    let p = m.players.iter().find(|p| p.index == index)?;
    let host = p.obs.host.clone()?;
    let seat = p
        .seat
        .as_ref()
        .and_then(|name| s.players.seats.iter().find(|seat| &seat.name == name));
    let password = seat
        .and_then(|seat| seat.obs.as_ref())
        .and_then(|o| o.password.clone())
        .unwrap_or_else(|| s.obs.password.clone());
    Some(ObsTarget::new(p.label.clone(), host, p.obs.port, password))
}

/// Recover one run directory (see the module doc). `s` supplies the OBS passwords.
pub async fn recover(run_dir: &Path, s: &Scenario) -> Result<Outcome, Error> {
    let path = run_dir.join(MANIFEST_FILE);
    let mut m = manifest::read(&path)?;
    let host = manifest::HostInfo::current().hostname;
    if let Err(skip) = needs_recovery(&m, &host, pid_alive) {
        return Ok(Outcome::Skipped(skip));
    }
    info!(run = %run_dir.display(), pid = m.pid, "recovering a crashed run");
    let mut done = Recovered::default();
    let cfg = ObsConfig {
        retries: 1,
        auto_reconnect: false,
        connect_timeout: Duration::from_secs(10),
        ..ObsConfig::from_scenario(s)
    };
    // The recordings it started and never saw stop, per player.
    let open: Vec<(u32, u32, Timestamp)> = m
        .recordings
        .iter()
        .filter(|r| r.stopped_at.is_none() && r.error.is_none())
        .filter_map(|r| r.started_at.map(|t| (r.player, r.match_no, t)))
        .collect();
    for (player, match_no, started) in open {
        let Some(target) = target_of(&m, s, player) else {
            done.problems.push(format!(
                "player {player}, match {match_no}: the manifest names no OBS"
            ));
            continue;
        };
        let label = target.to_string();
        let client = match ObsClient::connect(target, cfg.clone()).await {
            Ok(c) => c,
            Err(e) => {
                done.problems.push(format!("{}: {e}", escape(&label)));
                continue;
            }
        };
        let status = client.record_status().await;
        match status {
            Ok(st)
                if st.output_active
                    && same_recording(st.output_duration_ms, &started, &Timestamp::now()) =>
            {
                match client.stop_recording().await {
                    Ok(stopped) => {
                        if let Some(rec) = m.recording_mut(player, match_no) {
                            rec.stopped_at = Some(stopped.wall.into());
                            if stopped.path.is_some() {
                                rec.path = stopped.path.clone();
                            }
                            rec.bytes = Some(stopped.bytes);
                            rec.duration_ms = Some(stopped.duration_ms);
                        }
                        m.push_event(
                            Event::new(
                                EventKind::Cleanup,
                                "recording stopped by the crash recovery; the file is final",
                            )
                            .player(player)
                            .match_no(match_no),
                        );
                        done.stopped.push((player, match_no, stopped.path));
                    }
                    Err(e) => done.problems.push(format!("{}: {e}", escape(&label))),
                }
            }
            Ok(st) if st.output_active => done.problems.push(format!(
                "{}: records something this run did not start ({} long); left running",
                escape(&label),
                st.output_timecode
            )),
            Ok(_) => {
                if let Some(rec) = m.recording_mut(player, match_no) {
                    rec.error = Some(
                        "oa-run crashed; the OBS was no longer recording when recovered (its file may be incomplete)"
                            .into(),
                    );
                }
                done.problems.push(format!(
                    "{}: no longer recording (OBS restarted?); match {match_no}'s file may be incomplete",
                    escape(&label)
                ));
            }
            Err(e) => done.problems.push(format!("{}: {e}", escape(&label))),
        }
        client.close().await;
    }
    let resolved = &m.scenario.resolved;
    // `auto` resolves on this host as it did for the crashed run (same kernel).
    let (shaper, _) = crate::netem::resolve_shaper(resolved.latency.shaper);
    let runner = crate::netem::SystemRunner::new();
    match shaper {
        Shaper::Tc => {
            let iface = resolved.latency.interface.clone();
            match crate::netem::reset(&runner, &iface) {
                Ok(r) => done.latency_removed = r.removed,
                Err(e) => done.problems.push(format!("latency tree on {iface}: {e}")),
            }
        }
        // The userspace shaper died with oa-run, but its iptables chains stay (their
        // `--queue-bypass` lets the game through undelayed) until someone removes them.
        Shaper::Nfqueue => match crate::netem::nfq::reset(&runner) {
            Ok(removed) => done.latency_removed = removed,
            Err(e) => done.problems.push(format!("latency rules (iptables): {e}")),
        },
        Shaper::Auto | Shaper::None => {}
    }
    for p in &done.problems {
        warn!(run = %run_dir.display(), "recovery: {p}");
    }
    m.ended_at.get_or_insert(m.last_written_at);
    m.set_status(RunStatus::Crashed {
        recovered_at: Timestamp::now(),
        recordings_stopped: done.stopped.len() as u32,
        latency_removed: done.latency_removed.clone(),
        problems: done.problems.clone(),
    });
    ManifestWriter::reopen(run_dir).write(&mut m)?;
    Ok(Outcome::Recovered(done))
}

/// Every run directory directly under `output_dir` (the executor calls this at start).
pub async fn recover_all(
    output_dir: &Path,
    s: &Scenario,
) -> Vec<(PathBuf, Result<Outcome, Error>)> {
    let Ok(entries) = std::fs::read_dir(output_dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join(MANIFEST_FILE).is_file())
        .collect();
    dirs.sort();
    let mut out = Vec::new();
    for d in dirs {
        let r = recover(&d, s).await;
        out.push((d, r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration as CDuration, Utc};

    fn sample() -> Manifest {
        let l = crate::scenario::load_str(
            "r.yaml",
            "name: r\nserver: {launch: {}, address: 127.0.0.1:27960, rcon_password: rc}\n\
             players: {humans: 1}\nwarmup: {duration: 10s}\nmatches: {timelimit: 20s}\n\
             latency: {interface: lo, levels: [0ms], shaper: none}\nobs: {password: pw, recording: {}}\n",
            &[],
            &std::collections::BTreeMap::new(),
            crate::scenario::SecretsMode::Required,
        )
        .unwrap();
        let plan = crate::plan::compile(&l).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let rd = crate::manifest::RunDir::create(tmp.path(), "r", Timestamp::now()).unwrap();
        Manifest::from_plan(&l, &plan, &rd)
    }

    fn ts(secs_ago: i64) -> Timestamp {
        Timestamp::from(Utc::now() - CDuration::seconds(secs_ago))
    }

    #[test]
    fn only_a_matching_length_is_this_runs_recording() {
        let now = Timestamp::now();
        assert!(same_recording(600_000, &ts(600), &now));
        assert!(same_recording(590_000, &ts(600), &now), "start latency");
        assert!(
            !same_recording(60_000, &ts(600), &now),
            "started later by someone else"
        );
        assert!(
            !same_recording(3_600_000, &ts(600), &now),
            "was running before"
        );
        assert!(!same_recording(0, &ts(-100), &now), "a start in the future");
    }

    #[test]
    fn a_live_pid_or_another_host_is_never_touched() {
        let mut m = sample();
        let me = m.host.hostname.clone();
        assert_eq!(needs_recovery(&m, &me, |_| true), Err(Skip::Alive(m.pid)));
        assert_eq!(
            needs_recovery(&m, "elsewhere", |_| false),
            Err(Skip::OtherHost(me.clone()))
        );
        assert!(needs_recovery(&m, &me, |_| false).is_ok());
        m.set_status(RunStatus::Completed);
        assert_eq!(
            needs_recovery(&m, &me, |_| false),
            Err(Skip::Finished("completed"))
        );
        // This very process is alive; a pid beyond pid_max is not.
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX));
    }
}
