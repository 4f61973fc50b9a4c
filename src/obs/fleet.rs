//! Every player's OBS at once. Connect, start-all and stop-all run concurrently; each OBS is
//! bounded by its own timeouts, so one slow or dead OBS never holds the others longer.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::client::{Confirmation, IfActive, ObsClient, PreparedStart};
use super::error::ObsError;
use super::{ObsConfig, ObsTarget};
use crate::term::Esc;

/// One recording on one OBS, for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingReport {
    pub label: String,
    /// `host:port` of the OBS.
    pub host: String,
    /// The planned name (FilenameFormatting).
    pub name: String,
    /// The file OBS wrote (from STARTED/STOPPED).
    pub path: Option<String>,
    pub started_wall: Option<DateTime<Utc>>,
    pub stopped_wall: Option<DateTime<Utc>>,
    /// Milliseconds since the fleet's epoch (a monotonic clock shared by all recordings).
    pub started_mono_ms: Option<f64>,
    pub stopped_mono_ms: Option<f64>,
    /// This STARTED minus the earliest STARTED of the same `start_all` (event-confirmed only).
    pub start_offset_ms: Option<f64>,
    pub start_confirmed_by: Option<Confirmation>,
    pub stop_confirmed_by: Option<Confirmation>,
    /// From GetRecordStatus just before StopRecord.
    pub bytes: Option<u64>,
    pub duration_ms: Option<u64>,
    /// The first thing that went wrong, as a sentence.
    pub error: Option<String>,
    /// Where OBS said it records (to check `path` against).
    pub record_dir: Option<String>,
    #[serde(skip)]
    pub started_at: Option<Instant>,
    #[serde(skip)]
    pub stopped_at: Option<Instant>,
    #[serde(skip)]
    pub obs_error: Option<ObsError>,
    /// How far OBS's frame count runs behind the file (measured right after STARTED).
    #[serde(skip)]
    pub encoder_lag: Option<crate::align::EncoderLag>,
}

impl RecordingReport {
    fn new(label: &str, host: String, name: &str) -> Self {
        RecordingReport {
            label: label.to_string(),
            host,
            name: name.to_string(),
            path: None,
            started_wall: None,
            stopped_wall: None,
            started_mono_ms: None,
            stopped_mono_ms: None,
            start_offset_ms: None,
            start_confirmed_by: None,
            stop_confirmed_by: None,
            bytes: None,
            duration_ms: None,
            error: None,
            record_dir: None,
            started_at: None,
            stopped_at: None,
            obs_error: None,
            encoder_lag: None,
        }
    }

    fn fail(&mut self, e: ObsError) {
        if self.error.is_none() {
            self.error = Some(e.to_string());
            self.obs_error = Some(e);
        }
    }

    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The manifest's form of this recording.
    pub fn to_record(&self, player: u32, match_no: u32) -> crate::manifest::RecordingRecord {
        let mut r = crate::manifest::RecordingRecord::planned(player, match_no, &self.name);
        r.path = self.path.clone();
        r.started_at = self.started_wall.map(Into::into);
        r.stopped_at = self.stopped_wall.map(Into::into);
        r.bytes = self.bytes;
        r.duration_ms = self.duration_ms;
        r.error = self.error.clone();
        if let Some(p) = &self.path {
            r.path_flags = super::paths::flags(p, &self.name, self.record_dir.as_deref());
        }
        r
    }
}

/// The outcome of [`Fleet::start_all`].
#[derive(Debug, Clone, Serialize)]
pub struct StartAllReport {
    pub recordings: Vec<RecordingReport>,
    /// Spread of the STARTED times (receipt of the events) across the OBS that confirmed by
    /// event; `None` with fewer than two.
    pub skew_ms: Option<f64>,
    /// Spread of the moments StartRecord was sent.
    pub send_spread_ms: Option<f64>,
}

impl StartAllReport {
    pub fn failed(&self) -> impl Iterator<Item = &RecordingReport> {
        self.recordings.iter().filter(|r| !r.ok())
    }
    pub fn skew(&self) -> Option<Duration> {
        self.skew_ms.map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }
}

/// The outcome of [`Fleet::stop_all`]: the complete reports of the recordings started by
/// the last `start_all`.
#[derive(Debug, Clone, Serialize)]
pub struct StopAllReport {
    pub recordings: Vec<RecordingReport>,
}

