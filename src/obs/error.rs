//! Typed OBS errors. Every message names the OBS (`OBS at HOST:PORT`) and says what happened in
//! words a researcher understands; none contains a password.

use std::time::Duration;

use super::protocol::{close, status};

/// Something went wrong talking to one OBS. Cloneable: one connection failure is handed to
/// every request that was waiting on it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObsError {
    #[error(
        "could not reach OBS at {addr} ({attempts} attempt{}): {reason}; is OBS running there, with its WebSocket server enabled on that port (Tools > WebSocket Server Settings)?",
        plural(*attempts)
    )]
    Unreachable {
        addr: String,
        attempts: u32,
        reason: String,
    },
    #[error(
        "OBS at {addr} did not complete the obs-websocket handshake ({stage}) within {} ({attempts} attempt{})",
        secs(*timeout),
        plural(*attempts)
    )]
    ConnectTimeout {
        addr: String,
        stage: &'static str,
        timeout: Duration,
        attempts: u32,
    },
    #[error("OBS at {addr} rejected the password (4009)")]
    AuthFailed { addr: String },
    #[error("OBS at {addr} requires a password, but the scenario gives none (obs.password)")]
    PasswordMissing { addr: String },
    #[error("OBS at {addr} closed the connection ({code}: {}){}", close::describe(*code), reason_suffix(reason))]
    Closed {
        addr: String,
        code: u16,
        reason: String,
    },
    #[error("the connection to OBS at {addr} dropped: {detail}")]
    Disconnected { addr: String, detail: String },
    #[error(
        "OBS at {addr} is shutting down (ExitStarted); a recording in progress ends without a STOPPED event"
    )]
    Exiting { addr: String },
    #[error(
        "OBS at {addr} was not contacted: the server's `status` does not confirm that player there ({reason}); the OBS password is sent only to a confirmed address"
    )]
    NotContacted { addr: String, reason: String },
    #[error("OBS at {addr} sent something that is not obs-websocket v5: {detail}")]
    Protocol { addr: String, detail: String },
    #[error("OBS at {addr} (obs-websocket {version}) cannot be used: {detail}")]
    Unsupported {
        addr: String,
        version: String,
        detail: String,
    },
    #[error("OBS at {addr} refused {request} ({code} {}){}", status::name(*code), reason_suffix(comment))]
    RequestFailed {
        addr: String,
        request: String,
        code: u16,
        comment: String,
    },
    #[error("OBS at {addr} did not answer {request} within {}", secs(*timeout))]
    RequestTimeout {
        addr: String,
        request: String,
        timeout: Duration,
    },
    #[error(
        "OBS at {addr} is already recording ({timecode} so far), probably left running by an earlier session; stop that recording in OBS first"
    )]
    AlreadyRecording { addr: String, timecode: String },
    #[error("OBS at {addr} is not recording")]
    NotRecording { addr: String },
    #[error(
        "OBS at {addr} accepted StartRecord but did not report the recording STARTED within {}, and GetRecordStatus says it is not recording",
        secs(*timeout)
    )]
    StartTimeout { addr: String, timeout: Duration },
    #[error(
        "OBS at {addr} did not report the recording STOPPED within {} after StopRecord; the file may be incomplete",
        secs(*timeout)
    )]
    StopTimeout { addr: String, timeout: Duration },
    #[error("OBS at {addr} reported the recording {got} while oa-run waited for {expected}")]
    UnexpectedRecordState {
        addr: String,
        expected: &'static str,
        got: String,
    },
    #[error("recording name `{name}` cannot be used: {reason}")]
    BadName { name: String, reason: String },
    #[error(
        "gave up reconnecting to OBS at {addr} after {attempts} attempt{} over {}: {last}",
        plural(*attempts),
        secs(*window)
    )]
    ReconnectGaveUp {
        addr: String,
        attempts: u32,
        window: Duration,
        last: String,
    },
    #[error("the connection to OBS at {addr} was closed by oa-run")]
    Shutdown { addr: String },
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn reason_suffix(r: &str) -> String {
    if r.is_empty() {
        String::new()
    } else {
        format!(": \"{}\"", r.escape_debug())
    }
}

