//! One OBS: connection, requests, events, keepalive, reconnect, recording control.
//!
//! Tasks per connection: a reader (responses to waiting requests, events to a broadcast
//! channel and to the recording state; it never waits on a subscriber), a writer, and a
//! keepalive. One supervisor per client notices a dropped connection and reconnects with
//! backoff within `reconnect_window`, except after a final close (4011, 4009, 4010).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{OwnedMutexGuard, broadcast, mpsc, oneshot, watch};
use tokio::time::{sleep, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, warn};

use super::error::ObsError;
use super::protocol::{
    self, OutputState, RecordStateChanged, RecordStatus, RequestResponse, ServerMessage, Stats,
    VersionInfo, close, status, subs,
};
use super::{ObsConfig, ObsTarget};

type Ws = WebSocketStream<TcpStream>;

/// What a connected OBS told us about itself.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub version: VersionInfo,
    /// Whether the server asked for a password (and accepted ours).
    pub authenticated: bool,
    pub negotiated_rpc_version: u32,
    /// Optional requests, decided from `availableRequests` (never from version strings).
    pub can_set_record_directory: bool,
    pub can_split_record_file: bool,
    /// When this session was identified (the latest one, after reconnects).
    pub connected_at: DateTime<Utc>,
}

impl ServerInfo {
    fn new(version: VersionInfo, authenticated: bool, negotiated_rpc_version: u32) -> Self {
        ServerInfo {
            can_set_record_directory: version.supports("SetRecordDirectory"),
            can_split_record_file: version.supports("SplitRecordFile"),
            version,
            authenticated,
            negotiated_rpc_version,
            connected_at: Utc::now(),
        }
    }

    /// Fill the manifest's record of a player's OBS.
    pub fn fill(&self, rec: &mut crate::manifest::ObsRecord) {
        rec.connected_at = Some(self.connected_at.into());
        rec.obs_version = Some(self.version.obs_version.clone());
        rec.websocket_version = Some(self.version.obs_web_socket_version.clone());
        rec.rpc_version = Some(self.negotiated_rpc_version);
        rec.error = None;
    }
}

/// Something that happened on one OBS. Subscribers that fall behind lose the oldest events
/// (`RecvError::Lagged`); the recording logic does not depend on them.
#[derive(Debug, Clone)]
pub enum ObsEvent {
    RecordStateChanged {
        state: OutputState,
        active: bool,
        path: Option<String>,
        /// When the reader received it.
        at: Instant,
        wall: DateTime<Utc>,
    },
    /// OBS is shutting down (a close 1001 follows; no STOPPED for a running recording).
    ExitStarted,
    /// The connection dropped; a reconnect follows unless [`ObsEvent::Closed`] comes next.
    Disconnected(ObsError),
    /// Connected again; `record_active` is what GetRecordStatus said afterwards.
    Reconnected { record_active: Option<bool> },
    /// The client gave up for good (4011, wrong password, reconnect window over, closed).
    Closed(ObsError),
    /// Any other event, as sent.
    Other { event_type: String, data: Value },
}

/// The connection as seen by a caller.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkState {
    Connecting,
    Connected,
    Reconnecting { last_error: ObsError },
    Closed(ObsError),
}

/// What to do when OBS is already recording at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IfActive {
    /// Refuse with [`ObsError::AlreadyRecording`] (a previous session left it running).
    #[default]
    Refuse,
    /// Stop that recording (waiting for STOPPED), then start ours.
    StopFirst,
}

/// How a recording state was confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confirmation {
    /// `RecordStateChanged` arrived (the reliable way; it carries the path).
    Event,
    /// No event in time, but `GetRecordStatus` agreed (no path; times are when we asked).
    Status,
}

impl Confirmation {
    fn by(from_event: bool) -> Self {
        if from_event {
            Confirmation::Event
        } else {
            Confirmation::Status
        }
    }
}

/// A recording that OBS confirmed started.
#[derive(Debug, Clone)]
pub struct StartedRecording {
    pub addr: String,
    pub name: String,
    /// From RecordStateChanged STARTED; `None` when confirmed by status only.
    pub path: Option<String>,
    /// When StartRecord was sent.
    pub requested_at: Instant,
    /// When STARTED was received (or the status confirmed it).
    pub at: Instant,
    pub wall: DateTime<Utc>,
    pub confirmed_by: Confirmation,
}

