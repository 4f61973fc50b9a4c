//! obs-websocket v5 wire format (rpcVersion 1), shared by the client and the fake server.
//!
//! Every frame is `{"op": N, "d": {...}}` as a JSON text frame (`obswebsocket.json`). Field
//! names follow the protocol exactly; see `shared/reference/obs-websocket.md`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The only RPC version obs-websocket 5.x speaks.
pub const RPC_VERSION: u32 = 1;
/// The WebSocket subprotocol for JSON text frames.
pub const SUBPROTOCOL: &str = "obswebsocket.json";

/// Op codes.
pub mod op {
    pub const HELLO: u8 = 0;
    pub const IDENTIFY: u8 = 1;
    pub const IDENTIFIED: u8 = 2;
    pub const REIDENTIFY: u8 = 3;
    pub const EVENT: u8 = 5;
    pub const REQUEST: u8 = 6;
    pub const REQUEST_RESPONSE: u8 = 7;
    pub const REQUEST_BATCH: u8 = 8;
    pub const REQUEST_BATCH_RESPONSE: u8 = 9;
}

/// EventSubscription bits.
pub mod subs {
    pub const GENERAL: u32 = 1;
    pub const OUTPUTS: u32 = 64;
    /// What a recorder needs: ExitStarted (General) and RecordStateChanged (Outputs) = 65.
    pub const RECORDER: u32 = GENERAL | OUTPUTS;
    /// `All` up to 5.6.x (the default when Identify carries no `eventSubscriptions`).
    pub const ALL_V5_1: u32 = 0x7FF;
}

/// WebSocket close codes obs-websocket uses, and what they mean to a researcher.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const ABNORMAL: u16 = 1006;
    pub const UNKNOWN_REASON: u16 = 4000;
    pub const MESSAGE_DECODE_ERROR: u16 = 4002;
    pub const MISSING_DATA_FIELD: u16 = 4003;
    pub const INVALID_DATA_FIELD_TYPE: u16 = 4004;
    pub const INVALID_DATA_FIELD_VALUE: u16 = 4005;
    pub const UNKNOWN_OP_CODE: u16 = 4006;
    pub const NOT_IDENTIFIED: u16 = 4007;
    pub const ALREADY_IDENTIFIED: u16 = 4008;
    pub const AUTHENTICATION_FAILED: u16 = 4009;
    pub const UNSUPPORTED_RPC_VERSION: u16 = 4010;
    pub const SESSION_INVALIDATED: u16 = 4011;
    pub const UNSUPPORTED_FEATURE: u16 = 4012;

    /// A short explanation of a close code, for error sentences.
    pub fn describe(code: u16) -> &'static str {
        match code {
            1000 => "normal closure",
            GOING_AWAY => "OBS is shutting down",
            ABNORMAL => {
                "the connection dropped without a close frame; OBS was killed or the network failed"
            }
            UNKNOWN_REASON => "unknown reason",
            MESSAGE_DECODE_ERROR => "OBS could not decode a message oa-run sent",
            MISSING_DATA_FIELD => "a message oa-run sent lacked a required field",
            INVALID_DATA_FIELD_TYPE => "a message oa-run sent had a field of the wrong type",
            INVALID_DATA_FIELD_VALUE => "a message oa-run sent had an invalid field value",
            UNKNOWN_OP_CODE => "OBS did not understand the message type",
            NOT_IDENTIFIED => "a request was sent before the session was identified",
            ALREADY_IDENTIFIED => "the session was identified twice",
            AUTHENTICATION_FAILED => "the password was rejected",
            UNSUPPORTED_RPC_VERSION => {
                "OBS does not support this protocol version (obs-websocket 5.x is needed)"
            }
            SESSION_INVALIDATED => {
                "someone ended this session in OBS (Tools > WebSocket Server Settings); oa-run will not reconnect"
            }
            UNSUPPORTED_FEATURE => "OBS does not support a requested feature",
            _ => "unexpected close code",
        }
    }
}