impl StopAllReport {
    pub fn failed(&self) -> impl Iterator<Item = &RecordingReport> {
        self.recordings.iter().filter(|r| !r.ok())
    }
}

struct Member {
    target: ObsTarget,
    client: Option<ObsClient>,
    error: Option<ObsError>,
    current: Option<RecordingReport>,
}

/// Every player's OBS. Members are keyed by label (seat or player label).
pub struct Fleet {
    cfg: ObsConfig,
    epoch: Instant,
    members: Vec<Member>,
}

/// Encoder-lag probe: at most this long after STARTED (x264 at 10 fps holds ~1.5 s) ...
const LAG_PROBE_MAX: Duration = Duration::from_secs(6);
/// ... once this many frames are counted ...
const LAG_PROBE_SETTLE_FRAMES: f64 = 5.0;
/// ... until this many polls saw frames counted, ...
const LAG_PROBE_COUNTED: usize = 8;
/// Polls of GetRecordStatus per match edge and recording.
const EDGE_POLLS: usize = 8;
/// ... one poll per this interval (several per frame, so the earliest apparent origin is close).
const LAG_PROBE_INTERVAL: Duration = Duration::from_millis(15);

fn spread(times: impl Iterator<Item = Instant>) -> Option<Duration> {
    let v: Vec<Instant> = times.collect();
    if v.len() < 2 {
        return None;
    }
    let min = *v.iter().min()?;
    let max = *v.iter().max()?;
    Some(max - min)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Fleet {
    pub fn new(cfg: ObsConfig) -> Self {
        Fleet {
            cfg,
            epoch: Instant::now(),
            members: Vec::new(),
        }
    }

    /// Connect to every target concurrently. Failures are kept (see [`Fleet::failures`]).
    pub async fn connect(targets: Vec<ObsTarget>, cfg: ObsConfig) -> Fleet {
        let mut fleet = Fleet::new(cfg.clone());
        // Spawned: the handshakes run on every worker thread, not all in this task.
        let handles: Vec<_> = targets
            .into_iter()
            .map(|t| {
                let h = tokio::spawn(ObsClient::connect(t.clone(), cfg.clone()));
                (t, h)
            })
            .collect();
        for (t, h) in handles {
            let r = h.await.unwrap_or_else(|e| {
                Err(ObsError::Disconnected {
                    addr: t.addr(),
                    detail: format!("the connect task failed: {e}"),
                })
            });
            fleet.put(t, r);
        }
        fleet
    }

    /// Connect one more OBS (a player who just joined). Replaces a member with that label.
    pub async fn connect_one(&mut self, target: ObsTarget) -> Result<(), ObsError> {
        let r = ObsClient::connect(target.clone(), self.cfg.clone()).await;
        let out = r.as_ref().map(|_| ()).map_err(Clone::clone);
        self.put(target, r);
        out
    }

    /// Add an already connected client.
    pub fn insert(&mut self, client: ObsClient) {
        self.put(client.target().clone(), Ok(client));
    }

    fn put(&mut self, target: ObsTarget, r: Result<ObsClient, ObsError>) {
        self.members.retain(|m| m.target.label != target.label);
        let (client, error) = match r {
            Ok(c) => (Some(c), None),
            Err(e) => {
                warn!(obs = %target.addr(), label = %target.label, "{e}");
                (None, Some(e))
            }
        };
        self.members.push(Member {
            target,
            client,
            error,
            current: None,
        });
    }

    /// Remove a member (a kicked player); its connection closes when the client is dropped.
    pub fn remove(&mut self, label: &str) -> Option<ObsClient> {
        let i = self.members.iter().position(|m| m.target.label == label)?;
        self.members.remove(i).client
    }

    pub fn client(&self, label: &str) -> Option<&ObsClient> {
        self.members
            .iter()
            .find(|m| m.target.label == label)
            .and_then(|m| m.client.as_ref())
    }

    /// Labels of the members with a client, in insertion order.
    pub fn connected(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.client.is_some())
            .map(|m| m.target.label.clone())
            .collect()
    }

    /// Members whose connection failed, with why.
    pub fn failures(&self) -> Vec<(String, ObsError)> {
        self.members
            .iter()
            .filter_map(|m| Some((m.target.label.clone(), m.error.clone()?)))
            .collect()
    }

    /// The fleet's monotonic epoch (`*_mono_ms` in reports count from it).
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    fn mono_ms(&self, t: Instant) -> f64 {
        ms(t.saturating_duration_since(self.epoch))
    }

    /// Start a recording on each listed member (`(label, name)`), all at once: every OBS is
    /// prepared concurrently (status checked, file name set), then the StartRecords of all
    /// prepared OBS are sent in one synchronous loop, and each waits for its own STARTED. An
    /// OBS that is slow to prepare holds the others for at most `request_timeout`, then is
    /// started on its own when ready.
    pub async fn start_all(
        &mut self,
        names: &[(String, String)],
        if_active: IfActive,
    ) -> StartAllReport {
        let mut reports: Vec<RecordingReport> = Vec::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut expected = 0usize;
        for (label, name) in names {
            let Some(m) = self.members.iter().find(|m| &m.target.label == label) else {
                let mut r = RecordingReport::new(label, String::new(), name);
                r.error = Some(format!("no OBS is known for `{label}`"));
                reports.push(r);
                continue;
            };
            let mut report = RecordingReport::new(label, m.target.addr(), name);
            let Some(client) = m.client.clone() else {
                report.fail(m.error.clone().unwrap_or_else(|| ObsError::Disconnected {
                    addr: m.target.addr(),
                    detail: "not connected".into(),
                }));
                reports.push(report);
                continue;
            };
            // Spawned so that a slow one keeps preparing while the others are started.
            let tx = tx.clone();
            let name = name.clone();
            expected += 1;
            tokio::spawn(async move {
                let r = client.prepare_start(&name, if_active).await;
                let _ = tx.send((report, r));
            });
        }
        drop(tx);

        let barrier = tokio::time::Instant::now() + self.cfg.request_timeout;
        let mut early = Vec::new();
        while early.len() < expected {
            match tokio::time::timeout_at(barrier, rx.recv()).await {
                Ok(Some(x)) => early.push(x),
                _ => break,
            }
        }
        // The moment of truth: all StartRecords out in one go.
        let in_flight: Vec<_> = early
            .into_iter()
            .map(|(report, r)| (report, r.map(PreparedStart::send)))
            .collect();
        let late_count = expected - in_flight.len();
        let early_waits = join_all(in_flight.into_iter().map(|(report, f)| async move {
            match f {
                Ok(f) => {
                    let sent = f.requested_at();
                    (report, Some(sent), f.wait().await)
                }
                Err(e) => (report, None, Err(e)),
            }
        }));
        let late_waits = async move {
            let mut waits = Vec::new();
            for _ in 0..late_count {
                let Some((report, r)) = rx.recv().await else {
                    break;
                };
                let f = r.map(PreparedStart::send);
                waits.push(async move {
                    match f {
                        Ok(f) => {
                            let sent = f.requested_at();
                            (report, Some(sent), f.wait().await)
                        }
                        Err(e) => (report, None, Err(e)),
                    }
                });
            }
            join_all(waits).await
        };
        let (a, b) = tokio::join!(early_waits, late_waits);
        let mut sends = Vec::new();
        for (mut report, sent, r) in a.into_iter().chain(b) {
            match r {
                Ok(s) => {
                    sends.extend(sent);
                    report.path = s.path;
                    report.record_dir = s.record_dir;
                    if let (Some(p), Some(d)) = (&report.path, &report.record_dir)
                        && !super::paths::inside(d, p)
                    {
                        warn!(obs = %report.host, path = %Esc(p), record_dir = %Esc(d), "OBS reports a recording outside its record directory; kept as reported, flagged in the manifest");
                    }
                    report.started_wall = Some(s.wall);
                    report.started_at = Some(s.at);
                    report.started_mono_ms = Some(self.mono_ms(s.at));
                    report.start_confirmed_by = Some(s.confirmed_by);
                }
                Err(e) => report.fail(e),
            }
            reports.push(report);
        }
        // In the caller's order.
        reports.sort_by_key(|r| names.iter().position(|(l, _)| *l == r.label));
        let by_event = || {
            reports.iter().filter_map(|r| {
                (r.start_confirmed_by == Some(Confirmation::Event))
                    .then_some(r.started_at)
                    .flatten()
            })
        };
        let skew = spread(by_event());
        if let Some(first) = by_event().min() {
            for r in &mut reports {
                if r.start_confirmed_by == Some(Confirmation::Event)
                    && let Some(at) = r.started_at
                {
                    r.start_offset_ms = Some(ms(at - first));
                }
            }
        }
        let send_spread = spread(sends.into_iter());
        self.measure_lags(&mut reports).await;
        for r in &reports {
            if let Some(m) = self.members.iter_mut().find(|m| m.target.label == r.label) {
                m.current = r.ok().then(|| r.clone());
            }
        }
        info!(
            started = reports.iter().filter(|r| r.ok()).count(),
            failed = reports.iter().filter(|r| !r.ok()).count(),
            skew_ms = %skew.map_or_else(|| "none".to_string(), |s| format!("{:.1}", ms(s))),
            "recordings started"
        );
        StartAllReport {
            recordings: reports,
            skew_ms: skew.map(ms),
            send_spread_ms: send_spread.map(ms),
        }
    }

    /// Measure each started recording's encoder lag, concurrently (see
    /// [`crate::align::encoder_lag`]): poll GetRecordStatus from STARTED until the frame count
    /// has moved a few times, within [`LAG_PROBE_MAX`].
    async fn measure_lags(&self, reports: &mut [RecordingReport]) {
        let epoch = self.epoch;
        let jobs = reports.iter().enumerate().filter_map(|(i, r)| {
            let started = r.started_at.filter(|_| r.ok())?;
            let client = self.client(&r.label)?.clone();
            Some(async move {
                let frame = client.frame_interval_ms().await.ok()?;
                let deadline = Instant::now() + LAG_PROBE_MAX;
                let mut polls = Vec::new();
                let mut counted = 0;
                while counted < LAG_PROBE_COUNTED && Instant::now() < deadline {
                    let s = Instant::now();
                    let st = client.record_status().await.ok()?;
                    let e = Instant::now();
                    if !st.output_active {
                        return None;
                    }
                    // Only once the count has settled: the muxer's interleaver hands over the
                    // first packets in a burst, which makes the lag look a frame short (lab:
                    // +115 ms of error with the first polls).
                    if st.output_duration_ms as f64 >= LAG_PROBE_SETTLE_FRAMES * frame {
                        counted += 1;
                        polls.push((
                            ms(s.saturating_duration_since(epoch)),
                            ms(e.saturating_duration_since(epoch)),
                            st.output_duration_ms,
                        ));
                    }
                    tokio::time::sleep(LAG_PROBE_INTERVAL).await;
                }
                let started_ms = ms(started.saturating_duration_since(epoch));
                crate::align::encoder_lag(started_ms, &polls, Some(frame)).map(|l| (i, l))
            })
        });
        for (i, lag) in join_all(jobs).await.into_iter().flatten() {
            info!(obs = %reports[i].host, lag_ms = %format_args!("{:.1}", lag.lag_ms), "encoder lag measured");
            reports[i].encoder_lag = Some(lag);
        }
    }

    /// Sample the timeline of every recording the last `start_all` started, concurrently, each
    /// with its own round trip (GetRecordStatus, then GetVideoSettings for the frame interval),
    /// and place the match edge `reference` (at wall time `reference_at`; the match started at
    /// `match_start`) in each file. Returns `(label, sample or why not)`.
    pub async fn sample_edge(
        &self,
        reference: Instant,
        reference_at: DateTime<Utc>,
        match_start: Instant,
    ) -> Vec<(String, Result<crate::manifest::EdgeSample, String>)> {
        let reference_ms = self.mono_ms(reference);
        let elapsed_ms = ms(reference.saturating_duration_since(match_start));
        let jobs = self
            .members
            .iter()
            .filter(|m| m.current.is_some())
            .map(|m| {
                let label = m.target.label.clone();
                let client = m.client.clone();
                let lag = m.current.as_ref().and_then(|r| r.encoder_lag);
                let epoch = self.epoch;
                async move {
                    let Some(c) = client else {
                        return (label, Err("not connected".to_string()));
                    };
                    let sent = Instant::now();
                    let st = c.record_status().await;
                    let received = Instant::now();
                    let st = match st {
                        Ok(st) => st,
                        Err(e) => return (label, Err(e.to_string())),
                    };
                    // A frame count moves in steps (and in bursts): a few more polls, spread
                    // over more than a frame, average that out. Only while it keeps recording.
                    let mut more = Vec::new();
                    let mut active = st.output_active;
                    for _ in 1..EDGE_POLLS {
                        if !active {
                            break;
                        }
                        tokio::time::sleep(LAG_PROBE_INTERVAL).await;
                        let s = Instant::now();
                        let Ok(p) = c.record_status().await else {
                            break;
                        };
                        let e = Instant::now();
                        active = p.output_active;
                        if active {
                            more.push((
                                ms(s.saturating_duration_since(epoch)),
                                ms(e.saturating_duration_since(epoch)),
                                p.output_duration_ms,
                            ));
                        }
                    }
                    // Asked after the timed requests so it cannot widen their round trips; an
                    // OBS without it counts its timeline in ms.
                    let frame_ms = c.frame_interval_ms().await.ok();
                    let raw = crate::align::RawSample {
                        more,
                        sent_ms: ms(sent.saturating_duration_since(epoch)),
                        received_ms: ms(received.saturating_duration_since(epoch)),
                        output_active: st.output_active,
                        output_duration_ms: st.output_duration_ms,
                        output_timecode: st.output_timecode,
                        frame_ms,
                        lag,
                    };
                    let r = crate::align::edge_sample(
                        &raw,
                        reference_ms,
                        reference_at.into(),
                        elapsed_ms,
                    )
                    .map_err(|e| e.to_string());
                    (label, r)
                }
            });
        join_all(jobs).await
    }

    /// Stop every recording the last `start_all` started, concurrently, each waiting for its
    /// STOPPED within `stop_timeout`.
    pub async fn stop_all(&mut self) -> StopAllReport {
        self.stop_where(|_| true).await
    }

    /// Stop one member's recording (a player who left mid-match); `None` if it was not
    /// recording. The others keep recording.
    pub async fn stop_one(&mut self, label: &str) -> Option<RecordingReport> {
        self.stop_where(|l| l == label).await.recordings.pop()
    }

    async fn stop_where(&mut self, which: impl Fn(&str) -> bool) -> StopAllReport {
        let mut jobs = Vec::new();
        for m in &mut self.members {
            if !which(&m.target.label) {
                continue;
            }
            let Some(report) = m.current.take() else {
                continue;
            };
            let client = m.client.clone();
            jobs.push(async move {
                let r = match client {
                    Some(c) => c.stop_recording().await,
                    None => Err(ObsError::Disconnected {
                        addr: report.host.clone(),
                        detail: "not connected".into(),
                    }),
                };
                (report, r)
            });
        }
        let results = join_all(jobs).await;
        let mut out = Vec::new();
        for (mut report, r) in results {
            match r {
                Ok(s) => {
                    if s.path.is_some() {
                        report.path = s.path;
                    }
                    report.stopped_at = Some(s.at);
                    report.stopped_mono_ms = Some(self.mono_ms(s.at));
                    report.stopped_wall = Some(s.wall);
                    report.stop_confirmed_by = Some(s.confirmed_by);
                    report.bytes = Some(s.bytes);
                    report.duration_ms = Some(s.duration_ms);
                }
                Err(e) => report.fail(e),
            }
            out.push(report);
        }
        info!(
            stopped = out.iter().filter(|r| r.ok()).count(),
            failed = out.iter().filter(|r| !r.ok()).count(),
            "recordings stopped"
        );
        StopAllReport { recordings: out }
    }

    /// Teardown: stop whatever is still recording on any connected OBS (also recordings this
    /// fleet did not start), concurrently. Returns the labels stopped and the failures.
    pub async fn stop_leftovers(&mut self) -> (Vec<String>, Vec<(String, ObsError)>) {
        let open = self.stop_all().await;
        let mut stopped: Vec<String> = open
            .recordings
            .iter()
            .filter(|r| r.ok())
            .map(|r| r.label.clone())
            .collect();
        let mut failed: Vec<(String, ObsError)> = open
            .recordings
            .into_iter()
            .filter_map(|r| Some((r.label, r.obs_error?)))
            .collect();
        let jobs = self.members.iter().filter_map(|m| {
            let c = m.client.clone()?;
            let label = m.target.label.clone();
            Some(async move {
                match c.record_status().await {
                    Ok(s) if s.output_active => (label, Some(c.stop_recording().await.map(|_| ()))),
                    Ok(_) => (label, None),
                    Err(e) => (label, Some(Err(e))),
                }
            })
        });
        for (label, r) in join_all(jobs).await {
            match r {
                Some(Ok(())) => stopped.push(label),
                Some(Err(e)) => failed.push((label, e)),
                None => {}
            }
        }
        (stopped, failed)
    }

    /// Close every connection.
    pub async fn close(self) {
        join_all(
            self.members
                .iter()
                .filter_map(|m| m.client.as_ref())
                .map(|c| c.close()),
        )
        .await;
    }
}
