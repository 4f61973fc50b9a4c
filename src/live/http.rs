//! The live view's routes.

use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use super::auth::{self, Access};
use super::feed::{self, FeedMessage, Session};
use super::metrics::Metrics;
use crate::run::hub::HubHandle;
use crate::run::signals::{Shutdown, Signal};
use crate::scenario::Secret;

/// The dashboard: one self-contained page (no build step, no network).
const DASHBOARD: &str = include_str!("dashboard.html");
/// A client's unsent messages are bounded by this (tungstenite's write buffer).
const MAX_WRITE_BUFFER: usize = 1 << 20;
/// Clients send nothing but control frames.
const MAX_INCOMING: usize = 4 << 10;

#[derive(Clone)]
pub struct AppState {
    pub hub: HubHandle,
    pub token: Option<Secret>,
    pub heartbeat: Duration,
    pub stall: Duration,
    pub shutdown: Shutdown,
    pub metrics: Metrics,
    pub stop: watch::Receiver<bool>,
    pub cache: std::sync::Arc<feed::TextCache>,
    /// The questionnaire's desk, when the study has one.
    pub questionnaire: Option<crate::run::questionnaire::Desk>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    token: Option<String>,
    since: Option<u64>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/feed", get(feed))
        .route("/api/state", get(api_state))
        .route("/api/abort", post(abort))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/questionnaire", get(questionnaire_overview))
        .route(
            "/q/{token}",
            get(super::questionnaire::show)
                .post(super::questionnaire::submit)
                .layer(axum::extract::DefaultBodyLimit::max(
                    super::questionnaire::MAX_BODY,
                )),
        )
        .with_state(state)
}

fn denied() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Bearer")],
        "a token is needed: Authorization: Bearer TOKEN (or ?token=TOKEN)\n",
    )
        .into_response()
}

fn no_store() -> [(axum::http::HeaderName, &'static str); 1] {
    [(CACHE_CONTROL, "no-store")]
}

/// The page holds no data (it reads the feed), so it is served to anyone who can reach it.
async fn dashboard() -> Response {
    (
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                // Inline script and style are the page's own; nothing loads from elsewhere.
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'",
            ),
        ],
        DASHBOARD,
    )
        .into_response()
}

async fn feed(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Params>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // The token first: nobody learns anything about the feed without it.
    if auth::read_access(st.token.as_ref(), &headers, q.token.as_deref(), true) == Access::Denied {
        return denied();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    let session = Session {
        cache: st.cache.clone(),
        hub: st.hub.clone(),
        since: q.since,
        heartbeat: st.heartbeat,
        stop: st.stop.clone(),
    };
    ws.max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
        .on_upgrade(move |socket| async move {
            let ended = feed::run(socket, session).await;
            tracing::debug!(?ended, "live feed client gone");
        })
}

async fn api_state(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    if auth::read_access(st.token.as_ref(), &headers, q.token.as_deref(), true) == Access::Denied {
        return denied();
    }
    let state = st.hub.read().state.clone();
    (no_store(), axum::Json(FeedMessage::snapshot(state))).into_response()
}

/// Every player's questionnaire link and status (the links carry their tokens: behind the
/// live token, like the state).
async fn questionnaire_overview(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    if auth::read_access(st.token.as_ref(), &headers, q.token.as_deref(), true) == Access::Denied {
        return denied();
    }
    super::questionnaire::overview(st.questionnaire.as_ref())
}

/// Prometheus sends the token as a bearer header (`authorization:` in its scrape config) and
/// asks for OpenMetrics; anyone else gets the classic text format.
async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if auth::read_access(st.token.as_ref(), &headers, None, false) == Access::Denied {
        return denied();
    }
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            st.metrics.render(),
        )
            .into_response()
    } else {
        (
            [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            st.metrics.render_prometheus_text(),
        )
            .into_response()
    }
}

/// Liveness for a probe: no token, nothing but whether the executor ticks.
async fn healthz(State(st): State<AppState>) -> Response {
    let since = st.hub.since_tick();
    let (seq, finished) = {
        let g = st.hub.read();
        (g.state.live.seq, g.state.live.finished)
    };
    let ok = since < st.stall;
    let body = json!({
        "status": if ok { "ok" } else { "stalled" },
        "last_tick_s": (since.as_millis() as f64 / 1000.0),
        "seq": seq,
        "finished": finished,
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, no_store(), axum::Json(body)).into_response()
}

/// Abort takes the Ctrl-C path. Only with the token in the header (a form or a link from
/// another page cannot set one), even on loopback; without a configured token it is off.
async fn abort(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = st.token.as_ref() else {
        return (
            StatusCode::FORBIDDEN,
            "abort is off: the live view has no token (set live.token)\n",
        )
            .into_response();
    };
    match auth::bearer(&headers) {
        Some(g) if auth::matches(token, g) => {}
        _ => return denied(),
    }
    let already = st.shutdown.is_requested();
    st.shutdown.request(Signal::Interrupt);
    tracing::warn!("abort requested over the live view; stopping as for Ctrl-C");
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "status": "stopping", "already_requested": already })),
    )
        .into_response()
}
