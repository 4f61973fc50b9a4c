//! One OBS: connection, requests, events, keepalive, reconnect, recording control.
//!
//! Tasks per connection: a reader (responses to waiting requests, events to a broadcast
//! channel and to the recording state; it never waits on a subscriber), a writer, and a
//! keepalive. One supervisor per client notices a dropped connection and reconnects with
//! backoff within `reconnect_window`, except after a final close (4011, 4009, 4010).
//!
//! - `types`: what callers see (server info, events, link state, confirmed recordings);
//! - this file: [`ObsClient`] and its request API;
//! - `recording`: start/stop and their confirmation by `RecordStateChanged`;
//! - `handshake`: TCP, WebSocket upgrade, Hello/Identify;
//! - `conn`: one connection's reader and writer and its waiting requests;
//! - `tasks`: establishing a connection, keepalive, reconcile and the reconnecting supervisor.

mod conn;
mod handshake;
mod recording;
mod tasks;
mod types;

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::time::{sleep, timeout, timeout_at};
use tracing::{debug, info};

use super::error::ObsError;
use super::protocol::{RecordStatus, Stats};
use super::{ObsConfig, ObsTarget};
use conn::{Conn, KillOnDrop};
use recording::RecordSnap;
use tasks::{establish, reconcile, supervise};

pub use recording::{PreparedStart, StartInFlight};
pub use types::{
    Confirmation, IfActive, LinkState, ObsEvent, ServerInfo, StartedRecording, StoppedRecording,
};

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
        let (record, _) = watch::channel(RecordSnap::initial(now, Utc::now()));
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

    /// The output frame interval in ms (GetVideoSettings `fpsDenominator / fpsNumerator`).
    pub async fn frame_interval_ms(&self) -> Result<f64, ObsError> {
        let v = self.request("GetVideoSettings", None).await?;
        let num = v.get("fpsNumerator").and_then(Value::as_f64);
        let den = v.get("fpsDenominator").and_then(Value::as_f64);
        match (num, den) {
            (Some(n), Some(d)) if n > 0.0 && d > 0.0 && (1000.0 * d / n).is_finite() => {
                Ok(1000.0 * d / n)
            }
            _ => Err(self.protocol("GetVideoSettings", &v)),
        }
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
