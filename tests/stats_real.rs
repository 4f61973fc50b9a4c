//! Per-match statistics against the real Debian `openarena-server` with real bots: a match at a
//! low fraglimit, one bot added late and one kicked early, the accumulator fed with the
//! arena's own events; checked against the server's final scoreboard and its raw games.log.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use oa_run::arena::stats::MatchStats;
use oa_run::arena::{Arena, BotName, HowEnded, LaunchSpec, MapName, MatchSpec, RconCmd};
use oa_run::manifest::ParticipantKind;
use oa_run::plan::MatchEnd;
use oa_run::scenario::Secret;
use support::{free_udp_port, missing_program, skip};

const SERVER: &str = "/usr/games/openarena-server";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_bots_kills_deaths_scores_and_time_in_match() {
    if let Some(why) = missing_program(SERVER) {
        return skip(&why);
    }
    let dir = support::passable_tempdir();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let arena = Arena::launch(LaunchSpec {
        binary: SERVER.into(),
        listen,
        map: MapName::new("oa_dm1").unwrap(),
        rcon_password: Secret::new("stats-test-pw"),
        max_clients: 8,
        run_dir: dir.path().join("run"),
        start_timeout: Duration::from_secs(45),
        user: Some("nobody".into()),
    })
    .await
    .unwrap();
    let bots = arena
        .set_bots(&["Sarge".into(), "Major".into(), "Grunt".into()], 5)
        .await
        .unwrap();
    assert_eq!(bots.len(), 3);
    let spec = MatchSpec {
        map: None,
        end: MatchEnd::ServerTimelimit { minutes: 1 },
        overtime: Duration::from_secs(20),
        fraglimit: Some(6),
    };
    arena.prepare_match(&spec).await.unwrap();
    // Subscribe before the match starts: every event of its generation is folded, none lost.
    let mut events = arena.subscribe();
    let live = arena.start_match(&spec).await.unwrap();
    let roster = arena.state().roster;
    let mut stats = MatchStats::start(live.generation, &live.started, roster.players.values());

    let mut kicked = None;
    let mut late = None;
    let t0 = tokio::time::Instant::now();
    let outcome = {
        let end = arena.await_end(&live);
        tokio::pin!(end);
        loop {
            tokio::select! {
                r = &mut end => break r.unwrap(),
                ev = events.recv() => {
                    if let Ok(ev) = ev {
                        stats.apply(&ev, chrono::Utc::now());
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            // A bot joins 3 s in, another is kicked (by slot) 6 s in.
            if late.is_none() && t0.elapsed() > Duration::from_secs(3) {
                let r = arena
                    .rcon()
                    .send(&RconCmd::addbot(&BotName::new("Tony").unwrap(), 5).unwrap())
                    .await
                    .unwrap();
                late = Some(r.text);
            }
            if kicked.is_none() && t0.elapsed() > Duration::from_secs(6) {
                arena
                    .rcon()
                    .send(&RconCmd::clientkick(bots[1]).unwrap())
                    .await
                    .unwrap();
                kicked = Some(bots[1]);
            }
        }
    };
    // The score lines follow the Exit line.
    let drain_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(ev)) = tokio::time::timeout_at(drain_until, events.recv()).await {
        stats.apply(&ev, chrono::Utc::now());
    }
    stats.finish(outcome.ended_at);
    let rec = stats.record(chrono::Utc::now(), |_| None);
    eprintln!(
        "match: {:?} after {:.1}s; stats: {}",
        outcome.how_ended,
        outcome.duration_s,
        serde_json::to_string_pretty(&rec).unwrap()
    );
    let log =
        std::fs::read_to_string(arena.info.files.as_ref().unwrap().games_log.clone()).unwrap();
    arena.stop().await;
    eprintln!("games.log:\n{log}");

    assert!(
        late.is_some() && kicked.is_some(),
        "the match ended before 6 s"
    );
    let kicked = kicked.unwrap();
    // The raw log between this match's live InitGame and its Exit, counted independently.
    let start = log.rfind("InitGame:").unwrap();
    let match_log = &log[start..];
    let match_log = &match_log[..match_log.find("Exit:").unwrap_or(match_log.len())];
    let kill_lines: Vec<&str> = match_log
        .lines()
        .filter(|l| {
            l.trim_start()
                .split_once(' ')
                .is_some_and(|(_, t)| t.starts_with("Kill: "))
        })
        .collect();
    // A kick is logged as `<world>` killing the player by MOD_SUICIDE, unless they were
    // already dead (waiting to respawn) when kicked.
    let kick_line = format!("Kill: 1022 {kicked} 20: ");
    let kicks = kill_lines.iter().filter(|l| l.contains(&kick_line)).count() as u32;
    assert!(kicks <= 1, "{kill_lines:?}");

    let total = |f: fn(&oa_run::manifest::PlayerMatchStats) -> u32| -> u32 {
        rec.players.iter().map(f).sum()
    };
    let (kills, suicides, world, deaths) = (
        total(|p| p.kills),
        total(|p| p.suicides),
        total(|p| p.world_deaths),
        total(|p| p.deaths),
    );
    assert!(kills >= 1, "bots at skill 5 frag within seconds");
    assert_eq!(deaths, kills + suicides + world);
    // Every Kill line counted exactly once, except the kick's (absent when the bot was
    // already dead when kicked, as in a CI run where Sarge fragged it a second before).
    assert_eq!(
        kills + suicides + world + kicks,
        kill_lines.len() as u32,
        "{kill_lines:#?}"
    );
    assert_eq!(rec.untrusted_lines, 0);
    assert_eq!(rec.rejected_kills, 0);
    for p in &rec.players {
        assert_eq!(p.kind, ParticipantKind::Bot);
        assert_eq!(p.kills_by_weapon.values().sum::<u32>(), p.kills, "{p:?}");
        // OpenArena 0.8.8 FFA scoring (g_combat.c player_die): +1 a kill; -1 a suicide or
        // world death, but only while the score is above 0 (with 3 or more players). So the
        // final score lies between the two extremes.
        if let Some(score) = p.score {
            let (k, s) = (p.kills as i32, (p.suicides + p.world_deaths) as i32);
            assert!((k - s..=k).contains(&score), "{p:?}");
        }
        assert!(p.time_in_match_s <= outcome.duration_s + 1.0, "{p:?}");
    }
    if outcome.how_ended == HowEnded::Fraglimit {
        assert!(rec.players.iter().any(|p| p.score == Some(6)));
    }
    let k = rec
        .players
        .iter()
        .find(|p| p.slot == u32::from(kicked))
        .unwrap();
    assert!(k.left_early && !k.joined_late && k.score.is_none(), "{k:?}");
    assert!(
        (4.0..outcome.duration_s - 1.0).contains(&k.time_in_match_s),
        "{k:?}"
    );
    let t = rec.players.iter().find(|p| p.name == "Tony").unwrap();
    assert!(t.joined_late && !t.left_early, "{t:?}");
    assert!(t.time_in_match_s < outcome.duration_s - 2.0, "{t:?}");
    assert!(t.time_in_match_s > 0.0, "{t:?}");
    assert_eq!(rec.players.len(), 4);
}
