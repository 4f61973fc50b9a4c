//! What callers of [`ObsClient`](super::ObsClient) see: server info, events, link state and
//! confirmed recordings.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::obs::error::ObsError;
use crate::obs::protocol::{OutputState, VersionInfo};

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
    pub(super) fn new(
        version: VersionInfo,
        authenticated: bool,
        negotiated_rpc_version: u32,
    ) -> Self {
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
    pub(super) fn by(from_event: bool) -> Self {
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
    /// Where OBS said it records (`GetRecordDirectory` before the start), to check `path`.
    pub record_dir: Option<String>,
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
