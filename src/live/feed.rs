//! The WebSocket feed: `welcome`, then a `snapshot` (or, with `?since=SEQ`, the missed events
//! from the hub's ring), then every `event` in order, and a `heartbeat` every few seconds.
//! After `run_finished` the socket is closed normally (1000).
//!
//! Each client reads the hub's broadcast channel through its own cursor: the executor never
//! waits for a client. A client that falls more than the channel's capacity behind, or whose
//! socket does not take a message within [`SEND_TIMEOUT`], is dropped (close 1013 where the
//! socket still takes it); it can reconnect with `?since=` to catch up.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::SinkExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::manifest::Timestamp;
use crate::run::events::{Envelope, RunEvent};
use crate::run::hub::{HubHandle, Receiver};
use crate::run::state::RunState;

/// The feed's message format version (in `welcome`).
pub const FEED_VERSION: u32 = 1;
/// A message the client's socket does not take within this long drops the client.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Events sent to a client with one flush.
const BATCH: usize = 64;

/// One message on the live feed (`GET /feed`), a JSON text frame tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schemars(title = "oa-run live feed message")]
pub enum FeedMessage {
    /// Always the first message.
    Welcome {
        /// The feed format's version (this is 1).
        version: u32,
        /// The run's id, as in the manifest.
        run_id: String,
        /// When the server sent this.
        at: Timestamp,
    },
    /// The whole state after event `seq`: every later event follows as an `event`.
    Snapshot {
        /// The last event folded into `state` (0 before the first).
        seq: u64,
        state: Box<RunState>,
    },
    /// One run event, in order, gap-free (`seq` is one more than the last one sent).
    Event(Box<Envelope>),
    /// The connection is alive; `seq` is the last event sent to this client.
    Heartbeat { seq: u64, at: Timestamp },
}

impl FeedMessage {
    pub fn snapshot(state: RunState) -> Self {
        FeedMessage::Snapshot {
            seq: state.live.seq,
            state: Box::new(state),
        }
    }

    fn to_text(&self) -> Utf8Bytes {
        // Every field serializes (no maps with non-string keys): failure is a bug.
        serde_json::to_string(self)
            .expect("feed messages serialize")
            .into()
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    RunFinished,
    /// Fell behind the hub's channel.
    TooSlow,
    /// The socket did not take a message in time, or broke.
    SocketStuck,
    ClientLeft,
    ServerStopping,
}

/// Each event's JSON, made once and shared by every client (a burst would otherwise be
/// serialized once per client). Slots by `seq`, so clients a little apart still share.
pub struct TextCache {
    slots: Mutex<Vec<(u64, Utf8Bytes)>>,
}

const CACHE_SLOTS: usize = 256;

impl Default for TextCache {
    fn default() -> Self {
        TextCache {
            slots: Mutex::new(vec![(0, Utf8Bytes::default()); CACHE_SLOTS]),
        }
    }
}

impl TextCache {
    fn event(&self, env: &Envelope) -> Utf8Bytes {
        let i = env.seq as usize % CACHE_SLOTS;
        {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots[i].0 == env.seq {
                return slots[i].1.clone();
            }
        }
        let text = FeedMessage::Event(Box::new(env.clone())).to_text();
        self.slots.lock().unwrap_or_else(|e| e.into_inner())[i] = (env.seq, text.clone());
        text
    }
}

/// What a session needs besides its socket.
pub struct Session {
    pub cache: Arc<TextCache>,
    pub hub: HubHandle,
    pub since: Option<u64>,
    pub heartbeat: Duration,
    pub stop: watch::Receiver<bool>,
}

async fn send(ws: &mut WebSocket, msg: &FeedMessage) -> Result<(), Ended> {
    match tokio::time::timeout(SEND_TIMEOUT, ws.send(Message::Text(msg.to_text()))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Ended::ClientLeft),
        Err(_) => Err(Ended::SocketStuck),
    }
}

/// Close politely, but never wait long for a client that does not read.
async fn close(ws: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(frame)).await;
}

