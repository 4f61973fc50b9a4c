//! Opening a session: TCP, WebSocket upgrade with the `obswebsocket.json` subprotocol, Hello,
//! Identify (with authentication) and Identified, all within one deadline.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::conn::{close_error, ws_error};
use crate::obs::ObsTarget;
use crate::obs::error::ObsError;
use crate::obs::protocol::{self, Hello, ServerMessage, subs};
use crate::scenario::Secret;

pub(super) type Ws = WebSocketStream<TcpStream>;

/// Largest WebSocket frame accepted from an OBS. OBS (websocketpp) sends every message as one
/// frame, and the largest oa-run asks for is GetVersion's (~6 KB with obs-websocket 5.1.0's
/// ~150 request names); events under oa-run's subscriptions are under 1 KB. tungstenite's
/// defaults (16 MiB frames, 64 MiB messages) let one event of 16 MiB cost ~1.2 GB once parsed
/// into a `serde_json::Value`; 256 KiB is 40× the largest real message and checked from the
/// frame header, before anything is buffered.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Largest message (several frames, from a server that fragments): still far above any real
/// one, and bounded.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .max_message_size(Some(MAX_MESSAGE_BYTES))
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

pub(super) fn excerpt(s: &str) -> String {
    let mut e: String = s.chars().take(80).collect();
    if e.len() < s.len() {
        e.push('…');
    }
    e.escape_debug().to_string()
}

/// The `authentication` string for Identify (`None` when the server asks for none), or why
/// this Hello cannot be answered.
fn answer_hello(hello: &Hello, password: &Secret, addr: &str) -> Result<Option<String>, ObsError> {
    if hello.rpc_version < protocol::RPC_VERSION {
        return Err(ObsError::Unsupported {
            addr: addr.to_string(),
            version: hello.obs_web_socket_version.clone(),
            detail: format!("rpcVersion {} (1 is needed)", hello.rpc_version),
        });
    }
    match &hello.authentication {
        Some(_) if password.is_empty() => Err(ObsError::PasswordMissing {
            addr: addr.to_string(),
        }),
        Some(a) => Ok(Some(protocol::auth_string(
            password.expose(),
            &a.salt,
            &a.challenge,
        ))),
        None => Ok(None),
    }
}

/// TCP + WebSocket upgrade + Hello + Identify + Identified, all before `deadline`.
pub(super) async fn handshake(
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
    let (mut ws, _) = timeout_at(
        d,
        tokio_tungstenite::client_async_with_config(req, tcp, Some(ws_config())),
    )
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
    let auth = answer_hello(&hello, &target.password, addr)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::protocol::AuthChallenge;

    fn hello(rpc: u32, auth: bool) -> Hello {
        Hello {
            obs_web_socket_version: "5.1.0".into(),
            rpc_version: rpc,
            authentication: auth.then(|| AuthChallenge {
                challenge: "ch".into(),
                salt: "salt".into(),
            }),
        }
    }

    #[test]
    fn a_hello_is_answered_with_the_password_only_when_asked() {
        let pw = Secret::new("pw");
        assert_eq!(answer_hello(&hello(1, false), &pw, "a").unwrap(), None);
        let a = answer_hello(&hello(1, true), &pw, "a").unwrap().unwrap();
        assert_eq!(a, protocol::auth_string("pw", "salt", "ch"));
        assert!(!a.contains("pw"));
    }

    #[test]
    fn an_old_rpc_or_a_missing_password_is_refused() {
        assert!(matches!(
            answer_hello(&hello(0, false), &Secret::new("pw"), "a"),
            Err(ObsError::Unsupported { .. })
        ));
        assert!(matches!(
            answer_hello(&hello(1, true), &Secret::new(""), "a"),
            Err(ObsError::PasswordMissing { .. })
        ));
    }

    #[test]
    fn excerpts_are_short_and_escaped() {
        assert_eq!(excerpt("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
        let long = "x".repeat(200);
        assert_eq!(excerpt(&long).chars().count(), 81);
    }
}