/// RequestStatus codes that matter to a recorder.
pub mod status {
    pub const SUCCESS: u16 = 100;
    pub const MISSING_REQUEST_TYPE: u16 = 203;
    pub const UNKNOWN_REQUEST_TYPE: u16 = 204;
    pub const GENERIC_ERROR: u16 = 205;
    pub const UNSUPPORTED_REQUEST_BATCH_EXECUTION_TYPE: u16 = 206;
    pub const NOT_READY: u16 = 207;
    pub const MISSING_REQUEST_FIELD: u16 = 300;
    pub const MISSING_REQUEST_DATA: u16 = 301;
    pub const INVALID_REQUEST_FIELD: u16 = 400;
    pub const INVALID_REQUEST_FIELD_TYPE: u16 = 401;
    pub const REQUEST_FIELD_OUT_OF_RANGE: u16 = 402;
    pub const REQUEST_FIELD_EMPTY: u16 = 403;
    pub const TOO_MANY_REQUEST_FIELDS: u16 = 404;
    pub const OUTPUT_RUNNING: u16 = 500;
    pub const OUTPUT_NOT_RUNNING: u16 = 501;
    pub const OUTPUT_PAUSED: u16 = 502;
    pub const OUTPUT_NOT_PAUSED: u16 = 503;
    pub const OUTPUT_DISABLED: u16 = 504;
    pub const STUDIO_MODE_ACTIVE: u16 = 505;
    pub const STUDIO_MODE_NOT_ACTIVE: u16 = 506;
    pub const RESOURCE_NOT_FOUND: u16 = 600;
    pub const RESOURCE_ALREADY_EXISTS: u16 = 601;
    pub const INVALID_RESOURCE_TYPE: u16 = 602;
    pub const NOT_ENOUGH_RESOURCES: u16 = 603;
    pub const INVALID_RESOURCE_STATE: u16 = 604;
    pub const INVALID_INPUT_KIND: u16 = 605;
    pub const RESOURCE_NOT_CONFIGURABLE: u16 = 606;
    pub const INVALID_FILTER_KIND: u16 = 607;
    pub const RESOURCE_CREATION_FAILED: u16 = 700;
    pub const RESOURCE_ACTION_FAILED: u16 = 701;
    pub const REQUEST_PROCESSING_FAILED: u16 = 702;
    pub const CANNOT_ACT: u16 = 703;

    /// The protocol's name for a status code.
    pub fn name(code: u16) -> &'static str {
        match code {
            SUCCESS => "Success",
            MISSING_REQUEST_TYPE => "MissingRequestType",
            UNKNOWN_REQUEST_TYPE => "UnknownRequestType",
            GENERIC_ERROR => "GenericError",
            UNSUPPORTED_REQUEST_BATCH_EXECUTION_TYPE => "UnsupportedRequestBatchExecutionType",
            NOT_READY => "NotReady",
            MISSING_REQUEST_FIELD => "MissingRequestField",
            MISSING_REQUEST_DATA => "MissingRequestData",
            INVALID_REQUEST_FIELD => "InvalidRequestField",
            INVALID_REQUEST_FIELD_TYPE => "InvalidRequestFieldType",
            REQUEST_FIELD_OUT_OF_RANGE => "RequestFieldOutOfRange",
            REQUEST_FIELD_EMPTY => "RequestFieldEmpty",
            TOO_MANY_REQUEST_FIELDS => "TooManyRequestFields",
            OUTPUT_RUNNING => "OutputRunning",
            OUTPUT_NOT_RUNNING => "OutputNotRunning",
            OUTPUT_PAUSED => "OutputPaused",
            OUTPUT_NOT_PAUSED => "OutputNotPaused",
            OUTPUT_DISABLED => "OutputDisabled",
            STUDIO_MODE_ACTIVE => "StudioModeActive",
            STUDIO_MODE_NOT_ACTIVE => "StudioModeNotActive",
            RESOURCE_NOT_FOUND => "ResourceNotFound",
            RESOURCE_ALREADY_EXISTS => "ResourceAlreadyExists",
            INVALID_RESOURCE_TYPE => "InvalidResourceType",
            NOT_ENOUGH_RESOURCES => "NotEnoughResources",
            INVALID_RESOURCE_STATE => "InvalidResourceState",
            INVALID_INPUT_KIND => "InvalidInputKind",
            RESOURCE_NOT_CONFIGURABLE => "ResourceNotConfigurable",
            INVALID_FILTER_KIND => "InvalidFilterKind",
            RESOURCE_CREATION_FAILED => "ResourceCreationFailed",
            RESOURCE_ACTION_FAILED => "ResourceActionFailed",
            REQUEST_PROCESSING_FAILED => "RequestProcessingFailed",
            CANNOT_ACT => "CannotAct",
            _ => "Unknown",
        }
    }
}

