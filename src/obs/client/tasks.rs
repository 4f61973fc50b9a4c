//! The tasks around connections: establishing one (handshake, GetVersion, required
//! requests), the keepalive, reconciling the recording state after a (re)connect, and the
//! supervisor that reconnects with backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::time::sleep;
use tracing::{debug, info, warn};

use super::conn::{Conn, KillOnDrop, spawn_conn};
use super::handshake::handshake;
use super::types::{ObsEvent, ServerInfo};
use super::{Link, Shared};
use crate::obs::error::ObsError;
use crate::obs::protocol::{self, RecordStatus, Stats, VersionInfo, status};

/// One connection attempt, bounded by `connect_timeout`: handshake, then GetVersion (retried
/// on 207 NotReady while OBS is still loading) and the required-requests check.
pub(super) async fn establish(shared: &Arc<Shared>) -> Result<Arc<Conn>, ObsError> {
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
    if let Err(e) = check_required(&version, &shared.addr) {
        conn.kill(e.clone());
        return Err(e);
    }
    debug!(obs = %shared.addr, obs_version = %version.obs_version, websocket = %version.obs_web_socket_version, "identified");
    *shared.info.lock().expect("info lock") = Some(ServerInfo::new(version, authenticated, rpc));
    tokio::spawn(keepalive(shared.clone(), conn.clone()));
    guard.disarm();
    Ok(conn)
}

/// Every request oa-run needs is in `availableRequests` (never decided from version strings).
fn check_required(version: &VersionInfo, addr: &str) -> Result<(), ObsError> {
    let missing: Vec<&str> = protocol::REQUIRED_REQUESTS
        .iter()
        .copied()
        .filter(|r| !version.supports(r))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ObsError::Unsupported {
        addr: addr.to_string(),
        version: version.obs_web_socket_version.clone(),
        detail: format!(
            "it lacks the request{} {}; OBS 28 or later is needed",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ),
    })
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
            .request("GetStats", None, shared.cfg.keepalive_timeout)
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
pub(super) async fn reconcile(shared: &Shared, conn: &Arc<Conn>) -> Option<bool> {
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
    let (at, wall) = (Instant::now(), Utc::now());
    shared
        .record
        .send_modify(|s| s.apply_status(st.output_active, at, wall));
    Some(st.output_active)
}

pub(super) async fn supervise(shared: Arc<Shared>, mut conn: Arc<Conn>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn version(requests: &[&str]) -> VersionInfo {
        VersionInfo {
            obs_version: "29.0.2".into(),
            obs_web_socket_version: "5.1.0".into(),
            rpc_version: 1,
            available_requests: requests.iter().map(|r| r.to_string()).collect(),
            platform: "debian".into(),
            platform_description: String::new(),
        }
    }

    #[test]
    fn a_server_lacking_a_needed_request_is_refused_by_name() {
        assert!(check_required(&version(protocol::REQUIRED_REQUESTS), "a").is_ok());
        let some: Vec<&str> = protocol::REQUIRED_REQUESTS
            .iter()
            .copied()
            .filter(|r| *r != "StartRecord")
            .collect();
        match check_required(&version(&some), "a") {
            Err(ObsError::Unsupported { detail, .. }) => {
                assert!(detail.contains("request StartRecord;"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
        match check_required(&version(&[]), "a") {
            Err(ObsError::Unsupported { detail, .. }) => assert!(detail.contains("requests ")),
            other => panic!("{other:?}"),
        }
    }
}