/// A recording that OBS confirmed stopped (the file is final).
#[derive(Debug, Clone)]
pub struct StoppedRecording {
    pub addr: String,
    /// From STOPPED, else from the StopRecord response.
    pub path: Option<String>,
    pub requested_at: Instant,
    pub at: Instant,
    pub wall: DateTime<Utc>,
    pub confirmed_by: Confirmation,
    /// From GetRecordStatus just before StopRecord.
    pub bytes: u64,
    pub duration_ms: u64,
}

/// The recording state as last reported (events, or GetRecordStatus after a reconnect).
#[derive(Debug, Clone)]
struct RecordSnap {
    /// Bumped on every change, so a waiter sees only changes after its request.
    seq: u64,
    state: Option<OutputState>,
    active: bool,
    path: Option<String>,
    at: Instant,
    wall: DateTime<Utc>,
    from_event: bool,
    exiting: bool,
}

#[derive(Clone)]
enum Link {
    Connecting,
    Up(Arc<Conn>),
    Reconnecting(ObsError),
    Closed(ObsError),
}

struct Shared {
    addr: String,
    target: ObsTarget,
    cfg: ObsConfig,
    link: watch::Sender<Link>,
    record: watch::Sender<RecordSnap>,
    events: broadcast::Sender<ObsEvent>,
    info: StdMutex<Option<ServerInfo>>,
    stats: StdMutex<Option<Stats>>,
    shutdown: watch::Sender<bool>,
    /// One recording operation at a time per OBS (start and stop must not interleave).
    op_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Dropping the last clone of a client shuts its connection down.
struct ShutdownOnDrop(watch::Sender<bool>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// A connection to one OBS. Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct ObsClient {
    shared: Arc<Shared>,
    _guard: Arc<ShutdownOnDrop>,
}

impl std::fmt::Debug for ObsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObsClient")
            .field("target", &self.shared.target)
            .field("state", &self.link_state())
            .finish()
    }
}