/// Requests oa-run cannot record without; checked against `availableRequests` at connect.
pub const REQUIRED_REQUESTS: &[&str] = &[
    "GetVersion",
    "GetStats",
    "GetRecordStatus",
    "StartRecord",
    "StopRecord",
    "SetProfileParameter",
];

/// The authentication string: `base64(sha256(base64(sha256(password + salt)) + challenge))`.
/// Salt and challenge are concatenated as sent, never decoded.
pub fn auth_string(password: &str, salt: &str, challenge: &str) -> String {
    let secret = B64.encode(Sha256::digest(format!("{password}{salt}").as_bytes()));
    B64.encode(Sha256::digest(format!("{secret}{challenge}").as_bytes()))
}

/// A frame as it comes off the wire, before its `d` is interpreted.
#[derive(Debug, Deserialize)]
struct RawFrame {
    op: u8,
    #[serde(default)]
    d: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub obs_web_socket_version: String,
    pub rpc_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthChallenge>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthChallenge {
    pub challenge: String,
    pub salt: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identify {
    pub rpc_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_subscriptions: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identified {
    pub negotiated_rpc_version: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMsg {
    pub event_type: String,
    #[serde(default)]
    pub event_intent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub request_type: String,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_data: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestStatus {
    pub result: bool,
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestResponse {
    pub request_type: String,
    pub request_id: String,
    pub request_status: RequestStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_data: Option<Value>,
}

/// What a client can receive.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    Hello(Hello),
    Identified(Identified),
    Event(EventMsg),
    RequestResponse(RequestResponse),
    /// Batches are not used by oa-run; kept so they are not mistaken for garbage.
    RequestBatchResponse(Value),
}

/// What a server can receive.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Identify(Identify),
    Reidentify { event_subscriptions: Option<u32> },
    Request(Request),
    RequestBatch(Value),
}

/// Why a frame could not be understood; the server side maps it to a close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The obs-websocket close code a server would answer with.
    pub close_code: u16,
    pub detail: String,
}

fn decode_err(close_code: u16, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        close_code,
        detail: detail.into(),
    }
}

fn raw(text: &str) -> Result<RawFrame, DecodeError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| decode_err(close::MESSAGE_DECODE_ERROR, format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(decode_err(close::MESSAGE_DECODE_ERROR, "not a JSON object"));
    }
    if v.get("op").is_none() {
        return Err(decode_err(close::MISSING_DATA_FIELD, "no `op` field"));
    }
    serde_json::from_value(v)
        .map_err(|e| decode_err(close::INVALID_DATA_FIELD_TYPE, format!("bad frame: {e}")))
}

fn data<T: serde::de::DeserializeOwned>(d: Value, what: &str) -> Result<T, DecodeError> {
    serde_json::from_value(d)
        .map_err(|e| decode_err(close::MISSING_DATA_FIELD, format!("bad {what}: {e}")))
}

/// Parse a text frame from a server. Never panics on any input.
pub fn parse_server(text: &str) -> Result<ServerMessage, DecodeError> {
    let f = raw(text)?;
    Ok(match f.op {
        op::HELLO => ServerMessage::Hello(data(f.d, "Hello")?),
        op::IDENTIFIED => ServerMessage::Identified(data(f.d, "Identified")?),
        op::EVENT => ServerMessage::Event(data(f.d, "Event")?),
        op::REQUEST_RESPONSE => ServerMessage::RequestResponse(data(f.d, "RequestResponse")?),
        op::REQUEST_BATCH_RESPONSE => ServerMessage::RequestBatchResponse(f.d),
        other => {
            return Err(decode_err(
                close::UNKNOWN_OP_CODE,
                format!("unexpected op {other} from a server"),
            ));
        }
    })
}

/// Parse a text frame from a client (used by the fake server). Never panics on any input.
pub fn parse_client(text: &str) -> Result<ClientMessage, DecodeError> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| decode_err(close::MESSAGE_DECODE_ERROR, format!("not JSON: {e}")))?;
    // A v4 client sends `{"request-type": ...}`; 5.x answers 4010 (seen on 5.1.0).
    if v.get("request-type").is_some() {
        return Err(decode_err(
            close::UNSUPPORTED_RPC_VERSION,
            "You are connecting with a pre-5.0.0 plugin protocol.",
        ));
    }
    let f = raw(text)?;
    if !f.d.is_object() {
        return Err(decode_err(close::MISSING_DATA_FIELD, "no `d` object"));
    }
    Ok(match f.op {
        op::IDENTIFY => ClientMessage::Identify(data(f.d, "Identify")?),
        op::REIDENTIFY => ClientMessage::Reidentify {
            event_subscriptions: f
                .d
                .get("eventSubscriptions")
                .and_then(Value::as_u64)
                .map(|v| v as u32),
        },
        op::REQUEST => ClientMessage::Request(data(f.d, "Request")?),
        op::REQUEST_BATCH => ClientMessage::RequestBatch(f.d),
        other => {
            return Err(decode_err(
                close::UNKNOWN_OP_CODE,
                format!("Unknown OpCode: {other}"),
            ));
        }
    })
}