impl ObsError {
    /// The OBS this error is about (empty for [`ObsError::BadName`]).
    pub fn addr(&self) -> &str {
        use ObsError::*;
        match self {
            Unreachable { addr, .. }
            | ConnectTimeout { addr, .. }
            | AuthFailed { addr }
            | PasswordMissing { addr }
            | NotContacted { addr, .. }
            | Closed { addr, .. }
            | Disconnected { addr, .. }
            | Exiting { addr }
            | Protocol { addr, .. }
            | Unsupported { addr, .. }
            | RequestFailed { addr, .. }
            | RequestTimeout { addr, .. }
            | AlreadyRecording { addr, .. }
            | NotRecording { addr }
            | StartTimeout { addr, .. }
            | StopTimeout { addr, .. }
            | UnexpectedRecordState { addr, .. }
            | ReconnectGaveUp { addr, .. }
            | Shutdown { addr } => addr,
            BadName { .. } => "",
        }
    }

    /// The WebSocket close code, where the error came from one.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ObsError::AuthFailed { .. } => Some(close::AUTHENTICATION_FAILED),
            ObsError::Closed { code, .. } => Some(*code),
            ObsError::Disconnected { .. } => Some(close::ABNORMAL),
            _ => None,
        }
    }

    /// Whether connecting again could help. Wrong passwords, a kick from the OBS UI (4011),
    /// an incompatible server and our own shutdown are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            ObsError::Unreachable { .. }
            | ObsError::ConnectTimeout { .. }
            | ObsError::Disconnected { .. }
            | ObsError::Exiting { .. }
            | ObsError::RequestTimeout { .. } => true,
            ObsError::Closed { code, .. } => !matches!(
                *code,
                close::SESSION_INVALIDATED
                    | close::AUTHENTICATION_FAILED
                    | close::UNSUPPORTED_RPC_VERSION
            ),
            _ => false,
        }
    }

    /// Errors of a peer that could not be reached or used at all (exit 69), as opposed to a
    /// failure in the middle of a run (exit 1).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            ObsError::Unreachable { .. }
                | ObsError::ConnectTimeout { .. }
                | ObsError::AuthFailed { .. }
                | ObsError::PasswordMissing { .. }
                | ObsError::NotContacted { .. }
                | ObsError::Protocol { .. }
                | ObsError::Unsupported { .. }
                | ObsError::AlreadyRecording { .. }
                | ObsError::ReconnectGaveUp { .. }
        ) || matches!(self, ObsError::Closed { code, .. } if *code >= 4000)
    }

    pub(crate) fn with_attempts(mut self, n: u32) -> Self {
        match &mut self {
            ObsError::Unreachable { attempts, .. } | ObsError::ConnectTimeout { attempts, .. } => {
                *attempts = n
            }
            _ => {}
        }
        self
    }
}

impl From<ObsError> for crate::Error {
    fn from(e: ObsError) -> Self {
        match e {
            ObsError::BadName { .. } => crate::Error::Internal(e.to_string()),
            e if e.is_unavailable() => crate::Error::Unavailable(e.to_string()),
            e => crate::Error::RunFailed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_name_the_host_and_the_code() {
        let e = ObsError::AuthFailed {
            addr: "10.0.0.12:4455".into(),
        };
        assert_eq!(
            e.to_string(),
            "OBS at 10.0.0.12:4455 rejected the password (4009)"
        );
        let e = ObsError::Closed {
            addr: "10.0.0.12:4455".into(),
            code: 4011,
            reason: String::new(),
        };
        assert!(e.to_string().contains("will not reconnect"), "{e}");
        assert!(!e.is_retryable());
        let e = ObsError::RequestFailed {
            addr: "h:1".into(),
            request: "StartRecord".into(),
            code: 500,
            comment: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "OBS at h:1 refused StartRecord (500 OutputRunning)"
        );
    }

    #[test]
    fn exit_codes() {
        let unavailable: crate::Error = ObsError::AuthFailed { addr: "h:1".into() }.into();
        assert_eq!(unavailable.exit_code(), crate::error::exit::UNAVAILABLE);
        let mid_run: crate::Error = ObsError::StopTimeout {
            addr: "h:1".into(),
            timeout: Duration::from_secs(30),
        }
        .into();
        assert_eq!(mid_run.exit_code(), crate::error::exit::RUN_FAILED);
        let dropped: crate::Error = ObsError::Disconnected {
            addr: "h:1".into(),
            detail: "x".into(),
        }
        .into();
        assert_eq!(dropped.exit_code(), crate::error::exit::RUN_FAILED);
    }
}
