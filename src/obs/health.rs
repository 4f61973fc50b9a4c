//! A recording's health while a match runs, from what its OBS tells (events) and what it
//! answers (GetStats). Pure: the executor feeds it and emits what it returns.
//!
//! GetStats' frame counters are OBS-wide and cumulative since OBS started, so the first
//! sample after the recording started is the baseline and everything is counted from there.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::client::ObsEvent;
use super::protocol::{OutputState, Stats};

/// Something wrong with a recording, found while it runs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(tag = "issue", rename_all = "snake_case")]
pub enum HealthIssue {
    /// The websocket to that OBS dropped (the recording may still run; a reconnect follows).
    Disconnected { detail: String },
    /// It came back; `recording` is whether OBS says the recording still runs.
    Reconnected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recording: Option<bool>,
    },
    /// OBS is shutting down (the file is cut short).
    Exiting,
    /// OBS reported the recording stopped without oa-run asking.
    StoppedUnexpectedly,
    /// The client gave up on that OBS for good.
    Lost { detail: String },
    /// Free disk on the recording drive fell below `obs.min_free_disk`.
    LowDisk { free_mb: u64, min_mb: u64 },
    /// Skipped (encoder) or lagged (render) frames rose since the recording started.
    Frames { skipped: u64, lagged: u64 },
}

impl HealthIssue {
    /// Whether the recording can no longer be trusted to cover the match.
    pub fn loses_recording(&self) -> bool {
        matches!(
            self,
            HealthIssue::Exiting
                | HealthIssue::StoppedUnexpectedly
                | HealthIssue::Lost { .. }
                | HealthIssue::Reconnected {
                    recording: Some(false)
                }
        )
    }

    pub fn describe(&self) -> String {
        match self {
            HealthIssue::Disconnected { detail } => format!("OBS connection dropped: {detail}"),
            HealthIssue::Reconnected { recording } => match recording {
                Some(true) => "OBS reconnected; the recording is still running".into(),
                Some(false) => "OBS reconnected, but the recording is no longer running".into(),
                None => "OBS reconnected; recording state unknown".into(),
            },
            HealthIssue::Exiting => "OBS is shutting down; the recording is cut short".into(),
            HealthIssue::StoppedUnexpectedly => {
                "OBS stopped the recording without being asked".into()
            }
            HealthIssue::Lost { detail } => format!("OBS lost: {detail}"),
            HealthIssue::LowDisk { free_mb, min_mb } => {
                format!("only {free_mb} MB free on the recording drive (minimum {min_mb} MB)")
            }
            HealthIssue::Frames { skipped, lagged } => format!(
                "frames lost since the recording started: {skipped} skipped (encoding), {lagged} lagged (rendering)"
            ),
        }
    }
}

/// Frame counts of one recording, from its first and last samples.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct FrameReport {
    /// Frames the output wrote.
    pub output: u64,
    /// Frames the encoder skipped.
    pub skipped: u64,
    /// Frames the renderer lagged.
    pub lagged: u64,
    /// Output frames per second over the sampled span.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_fps: Option<f64>,
}

/// One recording's watch.
#[derive(Debug, Clone)]
pub struct Watch {
    min_free_mb: u64,
    /// (seconds since the watch began, stats)
    first: Option<(f64, Stats)>,
    last: Option<(f64, Stats)>,
    low_disk_told: bool,
    /// Skipped + lagged already reported (only a rise is news).
    frames_told: u64,
    lost: bool,
    /// Since when (watch seconds) the connection is down, if it is.
    down_since: Option<f64>,
}

/// A recording whose OBS stays unreachable this long is taken as lost: its file can no longer
/// be confirmed, and a reconnect that finds it still running is reported as such.
pub const LOST_AFTER_S: f64 = 5.0;

/// Frames lost before a rise is reported again.
const FRAMES_STEP: u64 = 10;

impl Watch {
    pub fn new(min_free_mb: u64) -> Self {
        Watch {
            min_free_mb,
            first: None,
            last: None,
            low_disk_told: false,
            frames_told: 0,
            lost: false,
            down_since: None,
        }
    }

