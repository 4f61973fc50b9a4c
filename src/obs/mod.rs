//! OBS Studio on the players' PCs, controlled over obs-websocket v5.
//!
//! - [`ObsClient`]: one OBS. Hello/Identify with authentication, requests matched by
//!   `requestId` with their own timeouts, events to subscribers, keepalive, automatic reconnect
//!   (never after 4011), recording start/stop confirmed by `RecordStateChanged`.
//! - [`Fleet`]: every player's OBS at once: connect, start-all, stop-all concurrently, and each
//!   recording's own timeline sampled at the match's edges ([`crate::align`] does the arithmetic).
//! - [`check_rows`]: the `oa-run check` rows for the scenario's seats.
//!
//! Facts about the real peer (OBS 29.0.2 / obs-websocket 5.1.0) are in
//! `shared/reference/obs-websocket.md`; the tests run against it.

mod client;
mod error;
#[cfg(feature = "test-support")]
pub mod fake;
mod fleet;
pub mod health;
pub mod paths;
pub mod protocol;

use std::fmt;
use std::time::Duration;

pub use client::{
    Confirmation, IfActive, LinkState, ObsClient, ObsEvent, PreparedStart, ServerInfo,
    StartInFlight, StartedRecording, StoppedRecording,
};
pub use error::ObsError;
pub use fleet::{Fleet, RecordingReport, StartAllReport, StopAllReport};
pub use protocol::{OutputState, RecordStatus, Stats, VersionInfo};

use crate::check::CheckRow;
use crate::scenario::{Scenario, Seat, Secret};

/// One OBS to connect to.
#[derive(Debug, Clone, PartialEq)]
pub struct ObsTarget {
    /// Who this OBS belongs to: the seat name or the player's label.
    pub label: String,
    /// IP address or host name.
    pub host: String,
    pub port: u16,
    /// Shown as `***` everywhere.
    pub password: Secret,
}

impl ObsTarget {
    pub fn new(
        label: impl Into<String>,
        host: impl Into<String>,
        port: u16,
        password: Secret,
    ) -> Self {
        ObsTarget {
            label: label.into(),
            host: host.into(),
            port,
            password,
        }
    }

    /// The OBS of a seat, with the seat's overrides of `obs.port` / `obs.password`.
    pub fn for_seat(s: &Scenario, seat: &Seat) -> Self {
        let o = seat.obs.as_ref();
        ObsTarget {
            label: seat.name.clone(),
            host: seat.ip.to_string(),
            port: o.and_then(|o| o.port).unwrap_or(s.obs.port),
            password: o
                .and_then(|o| o.password.clone())
                .unwrap_or_else(|| s.obs.password.clone()),
        }
    }

    /// The OBS of a player discovered when they joined (no seats): the scenario's port and
    /// password at the player's IP.
    pub fn for_player(s: &Scenario, label: impl Into<String>, ip: std::net::IpAddr) -> Self {
        ObsTarget {
            label: label.into(),
            host: ip.to_string(),
            port: s.obs.port,
            password: s.obs.password.clone(),
        }
    }

    /// Every seat's OBS, in seat order (empty without seats).
    pub fn for_seats(s: &Scenario) -> Vec<ObsTarget> {
        s.players
            .seats
            .iter()
            .map(|seat| ObsTarget::for_seat(s, seat))
            .collect()
    }

    /// `host:port`, with IPv6 hosts in brackets: how errors and tables name this OBS.
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ObsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.label, self.addr())
    }
}

/// Timeouts, retries and intervals for talking to OBS.
#[derive(Debug, Clone, PartialEq)]
pub struct ObsConfig {
    /// One connection attempt: TCP + Hello + Identify + GetVersion.
    pub connect_timeout: Duration,
    /// Extra attempts after the first one fails (with backoff); wrong passwords are not retried.
    pub retries: u32,
    /// Wait for RecordStateChanged STARTED after StartRecord.
    pub start_timeout: Duration,
    /// Wait for RecordStateChanged STOPPED after StopRecord.
    pub stop_timeout: Duration,
    /// Any other single request.
    pub request_timeout: Duration,
    /// How often a `GetStats` keepalive is sent to notice half-open connections.
    pub keepalive_interval: Duration,
    /// A keepalive unanswered this long means the connection is half-open (a cut link, a
    /// frozen peer): a drop is told within `keepalive_interval` + this.
    pub keepalive_timeout: Duration,
    /// First delay between connection attempts; doubled each time up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// After a drop, keep trying to reconnect for this long, then give up.
    pub reconnect_window: Duration,
    /// Reconnect automatically after a drop.
    pub auto_reconnect: bool,
}