fn frame(op: u8, d: impl Serialize) -> String {
    json!({ "op": op, "d": d }).to_string()
}

/// Encode an Identify frame.
pub fn encode_identify(authentication: Option<String>, event_subscriptions: u32) -> String {
    frame(
        op::IDENTIFY,
        Identify {
            rpc_version: RPC_VERSION,
            authentication,
            event_subscriptions: Some(event_subscriptions),
        },
    )
}

/// Encode a Request frame.
pub fn encode_request(request_type: &str, request_id: &str, request_data: Option<Value>) -> String {
    frame(
        op::REQUEST,
        Request {
            request_type: request_type.to_string(),
            request_id: request_id.to_string(),
            request_data,
        },
    )
}

pub fn encode_hello(h: &Hello) -> String {
    frame(op::HELLO, h)
}
pub fn encode_identified(i: &Identified) -> String {
    frame(op::IDENTIFIED, i)
}
pub fn encode_event(e: &EventMsg) -> String {
    frame(op::EVENT, e)
}
pub fn encode_response(r: &RequestResponse) -> String {
    frame(op::REQUEST_RESPONSE, r)
}

/// `outputState` of RecordStateChanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputState {
    Starting,
    Started,
    Stopping,
    Stopped,
    Paused,
    Resumed,
    /// Any other value (stream states, future additions).
    Other(String),
}

impl OutputState {
    pub fn parse(s: &str) -> OutputState {
        match s.strip_prefix("OBS_WEBSOCKET_OUTPUT_").unwrap_or(s) {
            "STARTING" => OutputState::Starting,
            "STARTED" => OutputState::Started,
            "STOPPING" => OutputState::Stopping,
            "STOPPED" => OutputState::Stopped,
            "PAUSED" => OutputState::Paused,
            "RESUMED" => OutputState::Resumed,
            other => OutputState::Other(other.to_string()),
        }
    }
    pub fn wire(&self) -> String {
        let s = match self {
            OutputState::Starting => "STARTING",
            OutputState::Started => "STARTED",
            OutputState::Stopping => "STOPPING",
            OutputState::Stopped => "STOPPED",
            OutputState::Paused => "PAUSED",
            OutputState::Resumed => "RESUMED",
            OutputState::Other(o) => o,
        };
        format!("OBS_WEBSOCKET_OUTPUT_{s}")
    }
}

/// `RecordStateChanged` event data.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordStateChanged {
    pub output_active: bool,
    pub output_state: OutputState,
    /// A string on STARTED (5.0.1+) and STOPPED, else null.
    pub output_path: Option<String>,
}