    /// The clock moved on to `t` (watch seconds): a connection down for too long is a loss.
    pub fn on_time(&mut self, t: f64) -> Option<HealthIssue> {
        let since = self.down_since?;
        if self.lost || t - since < LOST_AFTER_S {
            return None;
        }
        self.lost = true;
        Some(HealthIssue::Lost {
            detail: format!("no connection to OBS for {LOST_AFTER_S:.0} s during the match"),
        })
    }

    /// Whether the connection to this OBS is down now (a drop seen, no reconnect yet).
    pub fn is_down(&self) -> bool {
        self.down_since.is_some()
    }

    /// Whether something ended the recording's trustworthiness.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// A GetStats answer `t` seconds after the watch began.
    pub fn on_stats(&mut self, t: f64, s: Stats) -> Vec<HealthIssue> {
        let mut out = Vec::new();
        let free = s.available_disk_space_mb.max(0.0) as u64;
        if free < self.min_free_mb {
            if !self.low_disk_told {
                self.low_disk_told = true;
                out.push(HealthIssue::LowDisk {
                    free_mb: free,
                    min_mb: self.min_free_mb,
                });
            }
        } else {
            self.low_disk_told = false;
        }
        if self.first.is_none() {
            self.first = Some((t, s.clone()));
        }
        self.last = Some((t, s));
        let r = self.report();
        let lost_frames = r.skipped + r.lagged;
        if lost_frames >= self.frames_told + FRAMES_STEP.max(1)
            || (self.frames_told == 0 && lost_frames > 0)
        {
            self.frames_told = lost_frames;
            out.push(HealthIssue::Frames {
                skipped: r.skipped,
                lagged: r.lagged,
            });
        }
        out
    }

    /// An event from that OBS at `t` (watch seconds). `stopping`: oa-run asked for the stop
    /// (a STOPPED is expected).
    pub fn on_event(&mut self, t: f64, e: &ObsEvent, stopping: bool) -> Option<HealthIssue> {
        match e {
            ObsEvent::Disconnected(_) => {
                self.down_since.get_or_insert(t);
            }
            ObsEvent::Reconnected { .. } => self.down_since = None,
            _ => {}
        }
        let issue = match e {
            ObsEvent::ExitStarted => HealthIssue::Exiting,
            ObsEvent::RecordStateChanged {
                state: OutputState::Stopped | OutputState::Stopping,
                ..
            } if !stopping => HealthIssue::StoppedUnexpectedly,
            ObsEvent::Disconnected(err) => HealthIssue::Disconnected {
                detail: err.to_string(),
            },
            ObsEvent::Reconnected { record_active } => HealthIssue::Reconnected {
                recording: *record_active,
            },
            ObsEvent::Closed(err) => HealthIssue::Lost {
                detail: err.to_string(),
            },
            _ => return None,
        };
        if issue.loses_recording() {
            if self.lost {
                // Told once: a STOPPED after ExitStarted is the same loss.
                return None;
            }
            self.lost = true;
        }
        Some(issue)
    }