/// Run one feed client until the run ends, the client leaves, or it is dropped.
pub async fn run(mut ws: WebSocket, s: Session) -> Ended {
    let Err(ended) = serve(&mut ws, s).await;
    match ended {
        Ended::RunFinished => close(&mut ws, close_code::NORMAL, "run finished").await,
        Ended::TooSlow => {
            close(
                &mut ws,
                close_code::AGAIN,
                "too slow; reconnect with ?since=SEQ",
            )
            .await
        }
        Ended::ServerStopping => close(&mut ws, close_code::AWAY, "server stopping").await,
        Ended::SocketStuck | Ended::ClientLeft => {}
    }
    ended
}

async fn serve(ws: &mut WebSocket, mut s: Session) -> Result<Infallible, Ended> {
    let run_id = s.hub.read().state.manifest.run_id.to_string();
    send(
        ws,
        &FeedMessage::Welcome {
            version: FEED_VERSION,
            run_id,
            at: Timestamp::now(),
        },
    )
    .await?;
    // Either the events the client missed, or a fresh snapshot; `rx` then carries every
    // event after `last`.
    let (mut last, mut rx, backlog) = match s.since.and_then(|n| s.hub.since(n).map(|r| (n, r))) {
        Some((n, (missed, rx))) => (n, rx, missed),
        None => {
            let (state, rx) = s.hub.subscribe();
            let seq = state.live.seq;
            let finished = state.live.finished;
            send(ws, &FeedMessage::snapshot(state)).await?;
            if finished {
                return Err(Ended::RunFinished);
            }
            (seq, rx, Vec::new())
        }
    };
    for batch in backlog.chunks(BATCH) {
        last = forward(ws, &s.cache, batch, last).await?;
    }
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + s.heartbeat, s.heartbeat);
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok(env) => last = forward(ws, &s.cache, &drain(env, &mut rx)?, last).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(Ended::TooSlow),
                Err(broadcast::error::RecvError::Closed) => return Err(Ended::ServerStopping),
            },
            _ = beat.tick() => {
                send(ws, &FeedMessage::Heartbeat { seq: last, at: Timestamp::now() }).await?;
            }
            m = ws.recv() => match m {
                // Pings are answered by the socket itself; clients have nothing to say.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Err(Ended::ClientLeft),
                Some(Ok(_)) => {}
            },
            _ = stopping(&mut s.stop) => return Err(Ended::ServerStopping),
        }
    }
}

/// Completes once the server stops (the watch guard is not held across an await).
async fn stopping(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await.map(|_| ());
}

/// Send the events the client does not have yet, flushing once for the whole batch (a burst
/// costs one write per client, not one per event); `Err(RunFinished)` after the last one.
async fn forward(
    ws: &mut WebSocket,
    cache: &TextCache,
    batch: &[Arc<Envelope>],
    last: u64,
) -> Result<u64, Ended> {
    let mut sent = last;
    let mut finished = false;
    let write = async {
        for env in batch.iter().filter(|e| e.seq > last) {
            ws.feed(Message::Text(cache.event(env))).await?;
            sent = env.seq;
            if matches!(env.event, RunEvent::RunFinished { .. }) {
                finished = true;
                break;
            }
        }
        ws.flush().await
    };
    match tokio::time::timeout(SEND_TIMEOUT, write).await {
        Ok(Ok(())) if finished => Err(Ended::RunFinished),
        Ok(Ok(())) => Ok(sent),
        Ok(Err(_)) => Err(Ended::ClientLeft),
        Err(_) => Err(Ended::SocketStuck),
    }
}

/// The next event and whatever else is already waiting (up to [`BATCH`]).
fn drain(first: Arc<Envelope>, rx: &mut Receiver) -> Result<Vec<Arc<Envelope>>, Ended> {
    let mut batch = vec![first];
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(e) => batch.push(e),
            Err(broadcast::error::TryRecvError::Empty) => break,
            Err(broadcast::error::TryRecvError::Lagged(_)) => return Err(Ended::TooSlow),
            Err(broadcast::error::TryRecvError::Closed) => break,
        }
    }
    Ok(batch)
}

/// The feed's JSON Schema, as committed in `schemas/feed.schema.json`.
pub fn schema() -> serde_json::Value {
    crate::schema::generate::<FeedMessage>()
}
