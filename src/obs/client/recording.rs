//! Recording start and stop, each confirmed by `RecordStateChanged` (STARTED carries the
//! path, STOPPED means the file is final), or by `GetRecordStatus` when no event comes in time.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::{OwnedMutexGuard, watch};
use tokio::time::sleep;
use tracing::{debug, warn};

use super::conn::Pending;
use super::types::{Confirmation, IfActive, StartedRecording, StoppedRecording};
use super::{Link, ObsClient, Shared};
use crate::obs::error::ObsError;
use crate::obs::protocol::{OutputState, RecordStateChanged, status};

/// The recording state as last reported (events, or GetRecordStatus after a reconnect).
#[derive(Debug, Clone)]
pub(super) struct RecordSnap {
    /// Bumped on every change, so a waiter sees only changes after its request.
    pub(super) seq: u64,
    pub(super) state: Option<OutputState>,
    pub(super) active: bool,
    pub(super) path: Option<String>,
    pub(super) at: Instant,
    pub(super) wall: DateTime<Utc>,
    pub(super) from_event: bool,
    pub(super) exiting: bool,
}

impl RecordSnap {
    /// Before anything was reported.
    pub(super) fn initial(at: Instant, wall: DateTime<Utc>) -> Self {
        RecordSnap {
            seq: 0,
            state: None,
            active: false,
            path: None,
            at,
            wall,
            from_event: false,
            exiting: false,
        }
    }

    /// A `RecordStateChanged` event. STARTED and STOPPED carry the path; the states between
    /// keep the last one, and STARTING forgets it (a new recording has no path yet).
    pub(super) fn apply_event(
        &mut self,
        rs: &RecordStateChanged,
        at: Instant,
        wall: DateTime<Utc>,
    ) {
        self.seq += 1;
        self.path = match (&rs.output_path, &rs.output_state) {
            (Some(p), _) => Some(p.clone()),
            (None, OutputState::Starting) => None,
            (None, _) => self.path.take(),
        };
        self.state = Some(rs.output_state.clone());
        self.active = rs.output_active;
        self.at = at;
        self.wall = wall;
        self.from_event = true;
    }

    /// What `GetRecordStatus` said after a (re)connect. The path survives only if the same
    /// recording was active before and still is; a fresh session is not exiting.
    pub(super) fn apply_status(&mut self, active: bool, at: Instant, wall: DateTime<Utc>) {
        let was_active = self.active;
        self.seq += 1;
        self.active = active;
        self.state = Some(if active {
            OutputState::Started
        } else {
            OutputState::Stopped
        });
        if !(active && was_active) {
            self.path = None;
        }
        self.at = at;
        self.wall = wall;
        self.from_event = false;
        self.exiting = false;
    }

    /// Whether this state ends a wait for `want` that began at `seq0`: `None` while it does
    /// not (nothing new yet, or a state on the way), else the confirmed state or the error.
    fn settles(&self, want: Want, seq0: u64, addr: &str) -> Option<Result<RecordSnap, ObsError>> {
        if self.exiting {
            return Some(Err(ObsError::Exiting {
                addr: addr.to_string(),
            }));
        }
        if self.seq <= seq0 {
            return None;
        }
        use OutputState::*;
        match (want, self.state.as_ref()) {
            (Want::Started, Some(Started)) | (Want::Stopped, Some(Stopped)) => {
                Some(Ok(self.clone()))
            }
            (Want::Started, Some(Stopping | Stopped)) => {
                Some(Err(ObsError::UnexpectedRecordState {
                    addr: addr.to_string(),
                    expected: "STARTED",
                    got: self
                        .state
                        .as_ref()
                        .map(OutputState::wire)
                        .unwrap_or_default(),
                }))
            }
            _ => None,
        }
    }
}

impl ObsClient {
    /// Start a recording named `name` (no extension; OBS adds it) and wait for STARTED.
    pub async fn start_recording(
        &self,
        name: &str,
        if_active: IfActive,
    ) -> Result<StartedRecording, ObsError> {
        self.prepare_start(name, if_active).await?.fire().await
    }