impl ObsClient {
    /// Connect (TCP, Hello, Identify with General|Outputs, GetVersion, GetRecordStatus),
    /// retrying `cfg.retries` times with backoff; a rejected password or an incompatible
    /// server is not retried.
    pub async fn connect(target: ObsTarget, cfg: ObsConfig) -> Result<ObsClient, ObsError> {
        let (link, _) = watch::channel(Link::Connecting);
        let now = Instant::now();
        let (record, _) = watch::channel(RecordSnap {
            seq: 0,
            state: None,
            active: false,
            path: None,
            at: now,
            wall: Utc::now(),
            from_event: false,
            exiting: false,
        });
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            addr: target.addr(),
            target,
            cfg,
            link,
            record,
            events: broadcast::channel(256).0,
            info: StdMutex::new(None),
            stats: StdMutex::new(None),
            shutdown,
            op_lock: Arc::new(tokio::sync::Mutex::new(())),
        });
        let mut attempt = 0;
        let conn = loop {
            attempt += 1;
            match establish(&shared).await {
                Ok(c) => break c,
                Err(e) if !e.is_retryable() || attempt > shared.cfg.retries => {
                    return Err(e.with_attempts(attempt));
                }
                Err(e) => {
                    let d = shared.cfg.backoff(attempt);
                    debug!(obs = %shared.addr, attempt, "connect failed ({e}); retrying in {d:?}");
                    sleep(d).await;
                }
            }
        };
        let setup = KillOnDrop(Some(conn.clone()));
        shared.link.send_replace(Link::Up(conn.clone()));
        reconcile(&shared, &conn).await;
        info!(obs = %shared.addr, label = %shared.target.label, "connected to OBS");
        let guard = Arc::new(ShutdownOnDrop(shared.shutdown.clone()));
        tokio::spawn(supervise(shared.clone(), conn));
        setup.disarm();
        Ok(ObsClient {
            shared,
            _guard: guard,
        })
    }

    pub fn target(&self) -> &ObsTarget {
        &self.shared.target
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// What OBS said at the last (re)connect.
    pub fn server_info(&self) -> ServerInfo {
        self.shared
            .info
            .lock()
            .expect("info lock")
            .clone()
            .expect("set before connect returns")
    }

    /// The last keepalive's statistics.
    pub fn last_stats(&self) -> Option<Stats> {
        self.shared.stats.lock().expect("stats lock").clone()
    }

    pub fn link_state(&self) -> LinkState {
        match &*self.shared.link.borrow() {
            Link::Connecting => LinkState::Connecting,
            Link::Up(_) => LinkState::Connected,
            Link::Reconnecting(e) => LinkState::Reconnecting {
                last_error: e.clone(),
            },
            Link::Closed(e) => LinkState::Closed(e.clone()),
        }
    }

    /// Wait until the client is connected (e.g. after a reconnect), at most `t`.
    pub async fn wait_connected(&self, t: Duration) -> Result<(), ObsError> {
        self.wait_up(Instant::now() + t).await.map(|_| ())
    }

    /// Wait until the client gives up for good, at most `t`; returns the final error.
    pub async fn wait_closed(&self, t: Duration) -> Option<ObsError> {
        let mut rx = self.shared.link.subscribe();
        let r = timeout(t, rx.wait_for(|l| matches!(l, Link::Closed(_)))).await;
        match r {
            Ok(Ok(l)) => match &*l {
                Link::Closed(e) => Some(e.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Events from now on.
    pub fn events(&self) -> broadcast::Receiver<ObsEvent> {
        self.shared.events.subscribe()
    }

    /// Any request, with the default request timeout. Returns `responseData` (or null).
    pub async fn request(
        &self,
        request_type: &str,
        data: Option<Value>,
    ) -> Result<Value, ObsError> {
        self.request_timeout(request_type, data, self.shared.cfg.request_timeout)
            .await
    }

    /// Any request with its own timeout. While reconnecting it waits for the connection
    /// within the same timeout.
    pub async fn request_timeout(
        &self,
        request_type: &str,
        data: Option<Value>,
        t: Duration,
    ) -> Result<Value, ObsError> {
        let deadline = Instant::now() + t;
        let conn = self.wait_up(deadline).await?;
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.request(request_type, data, left).await {
            // Report the timeout the caller asked for, not what was left of it.
            Err(ObsError::RequestTimeout { addr, request, .. }) => Err(ObsError::RequestTimeout {
                addr,
                request,
                timeout: t,
            }),
            r => r,
        }
    }

    pub async fn record_status(&self) -> Result<RecordStatus, ObsError> {
        let v = self.request("GetRecordStatus", None).await?;
        RecordStatus::from_data(&v).ok_or_else(|| self.protocol("GetRecordStatus", &v))
    }

    pub async fn stats(&self) -> Result<Stats, ObsError> {
        let v = self.request("GetStats", None).await?;
        let s = Stats::from_data(&v).ok_or_else(|| self.protocol("GetStats", &v))?;
        *self.shared.stats.lock().expect("stats lock") = Some(s.clone());
        Ok(s)
    }

    fn protocol(&self, what: &str, v: &Value) -> ObsError {
        let mut s = v.to_string();
        s.truncate(200);
        ObsError::Protocol {
            addr: self.shared.addr.clone(),
            detail: format!("unexpected {what} response {s}"),
        }
    }

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
        Ok(PreparedStart {
            client: self.clone(),
            name: name.to_string(),
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

    /// Close the connection (no reconnect). Other clones see [`LinkState::Closed`].
    pub async fn close(&self) {
        self.shared.shutdown.send_replace(true);
        let mut rx = self.shared.link.subscribe();
        let _ = timeout(
            Duration::from_secs(2),
            rx.wait_for(|l| matches!(l, Link::Closed(_))),
        )
        .await;
    }

    async fn wait_up(&self, deadline: Instant) -> Result<Arc<Conn>, ObsError> {
        let mut rx = self.shared.link.subscribe();
        loop {
            let last = match &*rx.borrow_and_update() {
                Link::Up(c) => return Ok(c.clone()),
                Link::Closed(e) => return Err(e.clone()),
                Link::Reconnecting(e) => Some(e.clone()),
                Link::Connecting => None,
            };
            match timeout_at(deadline.into(), rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(last.unwrap_or_else(|| ObsError::Disconnected {
                        addr: self.shared.addr.clone(),
                        detail: "not connected yet".into(),
                    }));
                }
            }
        }
    }
}

/// A start that is ready to fire (see [`ObsClient::prepare_start`]).
pub struct PreparedStart {
    client: ObsClient,
    name: String,
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

#[derive(Clone, Copy, PartialEq, Eq)]
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
        {
            let s = rx.borrow_and_update();
            if s.exiting {
                return Err(WaitErr::Obs(ObsError::Exiting {
                    addr: shared.addr.clone(),
                }));
            }
            if s.seq > seq0 {
                use OutputState::*;
                match (want, s.state.as_ref()) {
                    (Want::Started, Some(Started)) | (Want::Stopped, Some(Stopped)) => {
                        return Ok(s.clone());
                    }
                    (Want::Started, Some(Stopping | Stopped)) => {
                        return Err(WaitErr::Obs(ObsError::UnexpectedRecordState {
                            addr: shared.addr.clone(),
                            expected: "STARTED",
                            got: s.state.as_ref().map(OutputState::wire).unwrap_or_default(),
                        }));
                    }
                    _ => {}
                }
            }
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

// ---- one connection ------------------------------------------------------------------------

enum Out {
    Text(String),
    Close(u16),
    Stop,
}

struct PendingTable {
    map: HashMap<String, oneshot::Sender<RequestResponse>>,
    closed: Option<ObsError>,
}

struct Conn {
    addr: String,
    out: mpsc::UnboundedSender<Out>,
    pending: StdMutex<PendingTable>,
    /// Set once, when the connection ends; the first error wins.
    ended: watch::Sender<Option<ObsError>>,
}

impl Conn {
    fn finish(&self, err: ObsError, close_code: Option<u16>) {
        let first = {
            let mut p = self.pending.lock().expect("pending lock");
            if p.closed.is_some() {
                false
            } else {
                p.closed = Some(err.clone());
                // Dropping the senders wakes every waiting request with this error.
                p.map.clear();
                true
            }
        };
        if first {
            let _ = self.out.send(match close_code {
                Some(c) => Out::Close(c),
                None => Out::Stop,
            });
            self.ended.send_replace(Some(err));
        }
    }

    /// End the connection from our side (keepalive timeout, shutdown).
    fn kill(&self, err: ObsError) {
        self.finish(err, Some(1000));
    }

    fn closed_error(&self) -> ObsError {
        self.pending
            .lock()
            .expect("pending lock")
            .closed
            .clone()
            .unwrap_or_else(|| ObsError::Disconnected {
                addr: self.addr.clone(),
                detail: "the connection closed".into(),
            })
    }

    async fn request(
        self: &Arc<Self>,
        request_type: &str,
        data: Option<Value>,
        t: Duration,
    ) -> Result<Value, ObsError> {
        self.begin(request_type, data)?.finish(t).await
    }

    /// Send a request now, without waiting (the fleet sends all StartRecords in one go).
    fn begin(
        self: &Arc<Self>,
        request_type: &str,
        data: Option<Value>,
    ) -> Result<Pending, ObsError> {
        let id = format!("{:x}", ID_COUNTER.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().expect("pending lock");
            if let Some(e) = &p.closed {
                return Err(e.clone());
            }
            p.map.insert(id.clone(), tx);
        }
        // From here on the guard removes the entry if the response never comes.
        let pending = Pending {
            conn: self.clone(),
            id,
            request_type: request_type.to_string(),
            rx,
        };
        let frame = protocol::encode_request(request_type, &pending.id, data);
        if self.out.send(Out::Text(frame)).is_err() {
            return Err(self.closed_error());
        }
        Ok(pending)
    }
}

/// A request on the wire, waiting for its response.
struct Pending {
    conn: Arc<Conn>,
    id: String,
    request_type: String,
    rx: oneshot::Receiver<RequestResponse>,
}

impl Pending {
    async fn finish(mut self, t: Duration) -> Result<Value, ObsError> {
        let conn = self.conn.clone();
        match timeout(t, &mut self.rx).await {
            Ok(Ok(r)) => {
                if r.request_status.result {
                    Ok(r.response_data.unwrap_or(Value::Null))
                } else {
                    Err(ObsError::RequestFailed {
                        addr: conn.addr.clone(),
                        request: self.request_type.clone(),
                        code: r.request_status.code,
                        comment: r.request_status.comment.unwrap_or_default(),
                    })
                }
            }
            Ok(Err(_)) => Err(conn.closed_error()),
            Err(_) => Err(ObsError::RequestTimeout {
                addr: conn.addr.clone(),
                request: self.request_type.clone(),
                timeout: t,
            }),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(mut p) = self.conn.pending.lock() {
            p.map.remove(&self.id);
        }
    }
}

/// requestIds are unique per process, so a late response can never be taken for another.
static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

fn close_error(addr: &str, frame: Option<CloseFrame>, exiting: bool) -> ObsError {
    let addr = addr.to_string();
    match frame {
        None => ObsError::Disconnected {
            addr,
            detail: "OBS closed the connection without a close code".into(),
        },
        Some(f) => {
            let code: u16 = f.code.into();
            match code {
                close::AUTHENTICATION_FAILED => ObsError::AuthFailed { addr },
                close::GOING_AWAY if exiting => ObsError::Exiting { addr },
                _ => ObsError::Closed {
                    addr,
                    code,
                    reason: f.reason.as_str().chars().take(200).collect(),
                },
            }
        }
    }
}

fn ws_error(addr: &str, e: tungstenite::Error) -> ObsError {
    use tungstenite::Error as E;
    let detail = match e {
        E::ConnectionClosed | E::AlreadyClosed => {
            "the connection closed without a close frame (1006)".to_string()
        }
        E::Io(io) => format!("{io} (1006: OBS was killed or the network failed)"),
        E::Protocol(p) => format!("{p} (1006: OBS was killed or the network failed)"),
        other => other.to_string(),
    };
    ObsError::Disconnected {
        addr: addr.to_string(),
        detail,
    }
}

/// The next text frame during the handshake.
async fn next_text(ws: &mut Ws, addr: &str) -> Result<String, ObsError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_string()),
            Some(Ok(Message::Close(f))) => return Err(close_error(addr, f, false)),
            Some(Ok(Message::Binary(_))) => {
                return Err(ObsError::Protocol {
                    addr: addr.to_string(),
                    detail: "a binary frame during the handshake".into(),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ws_error(addr, e)),
            None => {
                return Err(ObsError::Disconnected {
                    addr: addr.to_string(),
                    detail: "the connection closed during the handshake".into(),
                });
            }
        }
    }
}

fn excerpt(s: &str) -> String {
    let mut e: String = s.chars().take(80).collect();
    if e.len() < s.len() {
        e.push('…');
    }
    e.escape_debug().to_string()
}

/// TCP + WebSocket upgrade + Hello + Identify + Identified, all before `deadline`.
async fn handshake(
    target: &ObsTarget,
    addr: &str,
    t: Duration,
) -> Result<(Ws, bool, u32), ObsError> {
    let deadline = Instant::now() + t;
    let timed_out = |stage: &'static str| ObsError::ConnectTimeout {
        addr: addr.to_string(),
        stage,
        timeout: t,
        attempts: 1,
    };
    let d = deadline.into();
    let tcp = timeout_at(d, TcpStream::connect((target.host.as_str(), target.port)))
        .await
        .map_err(|_| timed_out("TCP connect"))?
        .map_err(|e| ObsError::Unreachable {
            addr: addr.to_string(),
            attempts: 1,
            reason: e.to_string(),
        })?;
    // Small frames, sent at once: Nagle would add up to 40 ms to the start skew.
    let _ = tcp.set_nodelay(true);
    let mut req =
        format!("ws://{addr}/")
            .into_client_request()
            .map_err(|e| ObsError::Protocol {
                addr: addr.to_string(),
                detail: format!("bad address: {e}"),
            })?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(protocol::SUBPROTOCOL),
    );
    let (mut ws, _) = timeout_at(d, tokio_tungstenite::client_async(req, tcp))
        .await
        .map_err(|_| timed_out("WebSocket upgrade"))?
        .map_err(|e| match e {
            tungstenite::Error::Io(io) => ObsError::Unreachable {
                addr: addr.to_string(),
                attempts: 1,
                reason: io.to_string(),
            },
            other => ObsError::Protocol {
                addr: addr.to_string(),
                detail: format!("the WebSocket upgrade failed: {other}"),
            },
        })?;
    let text = timeout_at(d, next_text(&mut ws, addr))
        .await
        .map_err(|_| timed_out("no Hello"))??;
    let hello = match protocol::parse_server(&text) {
        Ok(ServerMessage::Hello(h)) => h,
        Ok(other) => {
            return Err(ObsError::Protocol {
                addr: addr.to_string(),
                detail: format!("expected Hello, got {other:?}"),
            });
        }
        Err(e) => {
            return Err(ObsError::Protocol {
                addr: addr.to_string(),
                detail: format!("expected Hello, got `{}` ({})", excerpt(&text), e.detail),
            });
        }
    };
    if hello.rpc_version < protocol::RPC_VERSION {
        return Err(ObsError::Unsupported {
            addr: addr.to_string(),
            version: hello.obs_web_socket_version,
            detail: format!("rpcVersion {} (1 is needed)", hello.rpc_version),
        });
    }
    let auth = match &hello.authentication {
        Some(_) if target.password.is_empty() => {
            return Err(ObsError::PasswordMissing {
                addr: addr.to_string(),
            });
        }
        Some(a) => Some(protocol::auth_string(
            target.password.expose(),
            &a.salt,
            &a.challenge,
        )),
        None => None,
    };
    let authenticated = auth.is_some();
    let identify = protocol::encode_identify(auth, subs::RECORDER);
    timeout_at(d, ws.send(Message::text(identify)))
        .await
        .map_err(|_| timed_out("sending Identify"))?
        .map_err(|e| ws_error(addr, e))?;
    let text = timeout_at(d, next_text(&mut ws, addr))
        .await
        .map_err(|_| timed_out("no Identified"))??;
    match protocol::parse_server(&text) {
        Ok(ServerMessage::Identified(i)) => Ok((ws, authenticated, i.negotiated_rpc_version)),
        _ => Err(ObsError::Protocol {
            addr: addr.to_string(),
            detail: format!("expected Identified, got `{}`", excerpt(&text)),
        }),
    }
}

/// One connection attempt, bounded by `connect_timeout`: handshake, then GetVersion (retried
/// on 207 NotReady while OBS is still loading) and the required-requests check.
async fn establish(shared: &Arc<Shared>) -> Result<Arc<Conn>, ObsError> {
    let cfg = &shared.cfg;
    let deadline = Instant::now() + cfg.connect_timeout;
    let (ws, authenticated, rpc) =
        handshake(&shared.target, &shared.addr, cfg.connect_timeout).await?;
    let conn = spawn_conn(shared, ws);
    let guard = KillOnDrop(Some(conn.clone()));
    let version = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = if left.is_zero() {
            Err(ObsError::RequestTimeout {
                addr: shared.addr.clone(),
                request: "GetVersion".into(),
                timeout: Duration::ZERO,
            })
        } else {
            conn.request("GetVersion", None, left.min(cfg.request_timeout))
                .await
        };
        match r {
            Ok(v) => match VersionInfo::from_data(&v) {
                Some(info) => break info,
                None => {
                    let e = ObsError::Protocol {
                        addr: shared.addr.clone(),
                        detail: "GetVersion's response lacks obsVersion/obsWebSocketVersion".into(),
                    };
                    conn.kill(e.clone());
                    return Err(e);
                }
            },
            Err(ObsError::RequestFailed { code, .. })
                if code == status::NOT_READY && Instant::now() < deadline =>
            {
                sleep(Duration::from_millis(200)).await;
            }
            Err(ObsError::RequestTimeout { .. }) => {
                let e = ObsError::ConnectTimeout {
                    addr: shared.addr.clone(),
                    stage: "no answer to GetVersion",
                    timeout: cfg.connect_timeout,
                    attempts: 1,
                };
                conn.kill(e.clone());
                return Err(e);
            }
            Err(e) => {
                conn.kill(e.clone());
                return Err(e);
            }
        }
    };
    let missing: Vec<&str> = protocol::REQUIRED_REQUESTS
        .iter()
        .copied()
        .filter(|r| !version.supports(r))
        .collect();
    if !missing.is_empty() {
        let e = ObsError::Unsupported {
            addr: shared.addr.clone(),
            version: version.obs_web_socket_version.clone(),
            detail: format!(
                "it lacks the request{} {}; OBS 28 or later is needed",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", ")
            ),
        };
        conn.kill(e.clone());
        return Err(e);
    }
    debug!(obs = %shared.addr, obs_version = %version.obs_version, websocket = %version.obs_web_socket_version, "identified");
    *shared.info.lock().expect("info lock") = Some(ServerInfo::new(version, authenticated, rpc));
    tokio::spawn(keepalive(shared.clone(), conn.clone()));
    guard.disarm();
    Ok(conn)
}

/// Ends a connection whose setup was abandoned (an error, or the caller's future dropped),
/// so its reader, writer and keepalive never outlive it.
struct KillOnDrop(Option<Arc<Conn>>);

impl KillOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.kill(ObsError::Shutdown {
                addr: c.addr.clone(),
            });
        }
    }
}

