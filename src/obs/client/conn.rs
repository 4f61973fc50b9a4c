//! One WebSocket connection: its writer and reader tasks and the requests waiting for their
//! responses. The reader never waits on a subscriber.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use std::time::Instant;

use chrono::Utc;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, warn};

use super::Shared;
use super::handshake::{Ws, excerpt};
use super::types::ObsEvent;
use crate::obs::error::ObsError;
use crate::obs::protocol::{self, RecordStateChanged, RequestResponse, ServerMessage, close};

// ---- one connection ------------------------------------------------------------------------

pub(super) enum Out {
    Text(String),
    Close(u16),
    Stop,
}

pub(super) struct PendingTable {
    map: HashMap<String, oneshot::Sender<RequestResponse>>,
    closed: Option<ObsError>,
}

pub(super) struct Conn {
    pub(super) addr: String,
    out: mpsc::UnboundedSender<Out>,
    pending: StdMutex<PendingTable>,
    /// Set once, when the connection ends; the first error wins.
    pub(super) ended: watch::Sender<Option<ObsError>>,
}

impl Conn {
    /// A connection with no requests yet, and the queue its writer sends from.
    fn new(addr: &str) -> (Arc<Conn>, mpsc::UnboundedReceiver<Out>) {
        let (out, out_rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            addr: addr.to_string(),
            out,
            pending: StdMutex::new(PendingTable {
                map: HashMap::new(),
                closed: None,
            }),
            ended: watch::channel(None).0,
        });
        (conn, out_rx)
    }

    /// Hand a response to the request waiting for it; `false` when none waits (late, after
    /// its timeout, or an id we never sent).
    fn deliver(&self, r: RequestResponse) -> bool {
        let tx = self
            .pending
            .lock()
            .expect("pending lock")
            .map
            .remove(&r.request_id);
        match tx {
            Some(tx) => tx.send(r).is_ok(),
            None => false,
        }
    }

    pub(super) fn finish(&self, err: ObsError, close_code: Option<u16>) {
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
    pub(super) fn kill(&self, err: ObsError) {
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

    pub(super) async fn request(
        self: &Arc<Self>,
        request_type: &str,
        data: Option<Value>,
        t: Duration,
    ) -> Result<Value, ObsError> {
        self.begin(request_type, data)?.finish(t).await
    }

    /// Send a request now, without waiting (the fleet sends all StartRecords in one go).
    pub(super) fn begin(
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
pub(super) struct Pending {
    conn: Arc<Conn>,
    id: String,
    request_type: String,
    rx: oneshot::Receiver<RequestResponse>,
}

impl Pending {
    pub(super) async fn finish(mut self, t: Duration) -> Result<Value, ObsError> {
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

pub(super) fn close_error(addr: &str, frame: Option<CloseFrame>, exiting: bool) -> ObsError {
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

pub(super) fn ws_error(addr: &str, e: tungstenite::Error) -> ObsError {
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

/// Ends a connection whose setup was abandoned (an error, or the caller's future dropped),
/// so its reader, writer and keepalive never outlive it.
pub(super) struct KillOnDrop(pub(super) Option<Arc<Conn>>);

impl KillOnDrop {
    pub(super) fn disarm(mut self) {
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

pub(super) fn spawn_conn(shared: &Arc<Shared>, ws: Ws) -> Arc<Conn> {
    let (sink, stream) = ws.split();
    let (conn, out_rx) = Conn::new(&shared.addr);
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
            let request = r.request_type.clone();
            if !conn.deliver(r) {
                debug!(obs = %shared.addr, request = %request, "late or unknown response ignored");
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
            shared.record.send_modify(|s| s.apply_event(&rs, at, wall));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::protocol::RequestStatus;

    fn response(id: &str, code: u16) -> RequestResponse {
        RequestResponse {
            request_type: "GetStats".into(),
            request_id: id.into(),
            request_status: RequestStatus {
                result: code == 100,
                code,
                comment: (code != 100).then(|| "no".to_string()),
            },
            response_data: Some(serde_json::json!({"x": 1})),
        }
    }

    fn sent_id(rx: &mut mpsc::UnboundedReceiver<Out>) -> String {
        match rx.try_recv() {
            Ok(Out::Text(t)) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                v["d"]["requestId"].as_str().unwrap().to_string()
            }
            _ => panic!("no request frame"),
        }
    }

    #[tokio::test]
    async fn a_response_reaches_only_the_request_with_its_id() {
        let (conn, mut rx) = Conn::new("a:1");
        let p = conn.begin("GetStats", None).unwrap();
        let id = sent_id(&mut rx);
        assert!(!conn.deliver(response("not-ours", 100)));
        assert!(conn.deliver(response(&id, 100)));
        assert_eq!(p.finish(Duration::from_secs(1)).await.unwrap()["x"], 1);
        assert!(!conn.deliver(response(&id, 100)), "a second answer is late");
    }

    #[tokio::test]
    async fn failures_timeouts_and_a_closed_connection_are_errors() {
        let (conn, mut rx) = Conn::new("a:1");
        let p = conn.begin("GetStats", None).unwrap();
        conn.deliver(response(&sent_id(&mut rx), 500));
        assert!(matches!(
            p.finish(Duration::from_secs(1)).await,
            Err(ObsError::RequestFailed { code: 500, .. })
        ));
        let p = conn.begin("GetStats", None).unwrap();
        let id = sent_id(&mut rx);
        assert!(matches!(
            p.finish(Duration::from_millis(10)).await,
            Err(ObsError::RequestTimeout { .. })
        ));
        assert!(
            !conn.deliver(response(&id, 100)),
            "a timed-out request is forgotten"
        );
        let p = conn.begin("GetStats", None).unwrap();
        conn.kill(ObsError::Shutdown { addr: "a:1".into() });
        assert!(matches!(
            p.finish(Duration::from_secs(1)).await,
            Err(ObsError::Shutdown { .. })
        ));
        assert!(matches!(
            conn.begin("GetStats", None),
            Err(ObsError::Shutdown { .. })
        ));
        assert!(matches!(
            conn.ended.borrow().clone(),
            Some(ObsError::Shutdown { .. })
        ));
    }

    fn frame(code: u16, reason: &str) -> Option<CloseFrame> {
        Some(CloseFrame {
            code: code.into(),
            reason: reason.to_string().into(),
        })
    }

    #[test]
    fn close_codes_map_to_errors() {
        assert!(matches!(
            close_error("a", frame(close::AUTHENTICATION_FAILED, ""), false),
            ObsError::AuthFailed { .. }
        ));
        assert!(matches!(
            close_error("a", frame(close::GOING_AWAY, ""), true),
            ObsError::Exiting { .. }
        ));
        match close_error("a", frame(close::GOING_AWAY, &"r".repeat(500)), false) {
            ObsError::Closed { code, reason, .. } => {
                assert_eq!(code, 1001);
                assert_eq!(reason.len(), 200, "a peer's reason is bounded");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            close_error("a", None, false),
            ObsError::Disconnected { .. }
        ));
        assert!(matches!(
            ws_error("a", tungstenite::Error::ConnectionClosed),
            ObsError::Disconnected { detail, .. } if detail.contains("1006")
        ));
    }
}