    /// Everything before StartRecord: checks that nothing is recording (and that a previous
    /// stop has finished), sets the file name. The fleet prepares every OBS, then fires all
    /// StartRecords together to keep the start skew small. Holds this OBS's operation lock
    /// until fired or dropped.
    pub async fn prepare_start(
        &self,
        name: &str,
        if_active: IfActive,
    ) -> Result<PreparedStart, ObsError> {
        crate::plan::names::check_file_name(name).map_err(|reason| ObsError::BadName {
            name: name.to_string(),
            reason,
        })?;
        let guard = self.shared.op_lock.clone().lock_owned().await;
        self.check_not_exiting()?;
        // Never StartRecord before the previous STOPPED (it would fail or lose the recording).
        self.wait_previous_stop().await?;
        let st = self.record_status().await?;
        if st.output_active {
            match if_active {
                IfActive::Refuse => {
                    return Err(ObsError::AlreadyRecording {
                        addr: self.shared.addr.clone(),
                        timecode: st.output_timecode,
                    });
                }
                IfActive::StopFirst => {
                    warn!(obs = %self.shared.addr, "stopping a recording that was already running ({})", st.output_timecode);
                    self.stop_locked().await?;
                }
            }
        }
        self.request(
            "SetProfileParameter",
            Some(json!({
                "parameterCategory": "Output",
                "parameterName": "FilenameFormatting",
                "parameterValue": name,
            })),
        )
        .await?;
        // Where the file should land, to flag a reported path elsewhere (5.0.0+; optional).
        let record_dir = match self.request("GetRecordDirectory", None).await {
            Ok(v) => v
                .get("recordDirectory")
                .and_then(Value::as_str)
                .map(str::to_string),
            Err(e) => {
                debug!(obs = %self.shared.addr, "GetRecordDirectory: {e}");
                None
            }
        };
        Ok(PreparedStart {
            client: self.clone(),
            name: name.to_string(),
            record_dir,
            _guard: guard,
        })
    }

    fn check_not_exiting(&self) -> Result<(), ObsError> {
        if self.shared.record.borrow().exiting {
            return Err(ObsError::Exiting {
                addr: self.shared.addr.clone(),
            });
        }
        Ok(())
    }

    async fn wait_previous_stop(&self) -> Result<(), ObsError> {
        let mut rx = self.shared.record.subscribe();
        let snap = rx.borrow_and_update().clone();
        if snap.state != Some(OutputState::Stopping) {
            return Ok(());
        }
        debug!(obs = %self.shared.addr, "waiting for the previous recording's STOPPED");
        let deadline = Instant::now() + self.shared.cfg.stop_timeout;
        match wait_record(&self.shared, &mut rx, snap.seq, deadline, Want::Stopped).await {
            Ok(_) => {
                self.settle_after_stop(deadline).await;
                Ok(())
            }
            Err(WaitErr::Timeout) => Err(ObsError::StopTimeout {
                addr: self.shared.addr.clone(),
                timeout: self.shared.cfg.stop_timeout,
            }),
            Err(WaitErr::Obs(e)) => Err(e),
        }
    }

    /// StopRecord, then wait for STOPPED (the file is final only then). Bytes and duration
    /// come from GetRecordStatus just before the stop.
    pub async fn stop_recording(&self) -> Result<StoppedRecording, ObsError> {
        let _guard = self.shared.op_lock.clone().lock_owned().await;
        self.stop_locked().await
    }