impl RecordStateChanged {
    /// Lenient: a missing or mistyped field never panics.
    pub fn from_data(d: Option<&Value>) -> Option<Self> {
        let d = d?;
        Some(RecordStateChanged {
            output_active: d.get("outputActive").and_then(Value::as_bool)?,
            output_state: OutputState::parse(d.get("outputState").and_then(Value::as_str)?),
            output_path: d
                .get("outputPath")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}
fn string(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `GetRecordStatus` response (it carries no path).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordStatus {
    pub output_active: bool,
    pub output_paused: bool,
    pub output_timecode: String,
    pub output_duration_ms: u64,
    pub output_bytes: u64,
}

impl RecordStatus {
    pub fn from_data(d: &Value) -> Option<Self> {
        Some(RecordStatus {
            output_active: d.get("outputActive").and_then(Value::as_bool)?,
            output_paused: d
                .get("outputPaused")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            output_timecode: string(d, "outputTimecode"),
            output_duration_ms: num(d, "outputDuration").unwrap_or(0.0).max(0.0) as u64,
            output_bytes: num(d, "outputBytes").unwrap_or(0.0).max(0.0) as u64,
        })
    }
}

/// `GetVersion` response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionInfo {
    pub obs_version: String,
    pub obs_web_socket_version: String,
    pub rpc_version: u32,
    pub available_requests: Vec<String>,
    pub platform: String,
    pub platform_description: String,
}

impl VersionInfo {
    pub fn from_data(d: &Value) -> Option<Self> {
        Some(VersionInfo {
            obs_version: d.get("obsVersion")?.as_str()?.to_string(),
            obs_web_socket_version: d.get("obsWebSocketVersion")?.as_str()?.to_string(),
            rpc_version: num(d, "rpcVersion").unwrap_or(0.0) as u32,
            available_requests: d
                .get("availableRequests")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            platform: string(d, "platform"),
            platform_description: string(d, "platformDescription"),
        })
    }

    pub fn supports(&self, request: &str) -> bool {
        self.available_requests.iter().any(|r| r == request)
    }
}

/// `GetStats` response (the fields oa-run reports).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub cpu_usage: f64,
    pub memory_usage_mb: f64,
    /// Free space on the recording drive, in MiB.
    pub available_disk_space_mb: f64,
    pub active_fps: f64,
    pub output_skipped_frames: u64,
    pub output_total_frames: u64,
    /// Frames the renderer missed ("lagged frames due to rendering lag/stalls").
    pub render_skipped_frames: u64,
    pub render_total_frames: u64,
}

impl Stats {
    pub fn from_data(d: &Value) -> Option<Self> {
        Some(Stats {
            cpu_usage: num(d, "cpuUsage").unwrap_or(0.0),
            memory_usage_mb: num(d, "memoryUsage").unwrap_or(0.0),
            available_disk_space_mb: num(d, "availableDiskSpace")?,
            active_fps: num(d, "activeFps").unwrap_or(0.0),
            output_skipped_frames: num(d, "outputSkippedFrames").unwrap_or(0.0) as u64,
            output_total_frames: num(d, "outputTotalFrames").unwrap_or(0.0) as u64,
            render_skipped_frames: num(d, "renderSkippedFrames").unwrap_or(0.0) as u64,
            render_total_frames: num(d, "renderTotalFrames").unwrap_or(0.0) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_matches_the_spec_values() {
        // Computed independently (reference notes); the spec's own example string does not
        // match its salt and challenge.
        let pw = "supersecretpassword";
        let salt = "lM1GncleQOaCu9lT1yeUZhFYnqhsLLP1G5lAGo3ixaI=";
        let challenge = "+IxH4CnCiqpX1rM9scsNynZzbOe4KhDeYcTNS3PDaeY=";
        let secret = B64.encode(Sha256::digest(format!("{pw}{salt}").as_bytes()));
        assert_eq!(secret, "H1IfVz1pSREUQzbFTVnX/Tyb+gMhMik5x7yUBCY0PTs=");
        assert_eq!(
            auth_string(pw, salt, challenge),
            "1Ct943GAT+6YQUUX47Ia/ncufilbe6+oD6lY+5kaCu4="
        );
    }

    #[test]
    fn auth_matches_the_obs_websocket_js_mock_values() {
        let pw = "supersecretpassword";
        let salt = "PZVbYpvAnZut2SS6JNJytDm9";
        let challenge = "ztTBnnuqrqaKDzRM3xcVdbYm";
        let secret = B64.encode(Sha256::digest(format!("{pw}{salt}").as_bytes()));
        assert_eq!(secret, "Ln68W1UNXYyY7xDwp+h5foYLI6bzI1qZjKokTa5ZdwE=");
        assert_eq!(
            auth_string(pw, salt, challenge),
            "zZgWipvwSGrw748kHN4gNpBC1IaeiiWX3Hjkrm849Sc="
        );
    }

    #[test]
    fn subscriptions_for_a_recorder_are_65() {
        assert_eq!(subs::RECORDER, 65);
    }

    #[test]
    fn parses_a_real_hello_and_identify_round_trip() {
        // As sent by obs-websocket 5.1.0 (no obsStudioVersion before 5.6.0).
        let hello = r#"{"d":{"authentication":{"challenge":"c","salt":"s"},"obsWebSocketVersion":"5.1.0","rpcVersion":1},"op":0}"#;
        let ServerMessage::Hello(h) = parse_server(hello).unwrap() else {
            panic!("not a hello")
        };
        assert_eq!(h.obs_web_socket_version, "5.1.0");
        assert_eq!(h.authentication.unwrap().salt, "s");
        let id = encode_identify(Some("x".into()), subs::RECORDER);
        let ClientMessage::Identify(i) = parse_client(&id).unwrap() else {
            panic!("not an identify")
        };
        assert_eq!(i.event_subscriptions, Some(65));
        assert_eq!(i.rpc_version, 1);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        for g in [
            "",
            "{",
            "null",
            "[]",
            "42",
            r#"{"op":"x"}"#,
            r#"{"op":0}"#,
            r#"{"op":0,"d":{"rpcVersion":"one"}}"#,
            r#"{"op":7,"d":{"requestId":1}}"#,
            r#"{"op":99,"d":{}}"#,
            r#"{"op":-1,"d":{}}"#,
            "\u{0}\u{ffff}",
        ] {
            assert!(parse_server(g).is_err(), "{g:?}");
            assert!(parse_client(g).is_err(), "{g:?}");
        }
        let v4 = r#"{"request-type":"GetVersion","message-id":"1"}"#;
        assert_eq!(
            parse_client(v4).unwrap_err().close_code,
            close::UNSUPPORTED_RPC_VERSION
        );
        assert_eq!(
            parse_client(r#"{"op":42,"d":{}}"#).unwrap_err().close_code,
            close::UNKNOWN_OP_CODE
        );
    }

    #[test]
    fn record_state_is_parsed_leniently() {
        let d = json!({"outputActive": true, "outputState": "OBS_WEBSOCKET_OUTPUT_STARTED", "outputPath": "/r/a.mkv"});
        let r = RecordStateChanged::from_data(Some(&d)).unwrap();
        assert_eq!(r.output_state, OutputState::Started);
        assert_eq!(r.output_path.as_deref(), Some("/r/a.mkv"));
        let d = json!({"outputActive": false, "outputState": "OBS_WEBSOCKET_OUTPUT_STARTING", "outputPath": null});
        let r = RecordStateChanged::from_data(Some(&d)).unwrap();
        assert_eq!(r.output_path, None);
        assert!(RecordStateChanged::from_data(Some(&json!({"outputActive": 1}))).is_none());
        assert!(RecordStateChanged::from_data(None).is_none());
        assert_eq!(
            OutputState::parse(&OutputState::Stopped.wire()),
            OutputState::Stopped
        );
    }

    #[test]
    fn status_and_close_names() {
        assert_eq!(status::name(500), "OutputRunning");
        assert_eq!(status::name(204), "UnknownRequestType");
        assert!(close::describe(4011).contains("will not reconnect"));
        assert!(close::describe(4009).contains("password"));
    }
}
