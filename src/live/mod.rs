//! The live view: one HTTP port serving a dashboard, a WebSocket feed of the run's events,
//! the state as JSON, Prometheus metrics, a health check and abort.
//!
//! It only reads the [`HubHandle`] (and the metrics are a hub [`Sink`]), so the executor never
//! waits for it: a slow or stuck observer is dropped, never the study.

pub(crate) mod auth;
pub mod feed;
mod http;
pub mod metrics;
pub mod questionnaire;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::Error;
use crate::run::hub::{HubHandle, Sink};
use crate::run::signals::Shutdown;
use crate::scenario::{Scenario, Secret};

pub use feed::{FEED_VERSION, FeedMessage};

/// How often a feed client gets a heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// `/healthz` reports 503 when the executor has not ticked for this long.
pub const STALL: Duration = Duration::from_secs(30);
/// How long [`LiveServer::stop`] lets clients read the final event before closing.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What the live server needs from the scenario.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    pub heartbeat: Duration,
    /// `/healthz` turns 503 after this long without an executor tick.
    pub stall: Duration,
}

impl LiveConfig {
    /// The scenario's `live:` block (with `--live` already applied as an override), if any.
    /// Loading checked it; this re-checks so that no other path can skip the loopback rule.
    pub fn from_scenario(s: &Scenario) -> Result<Option<LiveConfig>, Error> {
        let Some(live) = &s.live else {
            return Ok(None);
        };
        let listen = crate::scenario::semantic::parse_live_listen(&live.listen)
            .map_err(|e| Error::Usage(format!("live.listen: {e}")))?;
        let token = live.token.clone().filter(|t| !t.is_empty());
        crate::scenario::semantic::live_listen_allowed(listen, token.is_some())
            .map_err(|e| Error::Usage(format!("live.listen: {e}")))?;
        Ok(Some(LiveConfig {
            listen,
            token,
            heartbeat: HEARTBEAT,
            stall: STALL,
        }))
    }
}

/// The running (or bound, not yet started) live server.
pub struct LiveServer {
    cfg: LiveConfig,
    addr: SocketAddr,
    listener: Option<TcpListener>,
    /// Set to true to stop: the HTTP server stops accepting and feed clients are closed.
    stop_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    questionnaire: Option<crate::run::questionnaire::Desk>,
}

impl LiveServer {
    /// Bind the port now, so that a busy port stops the run before anything starts.
    pub async fn bind(cfg: LiveConfig) -> Result<LiveServer, Error> {
        let listener = TcpListener::bind(cfg.listen).await.map_err(|e| {
            Error::Unavailable(format!("live view: cannot listen on {}: {e}", cfg.listen))
        })?;
        let addr = listener.local_addr().map_err(|e| Error::Io {
            what: "live view: local address".into(),
            source: e,
        })?;
        Ok(LiveServer {
            cfg,
            addr,
            listener: Some(listener),
            stop_tx: watch::Sender::new(false),
            task: None,
            questionnaire: None,
        })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dashboard's URL (without the token, which is never printed).
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The base of the questionnaire links: `public` (the scenario's `live.public_url`), else
    /// `http://` + the address bound.
    pub fn public_base(&self, public: Option<&str>) -> String {
        match public {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.addr),
        }
    }

    /// Serve the questionnaire's pages from `desk` (call before [`LiveServer::start`]).
    pub fn serve_questionnaire(&mut self, desk: crate::run::questionnaire::Desk) {
        self.questionnaire = Some(desk);
    }

    /// Start serving `hub`; returns the metrics sink to add to the hub (before its first
    /// event). Abort requests go to `shutdown` like a first Ctrl-C.
    pub fn start(&mut self, hub: &HubHandle, shutdown: Shutdown) -> Box<dyn Sink> {
        let metrics = metrics::Metrics::new();
        let sink = metrics.sink();
        let Some(listener) = self.listener.take() else {
            // Started twice: serve nothing new, but keep the run going.
            return sink;
        };
        let app = http::router(http::AppState {
            hub: hub.clone(),
            token: self.cfg.token.clone(),
            heartbeat: self.cfg.heartbeat,
            stall: self.cfg.stall,
            shutdown,
            metrics,
            stop: self.stop_tx.subscribe(),
            cache: Default::default(),
            questionnaire: self.questionnaire.clone(),
        });
        let mut stop = self.stop_tx.subscribe();
        self.task = Some(tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!("live view stopped: {e}");
            }
        }));
        sink
    }

    /// Stop: feed clients that have not yet read the final event get a short grace, then
    /// every socket is closed and the port released.
    pub async fn stop(mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        // The feed closes each socket itself after `run_finished`; give that a moment.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.stop_tx.send(true);
        let abort = task.abort_handle();
        if tokio::time::timeout(STOP_GRACE, task).await.is_err() {
            abort.abort();
        }
    }
}