fn spawn_conn(shared: &Arc<Shared>, ws: Ws) -> Arc<Conn> {
    let (sink, stream) = ws.split();
    let (out, out_rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        addr: shared.addr.clone(),
        out,
        pending: StdMutex::new(PendingTable {
            map: HashMap::new(),
            closed: None,
        }),
        ended: watch::channel(None).0,
    });
    tokio::spawn(write_loop(sink, out_rx, conn.clone()));
    tokio::spawn(read_loop(shared.clone(), conn.clone(), stream));
    conn
}

async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    conn: Arc<Conn>,
) {
    while let Some(o) = rx.recv().await {
        match o {
            Out::Text(t) => {
                if let Err(e) = sink.send(Message::text(t)).await {
                    conn.finish(ws_error(&conn.addr, e), None);
                    break;
                }
            }
            Out::Close(code) => {
                // Bounded: a half-open peer may never take the close frame.
                let frame = CloseFrame {
                    code: code.into(),
                    reason: "".into(),
                };
                let _ = timeout(
                    Duration::from_secs(1),
                    sink.send(Message::Close(Some(frame))),
                )
                .await;
                break;
            }
            Out::Stop => break,
        }
    }
}

async fn read_loop(shared: Arc<Shared>, conn: Arc<Conn>, mut stream: SplitStream<Ws>) {
    let mut ended = conn.ended.subscribe();
    let err = loop {
        tokio::select! {
            biased;
            _ = ended.wait_for(Option::is_some) => return,
            m = stream.next() => match m {
                Some(Ok(Message::Text(t))) => handle_text(&shared, &conn, t.as_str()),
                Some(Ok(Message::Close(f))) => {
                    let exiting = shared.record.borrow().exiting;
                    break close_error(&shared.addr, f, exiting);
                }
                Some(Ok(Message::Binary(_))) => {
                    warn!(obs = %shared.addr, "ignoring a binary frame (the session uses JSON)");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break ws_error(&shared.addr, e),
                None => break ObsError::Disconnected {
                    addr: shared.addr.clone(),
                    detail: "the connection closed without a close frame (1006)".into(),
                },
            }
        }
    };
    // After ExitStarted any end is the exit: OBS 29 with a recording running was seen to
    // drop the TCP connection ~1.4 s later without the close 1001.
    let err = if shared.record.borrow().exiting && matches!(err, ObsError::Disconnected { .. }) {
        ObsError::Exiting {
            addr: shared.addr.clone(),
        }
    } else {
        err
    };
    debug!(obs = %shared.addr, "connection ended: {err}");
    conn.finish(err, None);
}

fn handle_text(shared: &Shared, conn: &Conn, text: &str) {
    match protocol::parse_server(text) {
        Ok(ServerMessage::RequestResponse(r)) => {
            let tx = conn
                .pending
                .lock()
                .expect("pending lock")
                .map
                .remove(&r.request_id);
            match tx {
                Some(tx) => {
                    let _ = tx.send(r);
                }
                None => {
                    debug!(obs = %shared.addr, request = %r.request_type, "late or unknown response ignored")
                }
            }
        }
        Ok(ServerMessage::Event(e)) => handle_event(shared, e),
        Ok(other) => {
            debug!(obs = %shared.addr, "ignoring an unexpected message: {other:?}");
        }
        Err(e) => {
            warn!(obs = %shared.addr, "ignoring a frame that is not obs-websocket v5 (`{}`: {})", excerpt(text), e.detail);
        }
    }
}

fn handle_event(shared: &Shared, e: protocol::EventMsg) {
    let at = Instant::now();
    let wall = Utc::now();
    match e.event_type.as_str() {
        "RecordStateChanged" => {
            let Some(rs) = RecordStateChanged::from_data(e.event_data.as_ref()) else {
                warn!(obs = %shared.addr, "ignoring a malformed RecordStateChanged");
                return;
            };
            debug!(obs = %shared.addr, state = ?rs.output_state, path = ?rs.output_path, "RecordStateChanged");
            shared.record.send_modify(|s| {
                s.seq += 1;
                s.path = match (&rs.output_path, &rs.output_state) {
                    (Some(p), _) => Some(p.clone()),
                    (None, OutputState::Starting) => None,
                    (None, _) => s.path.take(),
                };
                s.state = Some(rs.output_state.clone());
                s.active = rs.output_active;
                s.at = at;
                s.wall = wall;
                s.from_event = true;
            });
            let _ = shared.events.send(ObsEvent::RecordStateChanged {
                state: rs.output_state,
                active: rs.output_active,
                path: rs.output_path,
                at,
                wall,
            });
        }
        "ExitStarted" => {
            info!(obs = %shared.addr, "OBS is shutting down (ExitStarted)");
            shared.record.send_modify(|s| s.exiting = true);
            let _ = shared.events.send(ObsEvent::ExitStarted);
        }
        _ => {
            let _ = shared.events.send(ObsEvent::Other {
                event_type: e.event_type,
                data: e.event_data.unwrap_or(Value::Null),
            });
        }
    }
}

/// GetStats on an interval; no answer within the request timeout means the connection is
/// half-open (peer gone without a FIN), so it is dropped and the supervisor reconnects.
async fn keepalive(shared: Arc<Shared>, conn: Arc<Conn>) {
    let mut ended = conn.ended.subscribe();
    loop {
        tokio::select! {
            _ = ended.wait_for(Option::is_some) => return,
            _ = sleep(shared.cfg.keepalive_interval) => {}
        }
        match conn
            .request("GetStats", None, shared.cfg.request_timeout)
            .await
        {
            Ok(v) => {
                if let Some(s) = Stats::from_data(&v) {
                    *shared.stats.lock().expect("stats lock") = Some(s);
                }
            }
            Err(ObsError::RequestTimeout { timeout, .. }) => {
                warn!(obs = %shared.addr, "no answer to the keepalive within {timeout:?}; dropping the connection");
                conn.kill(ObsError::Disconnected {
                    addr: shared.addr.clone(),
                    detail: format!(
                        "no answer to the keepalive (GetStats) within {}s; the connection was half-open",
                        timeout.as_secs_f64()
                    ),
                });
                return;
            }
            Err(_) if ended.borrow().is_some() => return,
            Err(e) => debug!(obs = %shared.addr, "keepalive: {e}"),
        }
    }
}

/// After (re)connecting: the recording keeps running when a socket drops, so ask.
async fn reconcile(shared: &Shared, conn: &Arc<Conn>) -> Option<bool> {
    let r = conn
        .request("GetRecordStatus", None, shared.cfg.request_timeout)
        .await;
    let st = match r.map(|v| RecordStatus::from_data(&v)) {
        Ok(Some(st)) => st,
        Ok(None) => {
            warn!(obs = %shared.addr, "GetRecordStatus: unexpected response");
            return None;
        }
        Err(e) => {
            warn!(obs = %shared.addr, "GetRecordStatus after connecting failed: {e}");
            return None;
        }
    };
    let at = Instant::now();
    shared.record.send_modify(|s| {
        let was_active = s.active;
        s.seq += 1;
        s.active = st.output_active;
        s.state = Some(if st.output_active {
            OutputState::Started
        } else {
            OutputState::Stopped
        });
        if !(st.output_active && was_active) {
            s.path = None;
        }
        s.at = at;
        s.wall = Utc::now();
        s.from_event = false;
        s.exiting = false;
    });
    Some(st.output_active)
}

async fn supervise(shared: Arc<Shared>, mut conn: Arc<Conn>) {
    let mut shutdown = shared.shutdown.subscribe();
    let closed = |e: ObsError| {
        shared.link.send_replace(Link::Closed(e.clone()));
        let _ = shared.events.send(ObsEvent::Closed(e));
    };
    loop {
        let mut ended = conn.ended.subscribe();
        let err = tokio::select! {
            r = ended.wait_for(Option::is_some) => match r {
                Ok(e) => e.clone().expect("waited for Some"),
                Err(_) => return,
            },
            _ = shutdown.wait_for(|s| *s) => {
                let e = ObsError::Shutdown { addr: shared.addr.clone() };
                conn.kill(e.clone());
                closed(e);
                return;
            }
        };
        warn!(obs = %shared.addr, "{err}");
        let _ = shared.events.send(ObsEvent::Disconnected(err.clone()));
        if !err.is_retryable() || !shared.cfg.auto_reconnect {
            closed(err);
            return;
        }
        shared.link.send_replace(Link::Reconnecting(err.clone()));
        let started = Instant::now();
        let window = shared.cfg.reconnect_window;
        let mut attempt = 0u32;
        conn = loop {
            attempt += 1;
            let r = tokio::select! {
                r = establish(&shared) => r,
                _ = shutdown.wait_for(|s| *s) => {
                    closed(ObsError::Shutdown { addr: shared.addr.clone() });
                    return;
                }
            };
            match r {
                Ok(c) => break c,
                Err(e) if !e.is_retryable() => {
                    closed(e);
                    return;
                }
                Err(e) => {
                    let d = shared.cfg.backoff(attempt);
                    if started.elapsed() + d >= window {
                        closed(ObsError::ReconnectGaveUp {
                            addr: shared.addr.clone(),
                            attempts: attempt,
                            window,
                            last: e.to_string(),
                        });
                        return;
                    }
                    debug!(obs = %shared.addr, attempt, "reconnect failed ({e}); next try in {d:?}");
                    shared.link.send_replace(Link::Reconnecting(e));
                    tokio::select! {
                        _ = sleep(d) => {}
                        _ = shutdown.wait_for(|s| *s) => {
                            closed(ObsError::Shutdown { addr: shared.addr.clone() });
                            return;
                        }
                    }
                }
            }
        };
        shared.link.send_replace(Link::Up(conn.clone()));
        let active = reconcile(&shared, &conn).await;
        info!(obs = %shared.addr, attempts = attempt, recording = ?active, "reconnected to OBS");
        let _ = shared.events.send(ObsEvent::Reconnected {
            record_active: active,
        });
    }
}