    async fn stop_locked(&self) -> Result<StoppedRecording, ObsError> {
        let addr = self.shared.addr.clone();
        let before = self.record_status().await?;
        if !before.output_active {
            return Err(ObsError::NotRecording { addr });
        }
        let t = self.shared.cfg.stop_timeout;
        let sent = Sent::now(self, "StopRecord");
        let requested_at = sent.requested_at;
        let (resp, outcome) = match sent.outcome(&self.shared, Want::Stopped, t).await {
            Err(ObsError::RequestFailed { code, .. }) if code == status::OUTPUT_NOT_RUNNING => {
                return Err(ObsError::NotRecording { addr });
            }
            r => r?,
        };
        let deadline = requested_at + t;
        let response_path = resp
            .as_ref()
            .and_then(|v| v.get("outputPath"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let done = |path: Option<String>, at, wall, confirmed_by| StoppedRecording {
            addr: addr.clone(),
            path: path.or_else(|| response_path.clone()),
            requested_at,
            at,
            wall,
            confirmed_by,
            bytes: before.output_bytes,
            duration_ms: before.output_duration_ms,
        };
        match outcome {
            Ok(s) => {
                self.settle_after_stop(deadline).await;
                Ok(done(s.path, s.at, s.wall, Confirmation::by(s.from_event)))
            }
            Err(WaitErr::Obs(e)) => Err(e),
            Err(WaitErr::Timeout) => {
                let st = self.record_status().await?;
                if st.output_active {
                    Err(ObsError::StopTimeout { addr, timeout: t })
                } else {
                    warn!(obs = %addr, "no STOPPED event within {t:?}, but OBS says it is not recording");
                    Ok(done(None, Instant::now(), Utc::now(), Confirmation::Status))
                }
            }
        }
    }

    /// OBS 29 sends STOPPED ~15 ms before GetRecordStatus stops saying `outputActive`
    /// (measured); a start in that gap would be refused. Wait until the status agrees
    /// (bounded by the stop deadline, at least 1 s), so "stopped" means idle.
    async fn settle_after_stop(&self, deadline: Instant) {
        let deadline = deadline.max(Instant::now() + Duration::from_secs(1));
        loop {
            match self.record_status().await {
                Ok(st) if !st.output_active => return,
                Ok(_) if Instant::now() < deadline => sleep(Duration::from_millis(10)).await,
                Ok(_) => {
                    warn!(obs = %self.shared.addr, "OBS still reports an active recording after STOPPED");
                    return;
                }
                Err(e) => {
                    debug!(obs = %self.shared.addr, "GetRecordStatus after STOPPED: {e}");
                    return;
                }
            }
        }
    }
}

/// A start that is ready to fire (see [`ObsClient::prepare_start`]).
pub struct PreparedStart {
    client: ObsClient,
    name: String,
    record_dir: Option<String>,
    _guard: OwnedMutexGuard<()>,
}

impl PreparedStart {
    pub fn client(&self) -> &ObsClient {
        &self.client
    }

    /// Send StartRecord now, without awaiting anything (so a fleet can send them all within
    /// microseconds), then [`StartInFlight::wait`].
    pub fn send(self) -> StartInFlight {
        let sent = Sent::now(&self.client, "StartRecord");
        StartInFlight {
            prepared: self,
            sent,
        }
    }

    /// Send StartRecord and wait for STARTED within `start_timeout`; on timeout ask
    /// GetRecordStatus before calling it a failure.
    pub async fn fire(self) -> Result<StartedRecording, ObsError> {
        self.send().wait().await
    }
}

/// A StartRecord that has been sent.
pub struct StartInFlight {
    prepared: PreparedStart,
    sent: Sent,
}

impl StartInFlight {
    /// When StartRecord was handed to the connection.
    pub fn requested_at(&self) -> Instant {
        self.sent.requested_at
    }

    /// Wait for STARTED (or the GetRecordStatus confirmation) within `start_timeout`.
    pub async fn wait(self) -> Result<StartedRecording, ObsError> {
        let client = &self.prepared.client;
        let shared = &client.shared;
        let addr = shared.addr.clone();
        let t = shared.cfg.start_timeout;
        let requested_at = self.sent.requested_at;
        let (_, outcome) = match self.sent.outcome(shared, Want::Started, t).await {
            Err(ObsError::RequestFailed { code, .. }) if code == status::OUTPUT_RUNNING => {
                return Err(ObsError::AlreadyRecording {
                    addr,
                    timecode: "unknown".into(),
                });
            }
            r => r?,
        };
        let started = |path, at, wall, confirmed_by| StartedRecording {
            addr: addr.clone(),
            name: self.prepared.name.clone(),
            path,
            requested_at,
            at,
            wall,
            confirmed_by,
            record_dir: self.prepared.record_dir.clone(),
        };
        match outcome {
            Ok(s) => Ok(started(
                s.path,
                s.at,
                s.wall,
                Confirmation::by(s.from_event),
            )),
            Err(WaitErr::Obs(e)) => Err(e),
            Err(WaitErr::Timeout) => {
                let st = client.record_status().await?;
                if st.output_active {
                    warn!(obs = %addr, "no STARTED event within {t:?}, but OBS says it is recording");
                    Ok(started(
                        None,
                        Instant::now(),
                        Utc::now(),
                        Confirmation::Status,
                    ))
                } else {
                    Err(ObsError::StartTimeout { addr, timeout: t })
                }
            }
        }
    }
}

/// A StartRecord/StopRecord on the wire, with the record-state position it was sent at.
struct Sent {
    rx: watch::Receiver<RecordSnap>,
    seq0: u64,
    requested_at: Instant,
    pending: Result<Pending, ObsError>,
}

impl Sent {
    fn now(client: &ObsClient, request: &str) -> Sent {
        let shared = &client.shared;
        let mut rx = shared.record.subscribe();
        let seq0 = rx.borrow_and_update().seq;
        let requested_at = Instant::now();
        let pending = match &*shared.link.borrow() {
            Link::Up(c) => c.begin(request, None),
            Link::Reconnecting(e) | Link::Closed(e) => Err(e.clone()),
            Link::Connecting => Err(ObsError::Disconnected {
                addr: shared.addr.clone(),
                detail: "not connected".into(),
            }),
        };
        Sent {
            rx,
            seq0,
            requested_at,
            pending,
        }
    }

    /// Wait for the response and for the record state, both at once: the event may arrive
    /// before a late response. A response that times out leaves the decision to the event (or
    /// to GetRecordStatus afterwards); an error response ends it.
    async fn outcome(
        mut self,
        shared: &Shared,
        want: Want,
        t: Duration,
    ) -> Result<(Option<Value>, Result<RecordSnap, WaitErr>), ObsError> {
        let deadline = self.requested_at + t;
        let left = deadline.saturating_duration_since(Instant::now());
        let req = self.pending?.finish(left);
        let wait = wait_record(shared, &mut self.rx, self.seq0, deadline, want);
        tokio::pin!(req, wait);
        let mut resp = None;
        let mut resp_done = false;
        let outcome = loop {
            tokio::select! {
                r = &mut req, if !resp_done => {
                    resp_done = true;
                    match r {
                        Ok(v) => resp = Some(v),
                        Err(ObsError::RequestTimeout { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                w = &mut wait => break w,
            }
        };
        Ok((resp, outcome))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    Started,
    Stopped,
}

enum WaitErr {
    Timeout,
    Obs(ObsError),
}

/// Wait for a record state after `seq0`. A drop of the connection ends the wait at once:
/// the state of the recording is then unknown and the caller decides.
async fn wait_record(
    shared: &Shared,
    rx: &mut watch::Receiver<RecordSnap>,
    seq0: u64,
    deadline: Instant,
    want: Want,
) -> Result<RecordSnap, WaitErr> {
    let mut link = shared.link.subscribe();
    loop {
        let settled = rx.borrow_and_update().settles(want, seq0, &shared.addr);
        if let Some(r) = settled {
            return r.map_err(WaitErr::Obs);
        }
        match &*link.borrow_and_update() {
            Link::Reconnecting(e) | Link::Closed(e) => return Err(WaitErr::Obs(e.clone())),
            _ => {}
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() {
                return Err(WaitErr::Obs(ObsError::Shutdown { addr: shared.addr.clone() }));
            },
            _ = link.changed() => {},
            _ = tokio::time::sleep_until(deadline.into()) => return Err(WaitErr::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> RecordSnap {
        RecordSnap::initial(Instant::now(), Utc::now())
    }

    fn event(state: OutputState, active: bool, path: Option<&str>) -> RecordStateChanged {
        RecordStateChanged {
            output_active: active,
            output_state: state,
            output_path: path.map(str::to_string),
        }
    }

    fn apply(s: &mut RecordSnap, state: OutputState, active: bool, path: Option<&str>) {
        s.apply_event(&event(state, active, path), Instant::now(), Utc::now());
    }

    #[test]
    fn the_path_comes_with_started_and_survives_until_the_next_start() {
        let mut s = snap();
        apply(&mut s, OutputState::Starting, false, None);
        assert_eq!(s.path, None);
        apply(&mut s, OutputState::Started, true, Some("/rec/a.mkv"));
        assert_eq!(s.path.as_deref(), Some("/rec/a.mkv"));
        apply(&mut s, OutputState::Stopping, true, None);
        assert_eq!(
            s.path.as_deref(),
            Some("/rec/a.mkv"),
            "STOPPING has no path"
        );
        apply(&mut s, OutputState::Stopped, false, Some("/rec/a.mkv"));
        assert!(!s.active && s.from_event && s.seq == 4);
        apply(&mut s, OutputState::Starting, false, None);
        assert_eq!(
            s.path, None,
            "a new recording must not inherit the old path"
        );
    }

    #[test]
    fn a_status_keeps_the_path_only_for_the_same_active_recording() {
        let mut s = snap();
        apply(&mut s, OutputState::Started, true, Some("/rec/a.mkv"));
        s.exiting = true;
        s.apply_status(true, Instant::now(), Utc::now());
        assert_eq!(s.path.as_deref(), Some("/rec/a.mkv"));
        assert!(!s.exiting && !s.from_event);
        assert_eq!(s.state, Some(OutputState::Started));
        s.apply_status(false, Instant::now(), Utc::now());
        assert_eq!(
            (s.path.clone(), s.state.clone()),
            (None, Some(OutputState::Stopped))
        );
        s.apply_status(true, Instant::now(), Utc::now());
        assert_eq!(s.path, None, "inactive before: an unknown recording");
    }

    #[test]
    fn only_changes_after_the_request_settle_a_wait() {
        let mut s = snap();
        apply(&mut s, OutputState::Started, true, Some("/old.mkv"));
        let seq0 = s.seq;
        assert!(
            s.settles(Want::Started, seq0, "a").is_none(),
            "an old STARTED"
        );
        apply(&mut s, OutputState::Starting, false, None);
        assert!(s.settles(Want::Started, seq0, "a").is_none(), "on the way");
        apply(&mut s, OutputState::Started, true, Some("/new.mkv"));
        let got = s.settles(Want::Started, seq0, "a").unwrap().unwrap();
        assert_eq!(got.path.as_deref(), Some("/new.mkv"));
        assert!(s.settles(Want::Stopped, seq0, "a").is_none());
    }

    #[test]
    fn a_stop_while_waiting_for_start_and_an_exit_are_errors() {
        let mut s = snap();
        apply(&mut s, OutputState::Stopping, true, None);
        match s.settles(Want::Started, 0, "a") {
            Some(Err(ObsError::UnexpectedRecordState { expected, got, .. })) => {
                assert_eq!(expected, "STARTED");
                assert_eq!(got, "OBS_WEBSOCKET_OUTPUT_STOPPING");
            }
            other => panic!("{other:?}"),
        }
        assert!(s.settles(Want::Stopped, 0, "a").is_none());
        s.exiting = true;
        // Exiting ends every wait, even with nothing new since the request.
        assert!(matches!(
            s.settles(Want::Stopped, s.seq, "a"),
            Some(Err(ObsError::Exiting { .. }))
        ));
    }

    #[test]
    fn confirmation_says_how() {
        assert_eq!(Confirmation::by(true), Confirmation::Event);
        assert_eq!(Confirmation::by(false), Confirmation::Status);
    }
}