impl Default for ObsConfig {
    fn default() -> Self {
        ObsConfig {
            connect_timeout: Duration::from_secs(30),
            retries: 2,
            start_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            // A cut link is told within 4 s, so a lost recording is judged within the 5 s
            // after it that a study allows (measured on the lab: tests/faults_lab.rs).
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(3),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(5),
            reconnect_window: Duration::from_secs(120),
            auto_reconnect: true,
        }
    }
}

impl ObsConfig {
    /// The scenario's `obs` settings; the rest keep their defaults.
    pub fn from_scenario(s: &Scenario) -> Self {
        ObsConfig {
            connect_timeout: s.obs.connect_timeout.std(),
            retries: s.obs.retries,
            start_timeout: s.obs.recording.start_timeout.std(),
            stop_timeout: s.obs.recording.stop_timeout.std(),
            ..ObsConfig::default()
        }
    }

    /// Delay before attempt `n` (1-based retry number).
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        let f = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        self.backoff_initial.saturating_mul(f).min(self.backoff_max)
    }
}

/// Why a study without seats is weaker, for `check` and the start of a run; `None` with seats.
/// Without seats an OBS is found at whatever address joins the server, so oa-run sends its
/// obs-websocket login there: a rogue "OBS" at that address picks the salt and challenge and
/// can guess the shared password offline. Seats (known IPs) are the safe way.
pub fn seats_warning(s: &Scenario) -> Option<&'static str> {
    s.players.seats.is_empty().then_some(
        "no seats listed: OBS hosts are discovered when players join, and the OBS password is \
         sent to whatever address joins (after `status` confirms it); list the lab's PCs under \
         players.seats to send it only to known IPs",
    )
}

/// The `oa-run check` rows for the scenario's OBS: one per seat (connected once, without
/// retries, with the scenario's connect timeout), or a note that OBS hosts are discovered
/// when players join.
pub async fn check_rows(scenario: &Scenario) -> Vec<CheckRow> {
    let targets = ObsTarget::for_seats(scenario);
    if let Some(w) = seats_warning(scenario) {
        return vec![CheckRow::new("obs", "players", true).detail("warning", w)];
    }
    let cfg = ObsConfig {
        retries: 0,
        auto_reconnect: false,
        ..ObsConfig::from_scenario(scenario)
    };
    let rows = targets.into_iter().map(|t| {
        let cfg = cfg.clone();
        async move { check_one(t, cfg).await }
    });
    futures_util::future::join_all(rows).await
}

async fn check_one(t: ObsTarget, cfg: ObsConfig) -> CheckRow {
    let row = |ok| CheckRow::new("obs", t.label.clone(), ok).detail("address", t.addr());
    let client = match ObsClient::connect(t.clone(), cfg).await {
        Ok(c) => c,
        Err(e) => {
            let auth = if matches!(e, ObsError::AuthFailed { .. }) {
                "FAILED"
            } else {
                "-"
            };
            return row(false).detail("auth", auth).detail("error", e);
        }
    };
    let info = client.server_info();
    let mut r = row(true)
        .detail("obs", &info.version.obs_version)
        .detail("websocket", &info.version.obs_web_socket_version)
        .detail("auth", if info.authenticated { "ok" } else { "none" });
    match client.record_status().await {
        Ok(s) if s.output_active => {
            r.ok = false;
            r = r.detail(
                "recording",
                format!("ACTIVE ({}; stop it before the study)", s.output_timecode),
            );
        }
        Ok(_) => r = r.detail("recording", "no"),
        Err(e) => {
            r.ok = false;
            r = r.detail("error", e);
        }
    }
    match client.stats().await {
        Ok(s) => r = r.detail("free_disk", format_mib(s.available_disk_space_mb)),
        Err(e) => {
            r.ok = false;
            r = r.detail("error", e);
        }
    }
    client.close().await;
    r
}

/// `availableDiskSpace` is in MiB.
fn format_mib(mib: f64) -> String {
    if mib >= 1024.0 {
        format!("{:.1}GiB", mib / 1024.0)
    } else {
        format!("{mib:.0}MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_bracket_ipv6() {
        let t = ObsTarget::new("pc1", "::1", 4455, Secret::new("pw"));
        assert_eq!(t.addr(), "[::1]:4455");
        let t = ObsTarget::new("pc1", "10.0.0.12", 4455, Secret::new("pw"));
        assert_eq!(t.addr(), "10.0.0.12:4455");
        assert!(!format!("{t:?} {t}").contains("pw"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = ObsConfig::default();
        assert_eq!(c.backoff(1), Duration::from_millis(250));
        assert_eq!(c.backoff(2), Duration::from_millis(500));
        assert_eq!(c.backoff(3), Duration::from_secs(1));
        assert_eq!(c.backoff(30), Duration::from_secs(5));
    }

    #[test]
    fn disk_space_is_readable() {
        assert_eq!(format_mib(512.0), "512MiB");
        assert_eq!(format_mib(52_428.8), "51.2GiB");
    }
}
