//! A fake obs-websocket 5.1.0 server, faithful to what OBS 29.0.2 does on the wire (checked by
//! the contract tests, which run the same assertions against real OBS), plus what real OBS
//! cannot do on demand: drop the socket at an exact moment, delay a response past a timeout,
//! never send Hello, send garbage, freeze (half-open), and run 64 at once.
//!
//! Not part of oa-run's interface: built only with the `test-support` feature, which the tests
//! and the benchmark get through the dev-dependency on this crate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::protocol::{
    self, ClientMessage, EventMsg, Hello, Identified, OutputState, RequestResponse, RequestStatus,
    close, status, subs,
};

/// How the fake presents itself.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// `None`: no authentication (Hello without `authentication`).
    pub password: Option<String>,
    pub obs_version: String,
    pub websocket_version: String,
    /// Where recordings are written (a small file per recording); `None`: nothing on disk.
    pub record_dir: Option<PathBuf>,
    /// StartRecord → STARTED (STARTING is sent at once).
    pub start_delay: Duration,
    /// StopRecord → STOPPED (STOPPING is sent at once). Real OBS: ~1.8 s.
    pub stop_delay: Duration,
    /// STOPPED → GetRecordStatus inactive (real OBS 29: ~15 ms).
    pub stopped_settle: Duration,
    pub available_disk_mb: f64,
    /// Address to listen on (loopback: 127.0.0.1, 127.0.0.2, …).
    pub host: std::net::IpAddr,
    /// 0: any free port.
    pub port: u16,
    /// Override `availableRequests` (to play an old or odd server).
    pub available_requests: Option<Vec<String>>,
    /// Output frame rate. `Some`: like OBS, `outputDuration` counts whole frames and
    /// GetVideoSettings answers; `None`: the timeline is in ms and GetVideoSettings is unknown.
    pub fps: Option<u32>,
    /// How long before STARTED the file's timeline began, ms (negative: after). Real OBS
    /// starts the file tens of ms before its STARTED event arrives.
    pub timeline_lead_ms: i64,
    /// With `fps`: frames the encoder holds before a packet is counted (x264's lookahead and
    /// B-frames; `outputDuration` counts packets, so it runs this far behind the file).
    pub encoder_delay_frames: u32,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            password: Some("fakepass".into()),
            obs_version: "29.0.2".into(),
            websocket_version: "5.1.0".into(),
            record_dir: None,
            start_delay: Duration::from_millis(20),
            stop_delay: Duration::from_millis(50),
            stopped_settle: Duration::from_millis(15),
            available_disk_mb: 50_000.0,
            host: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 0,
            available_requests: None,
            fps: None,
            timeline_lead_ms: 0,
            encoder_delay_frames: 0,
        }
    }
}

/// Faults, switchable at any time.
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// Accept the WebSocket but never send Hello.
    pub no_hello: bool,
    /// Send this text instead of Hello.
    pub garbage_hello: Option<String>,
    /// Answer these request types only after the delay.
    pub delay: HashMap<String, Duration>,
    /// Drop the TCP connection (no close frame) when this request type arrives, unanswered.
    pub drop_on: Option<String>,
    /// Answer this request type, then drop the TCP connection (no close frame).
    pub drop_after: Option<String>,
    /// The recording output changes state, but no RecordStateChanged is sent.
    pub suppress_record_events: bool,
    /// StartRecord is acknowledged but the output never starts (a failing encoder).
    pub start_fails: bool,
    /// Report recordings at this path (a lying OBS) instead of where they are written.
    pub report_path: Option<String>,
}