    /// Frames since the first sample.
    pub fn report(&self) -> FrameReport {
        let (Some((t0, a)), Some((t1, b))) = (&self.first, &self.last) else {
            return FrameReport::default();
        };
        let output = b.output_total_frames.saturating_sub(a.output_total_frames);
        let span = t1 - t0;
        FrameReport {
            output,
            skipped: b
                .output_skipped_frames
                .saturating_sub(a.output_skipped_frames),
            lagged: b
                .render_skipped_frames
                .saturating_sub(a.render_skipped_frames),
            average_fps: (span >= 1.0).then(|| output as f64 / span),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::ObsError;

    fn stats(free_mb: f64, out: u64, skipped: u64, lagged: u64) -> Stats {
        Stats {
            cpu_usage: 1.0,
            memory_usage_mb: 100.0,
            available_disk_space_mb: free_mb,
            active_fps: 10.0,
            output_skipped_frames: skipped,
            output_total_frames: out,
            render_skipped_frames: lagged,
            render_total_frames: out + 5,
        }
    }

    #[test]
    fn counts_from_the_first_sample_and_reports_rises_once() {
        let mut w = Watch::new(2048);
        // OBS ran before: its counters are not this recording's.
        assert!(w.on_stats(0.0, stats(10_000.0, 5_000, 40, 7)).is_empty());
        assert!(w.on_stats(2.0, stats(10_000.0, 5_020, 40, 7)).is_empty());
        let i = w.on_stats(4.0, stats(10_000.0, 5_040, 43, 7));
        assert_eq!(
            i,
            vec![HealthIssue::Frames {
                skipped: 3,
                lagged: 0
            }]
        );
        // A small further rise is not news; a step of 10 is.
        assert!(w.on_stats(6.0, stats(10_000.0, 5_060, 44, 7)).is_empty());
        let i = w.on_stats(8.0, stats(10_000.0, 5_080, 44, 19));
        assert_eq!(
            i,
            vec![HealthIssue::Frames {
                skipped: 4,
                lagged: 12
            }]
        );
        let r = w.report();
        assert_eq!((r.output, r.skipped, r.lagged), (80, 4, 12));
        assert_eq!(r.average_fps, Some(10.0));
    }

    #[test]
    fn low_disk_is_told_once_until_it_recovers() {
        let mut w = Watch::new(2048);
        assert_eq!(
            w.on_stats(0.0, stats(1500.4, 0, 0, 0)),
            vec![HealthIssue::LowDisk {
                free_mb: 1500,
                min_mb: 2048
            }]
        );
        assert!(w.on_stats(1.0, stats(1400.0, 0, 0, 0)).is_empty());
        assert!(w.on_stats(2.0, stats(4000.0, 0, 0, 0)).is_empty());
        assert_eq!(w.on_stats(3.0, stats(100.0, 0, 0, 0)).len(), 1);
    }

    #[test]
    fn exit_and_unexpected_stop_lose_the_recording_once() {
        let mut w = Watch::new(0);
        let stopped = ObsEvent::RecordStateChanged {
            state: OutputState::Stopped,
            active: false,
            path: Some("/r/a.mkv".into()),
            at: std::time::Instant::now(),
            wall: chrono::Utc::now(),
        };
        // Asked for: not an issue.
        assert_eq!(w.on_event(0.0, &stopped, true), None);
        assert!(!w.lost());
        assert_eq!(
            w.on_event(0.0, &ObsEvent::ExitStarted, false),
            Some(HealthIssue::Exiting)
        );
        assert!(w.lost());
        assert_eq!(w.on_event(0.0, &stopped, false), None, "the same loss");
        let mut w = Watch::new(0);
        assert_eq!(
            w.on_event(0.0, &stopped, false),
            Some(HealthIssue::StoppedUnexpectedly)
        );
    }

    #[test]
    fn a_drop_is_news_and_a_reconnect_tells_whether_it_still_records() {
        let mut w = Watch::new(0);
        let drop = ObsEvent::Disconnected(ObsError::Disconnected {
            addr: "10.0.0.1:4455".into(),
            detail: "reset".into(),
        });
        assert!(matches!(
            w.on_event(1.0, &drop, false),
            Some(HealthIssue::Disconnected { .. })
        ));
        assert!(!w.lost(), "a drop alone does not stop a recording");
        assert_eq!(w.on_time(5.9), None, "not yet {LOST_AFTER_S} s");
        assert_eq!(
            w.on_event(
                3.0,
                &ObsEvent::Reconnected {
                    record_active: Some(false)
                },
                false
            ),
            Some(HealthIssue::Reconnected {
                recording: Some(false)
            })
        );
        assert!(w.lost());
    }

    #[test]
    fn a_connection_down_for_five_seconds_is_a_loss_told_once() {
        let mut w = Watch::new(0);
        let drop = ObsEvent::Disconnected(ObsError::Disconnected {
            addr: "10.0.0.1:4455".into(),
            detail: "reset".into(),
        });
        w.on_event(10.0, &drop, false);
        w.on_event(11.0, &drop, false);
        assert_eq!(w.on_time(14.9), None);
        assert!(matches!(w.on_time(15.0), Some(HealthIssue::Lost { .. })));
        assert!(w.lost());
        assert_eq!(w.on_time(20.0), None);
        // Back within the bound: nothing.
        let mut w = Watch::new(0);
        w.on_event(1.0, &drop, false);
        w.on_event(
            3.0,
            &ObsEvent::Reconnected {
                record_active: Some(true),
            },
            false,
        );
        assert_eq!(w.on_time(30.0), None);
        assert!(!w.lost());
    }
}