/// What the fake saw and did, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Logged {
    Accepted,
    Identified,
    Request(String),
    /// A RecordStateChanged state was reached (sent unless suppressed).
    RecordState(OutputState),
    Closed(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecPhase {
    Idle,
    Starting,
    Active,
    Stopping,
}

struct Rec {
    phase: RecPhase,
    path: Option<PathBuf>,
    started: Option<Instant>,
    /// Bumped per recording so a stale timer never touches a newer one.
    generation: u64,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Control {
    kill: u64,
    kick: u64,
    exit: u64,
    frozen: bool,
}

struct State {
    rec: Rec,
    params: HashMap<(String, String), String>,
    log: Vec<(Instant, Logged)>,
    behavior: Behavior,
    salt: String,
}

struct Shared {
    cfg: FakeConfig,
    state: Mutex<State>,
    events: broadcast::Sender<(u32, String)>,
    control: watch::Sender<Control>,
}

/// A running fake. Dropping it stops it and drops every connection.
pub struct FakeObs {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

fn random_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
}

impl FakeObs {
    pub async fn start(cfg: FakeConfig) -> std::io::Result<FakeObs> {
        let listener = TcpListener::bind((cfg.host, cfg.port)).await?;
        let addr = listener.local_addr()?;
        let mut params = HashMap::new();
        params.insert(
            ("Output".to_string(), "FilenameFormatting".to_string()),
            "%CCYY-%MM-%DD %hh-%mm-%ss".to_string(),
        );
        if let Some(d) = &cfg.record_dir {
            params.insert(
                ("SimpleOutput".to_string(), "FilePath".to_string()),
                d.display().to_string(),
            );
        }
        let shared = Arc::new(Shared {
            cfg,
            state: Mutex::new(State {
                rec: Rec {
                    phase: RecPhase::Idle,
                    path: None,
                    started: None,
                    generation: 0,
                },
                params,
                log: Vec::new(),
                behavior: Behavior::default(),
                salt: random_b64(),
            }),
            events: broadcast::channel(4096).0,
            control: watch::channel(Control::default()).0,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FakeObs {
            addr,
            shared,
            accept: Mutex::new(Some(accept)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn password(&self) -> Option<&str> {
        self.shared.cfg.password.as_deref()
    }

    /// Change the faults.
    pub fn behave(&self, f: impl FnOnce(&mut Behavior)) {
        f(&mut self.shared.state.lock().expect("fake state").behavior);
    }

    /// Everything logged so far.
    pub fn log(&self) -> Vec<(Instant, Logged)> {
        self.shared.state.lock().expect("fake state").log.clone()
    }

    /// How often `entry` was logged.
    pub fn count(&self, entry: &Logged) -> usize {
        self.log().iter().filter(|(_, l)| l == entry).count()
    }

    /// When the current recording's timeline began (its first frame): the truth a timeline
    /// sample is checked against.
    pub fn timeline_origin(&self) -> Option<Instant> {
        let st = self.shared.state.lock().expect("fake state");
        st.rec.started.map(|s| timeline_origin(&self.shared.cfg, s))
    }

    pub fn recording_active(&self) -> bool {
        matches!(
            self.shared.state.lock().expect("fake state").rec.phase,
            RecPhase::Active | RecPhase::Stopping
        )
    }

    /// Pretend a recording was left running (by another session or a previous study).
    pub fn set_recording_active(&self) {
        let mut st = self.shared.state.lock().expect("fake state");
        st.rec.generation += 1;
        st.rec.phase = RecPhase::Active;
        st.rec.started = Some(Instant::now());
        st.rec.path = Some(PathBuf::from("/tmp/left-running.mkv"));
    }

    /// The output stops by itself (a full disk, or someone pressing Stop in OBS), silently.
    pub fn drop_output(&self) {
        let mut st = self.shared.state.lock().expect("fake state");
        st.rec.generation += 1;
        st.rec.phase = RecPhase::Idle;
        st.rec.started = None;
    }

    /// Close every session with 4011 (as "kick" in OBS's WebSocket settings does).
    pub fn kick_all(&self) {
        self.shared.control.send_modify(|c| c.kick += 1);
    }

    /// Stop reading and writing on every session (a half-open connection), or resume.
    pub fn freeze(&self, frozen: bool) {
        self.shared.control.send_modify(|c| c.frozen = frozen);
    }

    /// Send `n` unrelated General events to every session (reader must not block on them).
    pub fn flood(&self, n: usize) {
        for i in 0..n {
            let frame = protocol::encode_event(&EventMsg {
                event_type: "CustomEvent".into(),
                event_intent: subs::GENERAL,
                event_data: Some(json!({ "n": i })),
            });
            let _ = self.shared.events.send((subs::GENERAL, frame));
        }
    }

    /// Send one event of about `bytes` bytes to every session (a broken or hostile OBS).
    pub fn send_oversized(&self, bytes: usize) {
        let frame = protocol::encode_event(&EventMsg {
            event_type: "CustomEvent".into(),
            event_intent: subs::GENERAL,
            event_data: Some(json!({ "junk": "x".repeat(bytes) })),
        });
        let _ = self.shared.events.send((subs::GENERAL, frame));
    }

    /// Like SIGKILL/SIGTERM: every connection drops without a close frame (1006), the port
    /// closes, a running recording is lost.
    pub fn kill(&self) {
        if let Some(h) = self.accept.lock().expect("accept").take() {
            h.abort();
        }
        self.shared.control.send_modify(|c| c.kill += 1);
        let mut st = self.shared.state.lock().expect("fake state");
        st.rec.generation += 1;
        st.rec.phase = RecPhase::Idle;
        st.rec.started = None;
    }

    /// Like SIGINT: ExitStarted, then close 1001 "Server stopping." on every session, and the
    /// port closes. As with real OBS, no STOPPING/STOPPED for a running recording.
    pub fn exit(&self) {
        let frame = protocol::encode_event(&EventMsg {
            event_type: "ExitStarted".into(),
            event_intent: subs::GENERAL,
            event_data: None,
        });
        let _ = self.shared.events.send((subs::GENERAL, frame));
        if let Some(h) = self.accept.lock().expect("accept").take() {
            h.abort();
        }
        self.shared.control.send_modify(|c| c.exit += 1);
        let mut st = self.shared.state.lock().expect("fake state");
        st.rec.generation += 1;
        st.rec.phase = RecPhase::Idle;
        st.rec.started = None;
    }

    /// Listen again on the same port, as a freshly started OBS (new salt, not recording).
    pub async fn restart(&self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        {
            let mut st = self.shared.state.lock().expect("fake state");
            st.salt = random_b64();
            st.rec.generation += 1;
            st.rec.phase = RecPhase::Idle;
        }
        self.shared.control.send_modify(|c| c.frozen = false);
        let h = tokio::spawn(accept_loop(listener, self.shared.clone()));
        if let Some(old) = self.accept.lock().expect("accept").replace(h) {
            old.abort();
        }
        Ok(())
    }
}

impl Drop for FakeObs {
    fn drop(&mut self) {
        if let Ok(mut a) = self.accept.lock()
            && let Some(h) = a.take()
        {
            h.abort();
        }
        self.shared.control.send_modify(|c| c.kill += 1);
    }
}

fn log(shared: &Shared, l: Logged) {
    shared
        .state
        .lock()
        .expect("fake state")
        .log
        .push((Instant::now(), l));
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        log(&shared, Logged::Accepted);
        tokio::spawn(session(shared.clone(), tcp));
    }
}

type Ws = WebSocketStream<TcpStream>;

async fn close_with(ws: &mut Ws, shared: &Shared, code: u16, reason: &str) {
    log(shared, Logged::Closed(code));
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        ws.send(Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: reason.to_string().into(),
        }))),
    )
    .await;
    // Let the client read the close frame before the socket goes.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

// The handshake callback's error type is tungstenite's (large) HTTP response.
#[allow(clippy::result_large_err)]
async fn session(shared: Arc<Shared>, tcp: TcpStream) {
    // The server picks obswebsocket.json when the client offers it (as obs-websocket does).
    let callback = |req: &Request, mut resp: Response| {
        let offered = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == protocol::SUBPROTOCOL);
        if offered {
            resp.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(protocol::SUBPROTOCOL),
            );
        }
        Ok(resp)
    };
    let Ok(Ok(mut ws)) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::accept_hdr_async(tcp, callback),
    )
    .await
    else {
        return;
    };
    let mut control = shared.control.subscribe();
    let ctl0 = *control.borrow_and_update();
    let behavior = shared.state.lock().expect("fake state").behavior.clone();

    let hello = if behavior.no_hello {
        None
    } else if let Some(g) = behavior.garbage_hello {
        Some(g)
    } else {
        let salt = shared.state.lock().expect("fake state").salt.clone();
        Some(protocol::encode_hello(&Hello {
            obs_web_socket_version: shared.cfg.websocket_version.clone(),
            rpc_version: protocol::RPC_VERSION,
            authentication: shared
                .cfg
                .password
                .as_ref()
                .map(|_| protocol::AuthChallenge {
                    challenge: random_b64(),
                    salt,
                }),
        }))
    };
    let challenge = hello.as_ref().and_then(|h| {
        let v: Value = serde_json::from_str(h).ok()?;
        Some(v["d"]["authentication"]["challenge"].as_str()?.to_string())
    });
    let hello_sent = hello.is_some();
    if let Some(h) = hello
        && ws.send(Message::text(h)).await.is_err()
    {
        return;
    }

    let mut events = shared.events.subscribe();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<(String, bool)>();
    let mut identified = false;
    let mut subscriptions = 0u32;
    loop {
        tokio::select! {
            r = control.changed() => {
                if r.is_err() { return; }
                let c = *control.borrow_and_update();
                if c.kill != ctl0.kill {
                    return; // drop without a close frame
                }
                if c.exit != ctl0.exit {
                    // ExitStarted was broadcast first; deliver what is queued, then 1001.
                    while let Ok((intent, frame)) = events.try_recv() {
                        if identified && intent & subscriptions != 0 {
                            let _ = ws.send(Message::text(frame)).await;
                        }
                    }
                    close_with(&mut ws, &shared, close::GOING_AWAY, "Server stopping.").await;
                    return;
                }
                if c.kick != ctl0.kick {
                    close_with(&mut ws, &shared, close::SESSION_INVALIDATED, "Your session has been invalidated.").await;
                    return;
                }
                if c.frozen {
                    // Half-open: read nothing, send nothing, until thawed or killed.
                    let r = control.wait_for(|c| !c.frozen || c.kill != ctl0.kill).await;
                    match r {
                        Ok(c) if c.kill == ctl0.kill => {}
                        _ => return,
                    }
                }
            }
            ev = events.recv(), if identified => match ev {
                Ok((intent, frame)) => {
                    if intent & subscriptions != 0 && ws.send(Message::text(frame)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            o = out_rx.recv() => {
                let Some((frame, then_drop)) = o else { return };
                if ws.send(Message::text(frame)).await.is_err() || then_drop {
                    return;
                }
            }
            m = ws.next() => {
                let text = match m {
                    Some(Ok(Message::Text(t))) => t.as_str().to_string(),
                    Some(Ok(Message::Binary(_))) => {
                        close_with(&mut ws, &shared, close::MESSAGE_DECODE_ERROR,
                            "Your session encoding is set to Json, but a binary message was received.").await;
                        return;
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                if !hello_sent {
                    continue; // no Hello was sent: ignore everything
                }
                let msg = match protocol::parse_client(&text) {
                    Ok(m) => m,
                    Err(e) => {
                        close_with(&mut ws, &shared, e.close_code, &e.detail).await;
                        return;
                    }
                };
                match msg {
                    ClientMessage::Identify(i) => {
                        if identified {
                            close_with(&mut ws, &shared, close::ALREADY_IDENTIFIED,
                                "You are already Identified with the obs-websocket server.").await;
                            return;
                        }
                        if i.rpc_version != protocol::RPC_VERSION {
                            close_with(&mut ws, &shared, close::UNSUPPORTED_RPC_VERSION,
                                &format!("Requested RPC version {} is not supported.", i.rpc_version)).await;
                            return;
                        }
                        if let (Some(pw), Some(ch)) = (&shared.cfg.password, &challenge) {
                            let salt = shared.state.lock().expect("fake state").salt.clone();
                            let want = protocol::auth_string(pw, &salt, ch);
                            if i.authentication.as_deref() != Some(want.as_str()) {
                                close_with(&mut ws, &shared, close::AUTHENTICATION_FAILED, "Authentication failed.").await;
                                return;
                            }
                        }
                        identified = true;
                        subscriptions = i.event_subscriptions.unwrap_or(subs::ALL_V5_1);
                        log(&shared, Logged::Identified);
                        let frame = protocol::encode_identified(&Identified { negotiated_rpc_version: 1 });
                        if ws.send(Message::text(frame)).await.is_err() { return; }
                    }
                    _ if !identified => {
                        close_with(&mut ws, &shared, close::NOT_IDENTIFIED,
                            "You attempted to send a non-Identify message while not identified.").await;
                        return;
                    }
                    ClientMessage::Reidentify { event_subscriptions } => {
                        subscriptions = event_subscriptions.unwrap_or(subs::ALL_V5_1);
                        let frame = protocol::encode_identified(&Identified { negotiated_rpc_version: 1 });
                        if ws.send(Message::text(frame)).await.is_err() { return; }
                    }
                    ClientMessage::RequestBatch(_) => {
                        // Not used by oa-run; the fake does not implement batches.
                        close_with(&mut ws, &shared, close::UNSUPPORTED_FEATURE, "Batches are not supported by the fake.").await;
                        return;
                    }
                    ClientMessage::Request(req) => {
                        let b = shared.state.lock().expect("fake state").behavior.clone();
                        log(&shared, Logged::Request(req.request_type.clone()));
                        if b.drop_on.as_deref() == Some(req.request_type.as_str()) {
                            return;
                        }
                        let then_drop = b.drop_after.as_deref() == Some(req.request_type.as_str());
                        let resp = handle_request(&shared, &req.request_type, req.request_data.as_ref());
                        let frame = protocol::encode_response(&RequestResponse {
                            request_type: req.request_type.clone(),
                            request_id: req.request_id,
                            request_status: RequestStatus {
                                result: resp.0 == status::SUCCESS,
                                code: resp.0,
                                comment: resp.2,
                            },
                            response_data: resp.1,
                        });
                        let delay = b.delay.get(&req.request_type).copied();
                        let tx = out_tx.clone();
                        match delay {
                            Some(d) => { tokio::spawn(async move {
                                tokio::time::sleep(d).await;
                                let _ = tx.send((frame, then_drop));
                            }); }
                            None => { let _ = tx.send((frame, then_drop)); }
                        }
                        // Events that follow the response.
                        after_request(&shared, resp.3);
                    }
                }
            }
        }
    }
}

/// Status code, responseData, comment, and what happens after the response.
type Handled = (u16, Option<Value>, Option<String>, Effect);

/// Record state changes that follow a response, on a timer.
#[derive(Clone, Copy)]
enum Effect {
    None,
    Start(u64),
    Stop(u64),
}

fn ok(v: Value) -> Handled {
    (status::SUCCESS, Some(v), None, Effect::None)
}

fn fail(code: u16, comment: &str) -> Handled {
    (code, None, Some(comment.to_string()), Effect::None)
}

fn timeline_origin(cfg: &FakeConfig, started: Instant) -> Instant {
    let lead = Duration::from_millis(cfg.timeline_lead_ms.unsigned_abs());
    if cfg.timeline_lead_ms >= 0 {
        started.checked_sub(lead).unwrap_or(started)
    } else {
        started + lead
    }
}

/// The file's timeline now, as obs-websocket reports it: whole frames x frame interval (ms,
/// truncated), or plain ms without a frame rate.
fn timeline_ms(cfg: &FakeConfig, started: Instant) -> u64 {
    let origin = timeline_origin(cfg, started);
    let elapsed = Instant::now().saturating_duration_since(origin);
    match cfg.fps {
        Some(fps) if fps > 0 => {
            let frames = (elapsed.as_nanos() * fps as u128 / 1_000_000_000)
                .saturating_sub(cfg.encoder_delay_frames as u128);
            (frames * 1000 / fps as u128) as u64
        }
        _ => elapsed.as_millis() as u64,
    }
}

fn timecode(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

const REQUESTS: &[&str] = &[
    "GetVersion",
    "GetStats",
    "BroadcastCustomEvent",
    "GetProfileParameter",
    "SetProfileParameter",
    "GetRecordDirectory",
    "GetRecordStatus",
    "ToggleRecord",
    "StartRecord",
    "StopRecord",
    "ToggleRecordPause",
    "PauseRecord",
    "ResumeRecord",
];

fn handle_request(shared: &Shared, rtype: &str, data: Option<&Value>) -> Handled {
    let mut st = shared.state.lock().expect("fake state");
    let field = |k: &str| data.and_then(|d| d.get(k)).and_then(Value::as_str);
    match rtype {
        "GetVersion" => ok(json!({
            "obsVersion": shared.cfg.obs_version,
            "obsWebSocketVersion": shared.cfg.websocket_version,
            "rpcVersion": 1,
            "availableRequests": shared.cfg.available_requests.clone()
                .unwrap_or_else(|| REQUESTS.iter().map(|s| s.to_string()).collect()),
            "supportedImageFormats": ["png", "jpg"],
            "platform": "debian",
            "platformDescription": "Debian GNU/Linux 12 (bookworm) (fake)",
        })),
        "GetStats" => ok(json!({
            "cpuUsage": 1.5,
            "memoryUsage": 120.0,
            "availableDiskSpace": shared.cfg.available_disk_mb,
            "activeFps": 10.0,
            "averageFrameRenderTime": 0.5,
            "renderSkippedFrames": 0,
            "renderTotalFrames": 100,
            "outputSkippedFrames": 0,
            "outputTotalFrames": 100,
            "webSocketSessionIncomingMessages": 1,
            "webSocketSessionOutgoingMessages": 1,
        })),
        "GetRecordStatus" => {
            let active = matches!(st.rec.phase, RecPhase::Active | RecPhase::Stopping);
            let ms = st
                .rec
                .started
                .filter(|_| active)
                .map(|s| timeline_ms(&shared.cfg, s))
                .unwrap_or(0);
            ok(json!({
                "outputActive": active,
                "outputPaused": false,
                "outputTimecode": timecode(ms),
                "outputDuration": ms,
                // A small stream: 20 kB/s.
                "outputBytes": ms * 20,
            }))
        }
        "GetVideoSettings" if shared.cfg.fps.is_some_and(|f| f > 0) => ok(json!({
            "fpsNumerator": shared.cfg.fps,
            "fpsDenominator": 1,
            "baseWidth": 320,
            "baseHeight": 240,
            "outputWidth": 320,
            "outputHeight": 240,
        })),
        "GetRecordDirectory" => ok(json!({
            "recordDirectory": st.params.get(&("SimpleOutput".into(), "FilePath".into())).cloned().unwrap_or_default()
        })),
        "GetProfileParameter" | "SetProfileParameter" => {
            let (Some(cat), Some(name)) = (field("parameterCategory"), field("parameterName"))
            else {
                return fail(
                    status::MISSING_REQUEST_FIELD,
                    "Your request is missing a required field.",
                );
            };
            let key = (cat.to_string(), name.to_string());
            if rtype == "GetProfileParameter" {
                let v = st.params.get(&key).cloned();
                ok(json!({ "parameterValue": v, "defaultParameterValue": null }))
            } else {
                match data.and_then(|d| d.get("parameterValue")) {
                    Some(Value::String(v)) => {
                        st.params.insert(key, v.clone());
                    }
                    Some(Value::Null) => {
                        st.params.remove(&key);
                    }
                    _ => {
                        return fail(
                            status::MISSING_REQUEST_FIELD,
                            "Your request is missing a required field.",
                        );
                    }
                }
                ok(Value::Null)
            }
        }
        "StartRecord" => match st.rec.phase {
            RecPhase::Idle => {
                st.rec.phase = RecPhase::Starting;
                st.rec.generation += 1;
                (
                    status::SUCCESS,
                    None,
                    None,
                    Effect::Start(st.rec.generation),
                )
            }
            // The real StartRecord is asynchronous: a second one before the output is up
            // also gets 100 (seen on 5.1.0).
            RecPhase::Starting => ok(Value::Null),
            RecPhase::Active | RecPhase::Stopping => {
                (status::OUTPUT_RUNNING, None, None, Effect::None)
            }
        },
        "StopRecord" => match st.rec.phase {
            RecPhase::Active => {
                st.rec.phase = RecPhase::Stopping;
                let p = st
                    .rec
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                (
                    status::SUCCESS,
                    Some(json!({ "outputPath": p })),
                    None,
                    Effect::Stop(st.rec.generation),
                )
            }
            // Same race as real OBS: a double stop gets 100 twice.
            RecPhase::Stopping => ok(json!({
                "outputPath": st.rec.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            })),
            RecPhase::Idle | RecPhase::Starting => {
                (status::OUTPUT_NOT_RUNNING, None, None, Effect::None)
            }
        },
        "BroadcastCustomEvent" => ok(Value::Null),
        _ if REQUESTS.contains(&rtype) => fail(
            status::REQUEST_PROCESSING_FAILED,
            "This request is not implemented by the fake.",
        ),
        _ => fail(
            status::UNKNOWN_REQUEST_TYPE,
            "Your request type is not valid.",
        ),
    }
}

fn emit_record(shared: &Shared, state: OutputState, active: bool, path: Option<String>) {
    let suppress = {
        let mut st = shared.state.lock().expect("fake state");
        st.log
            .push((Instant::now(), Logged::RecordState(state.clone())));
        st.behavior.suppress_record_events
    };
    if suppress {
        return;
    }
    let frame = protocol::encode_event(&EventMsg {
        event_type: "RecordStateChanged".into(),
        event_intent: subs::OUTPUTS,
        event_data: Some(json!({
            "outputActive": active,
            "outputState": state.wire(),
            "outputPath": path,
        })),
    });
    let _ = shared.events.send((subs::OUTPUTS, frame));
}

/// OBS's file name: FilenameFormatting with the common `%` specifiers expanded, `.mkv`
/// appended, and ` (2)`, ` (3)`… when the file exists (OverwriteIfExists=false).
fn output_path(st: &State) -> Option<PathBuf> {
    if let Some(p) = &st.behavior.report_path {
        return Some(PathBuf::from(p));
    }
    let dir = st
        .params
        .get(&("SimpleOutput".to_string(), "FilePath".to_string()))?;
    let fmt = st
        .params
        .get(&("Output".to_string(), "FilenameFormatting".to_string()))
        .cloned()
        .unwrap_or_default();
    let now = chrono::Local::now();
    let name = fmt
        .replace("%CCYY", &now.format("%Y").to_string())
        .replace("%YY", &now.format("%y").to_string())
        .replace("%MM", &now.format("%m").to_string())
        .replace("%DD", &now.format("%d").to_string())
        .replace("%hh", &now.format("%H").to_string())
        .replace("%mm", &now.format("%M").to_string())
        .replace("%ss", &now.format("%S").to_string());
    let dir = PathBuf::from(dir);
    let mut p = dir.join(format!("{name}.mkv"));
    let mut n = 2;
    while p.exists() {
        p = dir.join(format!("{name} ({n}).mkv"));
        n += 1;
    }
    Some(p)
}

fn after_request(shared: &Arc<Shared>, effect: Effect) {
    match effect {
        Effect::None => {}
        Effect::Start(generation) => {
            let shared = shared.clone();
            tokio::spawn(async move {
                emit_record(&shared, OutputState::Starting, false, None);
                if !shared.cfg.start_delay.is_zero() {
                    tokio::time::sleep(shared.cfg.start_delay).await;
                }
                let path = {
                    let mut st = shared.state.lock().expect("fake state");
                    if st.rec.generation != generation || st.rec.phase != RecPhase::Starting {
                        return;
                    }
                    if st.behavior.start_fails {
                        st.rec.phase = RecPhase::Idle;
                        return;
                    }
                    let path = output_path(&st);
                    if let Some(p) = &path {
                        let _ = std::fs::write(p, b"\x1aE\xdf\xa3 fake matroska header\n");
                    }
                    st.rec.phase = RecPhase::Active;
                    st.rec.started = Some(Instant::now());
                    st.rec.path = path.clone();
                    path.map(|p| p.display().to_string())
                };
                emit_record(&shared, OutputState::Started, true, path);
            });
        }
        Effect::Stop(generation) => {
            let shared = shared.clone();
            tokio::spawn(async move {
                emit_record(&shared, OutputState::Stopping, true, None);
                if !shared.cfg.stop_delay.is_zero() {
                    tokio::time::sleep(shared.cfg.stop_delay).await;
                }
                let path = {
                    let mut st = shared.state.lock().expect("fake state");
                    if st.rec.generation != generation || st.rec.phase != RecPhase::Stopping {
                        return;
                    }
                    st.rec.started = None;
                    let path = st.rec.path.take();
                    if let Some(p) = &path {
                        use std::io::Write as _;
                        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(p) {
                            let _ = f.write_all(&[0u8; 4096]);
                        }
                    }
                    path.map(|p| p.display().to_string())
                };
                emit_record(&shared, OutputState::Stopped, false, path);
                // Like OBS 29: GetRecordStatus says active for ~15 ms after STOPPED.
                tokio::time::sleep(shared.cfg.stopped_settle).await;
                let mut st = shared.state.lock().expect("fake state");
                if st.rec.generation == generation && st.rec.phase == RecPhase::Stopping {
                    st.rec.phase = RecPhase::Idle;
                }
            });
        }
    }
}
