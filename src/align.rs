//! Recordings aligned to the match: where the match lies in each file's own timeline.
//!
//! At each edge of a match oa-run asks every recording OBS for `GetRecordStatus`. OBS answers
//! with `outputDuration`, the file's timeline so far; obs-websocket 5.x computes it as
//! `total_frames x frame_interval` (truncated to ms, so it advances in whole frames) and sends
//! `outputTimecode` as the same value in `HH:MM:SS.mmm`. OBS read that value somewhere inside
//! the request's round trip, so the timeline position at the round trip's middle is known to
//! within half the round trip, plus one frame for the count's granularity. Subtracting how
//! long after the edge that middle was (oa-run's monotonic clock) places the edge in the file.
//!
//! All arithmetic here is pure and runs on monotonic milliseconds: a wall-clock step between
//! the edges (NTP) cannot move an offset. The wall clock only labels the edge.

use crate::manifest::{
    Alignment, AlignmentReference, EdgeSample, MatchEdge, MatchRecord, RecordingRecord, Timestamp,
};

/// A file's timeline may disagree with the match's length by this many frames (plus the two
/// samples' error bounds) before it is reported as dropped or lagged frames.
pub const DRIFT_TOLERANCE_FRAMES: f64 = 3.0;
/// Frame interval assumed for the drift tolerance when OBS did not say (30 fps).
const DEFAULT_FRAME_MS: f64 = 1000.0 / 30.0;

/// How long after the file's first frame OBS's STARTED event reaches oa-run on one machine, ms
/// (the lab measured 28–39 ms between OBS's logged start and the event's arrival).
pub const STARTED_DELAY_MS: f64 = 30.0;
/// Error bound of a measured encoder lag, ms: the STARTED delay's spread (±6 ms on the lab)
/// plus the probe's poll spacing.
pub const LAG_ERROR_MS: f64 = 20.0;

/// The lag of OBS's frame count behind the file's timeline. `outputDuration` counts video
/// packets that left the encoder (libobs `total_frames`), not frames captured, so it runs
/// behind the file by the encoder's delay (x264's lookahead, B-frames and threads: more than
/// a second at 10 fps). Measured once per recording right after STARTED by polling
/// GetRecordStatus: the earliest "apparent origin" (answer time minus reported duration)
/// against the file's start as STARTED tells it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderLag {
    /// Add to a reported duration to get the file's position (at the frame's start), ms.
    pub lag_ms: f64,
    /// Extra error bound of `lag_ms`, ms (0 when snapped to whole frames).
    pub error_ms: f64,
}

/// One GetRecordStatus poll: sent, received (monotonic ms) and `outputDuration`.
pub type Poll = (f64, f64, u64);

/// The encoder lag from polls made after STARTED arrived at `started_ms`. `None` without a
/// frame interval (an OBS that reports ms is taken at its word) or without a non-zero poll.
pub fn encoder_lag(started_ms: f64, polls: &[Poll], frame_ms: Option<f64>) -> Option<EncoderLag> {
    let f = frame_ms.filter(|f| *f > 0.0)?;
    let counted: Vec<f64> = polls
        .iter()
        .filter(|p| p.2 > 0 && p.1 >= p.0)
        .map(|p| (p.0 + p.1) / 2.0 - p.2 as f64)
        .collect();
    if counted.is_empty() {
        return None;
    }
    let apparent = counted.iter().sum::<f64>() / counted.len() as f64;
    // OBS started the output about STARTED_DELAY_MS before STARTED arrived; a packet for
    // frame k is counted once frame k + D is captured, so the apparent origin averages about
    // D − ½ frames after the start. Not snapped to whole frames: the first frame itself comes
    // anywhere up to one frame after the start, and the start is what OBS logs.
    let lag = apparent - (started_ms - STARTED_DELAY_MS);
    Some(EncoderLag {
        // At least −1 frame: an encoder without delay (D = 0).
        lag_ms: lag.max(-f),
        error_ms: LAG_ERROR_MS,
    })
}

/// One GetRecordStatus answer with its timing, as measured at the edge of the network.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample {
    /// When the request was sent, monotonic ms (any fixed epoch shared with `reference_ms`).
    pub sent_ms: f64,
    /// When the answer arrived, same clock.
    pub received_ms: f64,
    pub output_active: bool,
    /// `outputDuration` (ms); 0 when OBS sent none.
    pub output_duration_ms: u64,
    /// `outputTimecode` as sent (`HH:MM:SS.mmm`).
    pub output_timecode: String,
    /// The frame interval, where OBS told it (GetVideoSettings); `None`: OBS counts in ms.
    pub frame_ms: Option<f64>,
    /// The recording's encoder lag, where measured.
    pub lag: Option<EncoderLag>,
    /// Further polls at the same edge (a frame count moves in steps, and x264 hands packets
    /// over in bursts: several polls average that out). May be empty.
    pub more: Vec<Poll>,
}

/// Why a sample cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    #[error("the answer arrived {0:.1} ms before the request was sent (clock went backwards)")]
    NegativeRoundTrip(f64),
    #[error("the sample was taken {0:.1} ms before the match edge it is meant to place")]
    BeforeReference(f64),
}

/// `HH:MM:SS.mmm` (obs-websocket's `outputTimecode`) in ms; `None` if malformed.
pub fn parse_timecode(s: &str) -> Option<u64> {
    let (hms, frac) = s.trim().split_once('.')?;
    let mut parts = hms.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || frac.len() != 3 {
        return None;
    }
    let num = |x: &str| -> Option<u64> {
        (!x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    let (h, m, sec, ms) = (num(h)?, num(m)?, num(sec)?, num(frac)?);
    if m >= 60 || sec >= 60 {
        return None;
    }
    Some(((h * 60 + m) * 60 + sec) * 1000 + ms)
}

/// The file's timeline position OBS reported: `outputDuration`, or the timecode when the
/// duration is missing (both carry the same value in obs-websocket 5.1).
fn reported_position_ms(raw: &RawSample) -> u64 {
    if raw.output_duration_ms == 0 {
        parse_timecode(&raw.output_timecode).unwrap_or(0)
    } else {
        raw.output_duration_ms
    }
}

/// Place a match edge in a file. `reference_ms` is the edge on the same monotonic clock as the
/// sample; `match_elapsed_ms` the edge's distance from the match start (0 for the start).
pub fn edge_sample(
    raw: &RawSample,
    reference_ms: f64,
    reference_at: Timestamp,
    match_elapsed_ms: f64,
) -> Result<EdgeSample, SampleError> {
    let mut polls = vec![(raw.sent_ms, raw.received_ms, reported_position_ms(raw))];
    polls.extend(raw.more.iter().copied());
    let mut rtt = 0.0f64;
    let mut rtt_min = f64::INFINITY;
    for p in &polls {
        if p.1 < p.0 {
            return Err(SampleError::NegativeRoundTrip(p.0 - p.1));
        }
        if (p.0 + p.1) / 2.0 < reference_ms {
            return Err(SampleError::BeforeReference(
                reference_ms - (p.0 + p.1) / 2.0,
            ));
        }
        rtt = rtt.max(p.1 - p.0);
        rtt_min = rtt_min.min(p.1 - p.0);
    }
    let first = &polls[0];
    let after = (first.0 + first.1) / 2.0 - reference_ms;
    // The file's apparent origin (answer time minus the position OBS reported), averaged over
    // the polls that saw frames counted.
    let counted: Vec<&Poll> = polls.iter().filter(|p| p.2 > 0).collect();
    let used = if counted.is_empty() {
        polls.iter().collect()
    } else {
        counted
    };
    let apparent = used
        .iter()
        .map(|p| (p.0 + p.1) / 2.0 - p.2 as f64)
        .sum::<f64>()
        / used.len() as f64;
    // With a measured lag, it was measured against the same averaged origin. Without one, a
    // frame count stands for the frame in progress: take the middle of that frame.
    let (lag, lag_err) = match raw.lag {
        Some(l) => (l.lag_ms, l.error_ms),
        None => (raw.frame_ms.unwrap_or(0.0) / 2.0, 0.0),
    };
    // 0.01 ms: finer digits are clock noise, and the manifest stays readable.
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Ok(EdgeSample {
        offset_ms: round(reference_ms - apparent + lag),
        error_ms: round(rtt / 2.0 + raw.frame_ms.unwrap_or(0.0) + lag_err),
        encoder_lag_ms: raw.lag.map(|l| round(l.lag_ms)),
        rtt_ms: round(rtt),
        rtt_min_ms: Some(round(rtt_min)),
        frame_ms: raw.frame_ms,
        output_active: raw.output_active,
        output_duration_ms: raw.output_duration_ms,
        sampled_after_ms: round(after),
        match_elapsed_ms,
        reference_at,
    })
}

/// The file's span between the two edges minus the match's length (both monotonic), ms.
pub fn drift_ms(start: &EdgeSample, end: &EdgeSample) -> f64 {
    let d = (end.offset_ms - start.offset_ms) - (end.match_elapsed_ms - start.match_elapsed_ms);
    (d * 100.0).round() / 100.0
}

/// Why the recording cannot be aligned at this edge (sentences, none when it can). `start`
/// is the sample already taken at the other edge, if any.
pub fn edge_warnings(edge: MatchEdge, s: &EdgeSample, start: Option<&EdgeSample>) -> Vec<String> {
    let mut w = Vec::new();
    match edge {
        MatchEdge::Start if !s.output_active => w.push(
            "OBS was not recording when the match began: the file cannot be aligned".to_string(),
        ),
        MatchEdge::Start if s.offset_ms < -s.error_ms => w.push(format!(
            "the recording started {:.0} ms after the match began: the file misses the match's start",
            -s.offset_ms
        )),
        MatchEdge::End if !s.output_active => w.push(
            "the recording stopped before the match ended: the file misses the match's end"
                .to_string(),
        ),
        _ => {}
    }
    if edge == MatchEdge::End
        && s.output_active
        && let Some(start) = start.filter(|st| st.output_active)
    {
        let frame = s.frame_ms.or(start.frame_ms).unwrap_or(DEFAULT_FRAME_MS);
        let tolerance = DRIFT_TOLERANCE_FRAMES * frame + s.error_ms + start.error_ms;
        let drift = drift_ms(start, s);
        if drift.abs() > tolerance {
            w.push(format!(
                "OBS's timeline covers {:.0} ms of the match's {:.0} ms ({:+.0} ms, more than {} frames): \
                 OBS dropped or lagged frames, so times inside the file drift from the match",
                s.offset_ms - start.offset_ms,
                s.match_elapsed_ms - start.match_elapsed_ms,
                drift,
                DRIFT_TOLERANCE_FRAMES
            ));
        }
    }
    w
}

/// Fold one edge sample into a recording's record: offsets, file start, drift, warnings.
/// Returns the warnings this sample added.
pub fn apply_sample(rec: &mut RecordingRecord, edge: MatchEdge, s: EdgeSample) -> Vec<String> {
    let a = rec.alignment.get_or_insert_with(|| Alignment {
        reference: AlignmentReference::GamesLog,
        start: None,
        end: None,
        drift_ms: None,
        warnings: Vec::new(),
    });
    let added = edge_warnings(edge, &s, a.start.as_ref());
    match edge {
        MatchEdge::Start => {
            a.start = Some(s);
            if s.output_active {
                rec.match_start_offset_ms = Some(s.offset_ms.round() as i64);
                let ms = s.offset_ms.round() as i64;
                rec.timeline_started_at = Some(Timestamp(
                    s.reference_at.0 - chrono::Duration::milliseconds(ms),
                ));
            }
        }
        MatchEdge::End => {
            a.end = Some(s);
            if s.output_active {
                rec.match_end_offset_ms = Some(s.offset_ms.round() as i64);
            }
        }
    }
    a.drift_ms = match (&a.start, &a.end) {
        (Some(st), Some(en)) if st.output_active && en.output_active => Some(drift_ms(st, en)),
        _ => None,
    };
    a.warnings.extend(added.iter().cloned());
    added
}

/// Record that OBS could not be asked at this edge. Returns the warning added.
pub fn apply_sample_error(rec: &mut RecordingRecord, edge: MatchEdge, error: &str) -> String {
    let w = format!(
        "OBS's timeline could not be read at the match {}: {error}; the file cannot be aligned there",
        match edge {
            MatchEdge::Start => "start",
            MatchEdge::End => "end",
        }
    );
    rec.alignment
        .get_or_insert_with(|| Alignment {
            reference: AlignmentReference::GamesLog,
            start: None,
            end: None,
            drift_ms: None,
            warnings: Vec::new(),
        })
        .warnings
        .push(w.clone());
    w
}

/// The match's alignment figures from its recordings: spread of the start offsets (largest
/// minus smallest) and the largest error bound among them.
pub fn match_spread(m: &mut MatchRecord, recordings: &[RecordingRecord]) {
    let starts: Vec<(i64, f64)> = recordings
        .iter()
        .filter(|r| r.match_no == m.number)
        .filter_map(|r| {
            let err = r.alignment.as_ref()?.start.as_ref()?.error_ms;
            Some((r.match_start_offset_ms?, err))
        })
        .collect();
    let (Some(min), Some(max)) = (
        starts.iter().map(|s| s.0).min(),
        starts.iter().map(|s| s.0).max(),
    ) else {
        m.alignment_spread_ms = None;
        m.alignment_error_ms = None;
        return;
    };
    m.alignment_spread_ms = Some(max - min);
    m.alignment_error_ms = starts.iter().map(|s| s.1).reduce(f64::max);
}

/// One line on where the match lies in the match's files, e.g. `the match starts 2.345–2.368 s
/// into the 3 files (spread 23 ms, each offset ±52 ms)`; `None` before any start sample.
pub fn match_line(m: &MatchRecord, recordings: &[RecordingRecord]) -> Option<String> {
    let starts: Vec<i64> = recordings
        .iter()
        .filter(|r| r.match_no == m.number)
        .filter_map(|r| r.match_start_offset_ms)
        .collect();
    let (min, max) = (*starts.iter().min()?, *starts.iter().max()?);
    let unaligned = recordings
        .iter()
        .filter(|r| r.match_no == m.number)
        .filter(|r| r.alignment.as_ref().is_some_and(|a| !a.warnings.is_empty()))
        .count();
    let mut s = format!(
        "the match starts {}–{} s into the {} files (spread {} ms, each offset ±{:.0} ms)",
        secs(min),
        secs(max),
        starts.len(),
        m.alignment_spread_ms.unwrap_or(max - min),
        m.alignment_error_ms.unwrap_or(0.0)
    );
    if unaligned > 0 {
        s.push_str(&format!("; {unaligned} cannot be aligned (see warnings)"));
    }
    Some(s)
}

/// Quote a string for a POSIX shell (single quotes; `'` as `'\''`).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Seconds with ms precision, as ffmpeg takes them.
fn secs(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    format!("{sign}{}.{:03}", ms.abs() / 1000, ms.abs() % 1000)
}

/// A ready `ffmpeg` line that cuts the match out of this recording (stream copy, so the cut
/// snaps to the keyframe at or before the offset). `None` when the file cannot be cut to the
/// match: no path, an edge not measured, the file starting after the match began, or a path
/// with control characters (no safe one-line command exists for it).
pub fn ffmpeg_cut_line(rec: &RecordingRecord) -> Option<String> {
    let path = rec.path.as_deref()?;
    if path.chars().any(char::is_control) {
        return None;
    }
    let start = rec.match_start_offset_ms?;
    let end = rec.match_end_offset_ms?;
    if start < 0 || end <= start {
        return None;
    }
    let p = std::path::Path::new(path);
    let stem = p.file_stem()?.to_str()?;
    let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("mkv");
    let out = p.with_file_name(format!("{stem}.match{}.{ext}", rec.match_no));
    Some(format!(
        "ffmpeg -ss {} -t {} -i {} -c copy {}",
        secs(start),
        secs(end - start),
        shell_quote(path),
        shell_quote(&out.to_string_lossy())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(ms: i64) -> Timestamp {
        Timestamp(Utc.timestamp_millis_opt(1_790_000_000_000 + ms).unwrap())
    }

    fn raw(sent: f64, received: f64, duration: u64, frame: Option<f64>) -> RawSample {
        RawSample {
            sent_ms: sent,
            received_ms: received,
            output_active: true,
            output_duration_ms: duration,
            output_timecode: String::new(),
            frame_ms: frame,
            lag: None,
            more: Vec::new(),
        }
    }

    #[test]
    fn encoder_lag_is_measured_from_the_earliest_apparent_origin() {
        // File began at 970 (STARTED arrived at 1000); 10 fps; the encoder holds 15 frames,
        // so frame k is counted at 970 + (k + 15) * 100 + 4.
        let counted = |t: f64| -> u64 {
            let n = ((t - 970.0 - 4.0) / 100.0 - 15.0).floor() + 1.0;
            (n.max(0.0) * 100.0) as u64
        };
        let polls: Vec<Poll> = (0..90)
            .map(|i| {
                let s = 1000.0 + i as f64 * 20.0;
                (s, s + 2.0, counted(s + 1.0))
            })
            .collect();
        let lag = encoder_lag(1000.0, &polls, Some(100.0)).unwrap();
        // About (D − ½) frames + 4 ms.
        assert!((1430.0..1480.0).contains(&lag.lag_ms), "{lag:?}");
        assert_eq!(lag.error_ms, LAG_ERROR_MS);
        // At 5000 the file is 4030 ms in; the corrected sample says so within its bound.
        let mut r = raw(4999.0, 5001.0, counted(5000.0), Some(100.0));
        r.lag = Some(lag);
        let s = edge_sample(&r, 5000.0, at(0), 0.0).unwrap();
        assert!((s.offset_ms - 4030.0).abs() <= s.error_ms, "{s:?}");
        assert!((s.offset_ms - 4030.0).abs() <= 55.0, "{s:?}");
        // No frame interval, or nothing counted yet: no lag is claimed.
        assert_eq!(encoder_lag(1000.0, &polls, None), None);
        assert_eq!(encoder_lag(1000.0, &polls[..5], Some(100.0)), None);
    }

    #[test]
    fn timecodes_parse_and_malformed_ones_do_not() {
        assert_eq!(parse_timecode("00:00:00.000"), Some(0));
        assert_eq!(parse_timecode("00:01:02.345"), Some(62_345));
        assert_eq!(parse_timecode("01:00:00.100"), Some(3_600_100));
        for bad in [
            "",
            "1:2",
            "00:00:00",
            "00:61:00.000",
            "00:00:60.000",
            "00:00:00.1",
            "-1:00:00.000",
            "00:00:00.000:1",
            "aa:00:00.000",
        ] {
            assert_eq!(parse_timecode(bad), None, "{bad}");
        }
    }

    #[test]
    fn millisecond_timeline_error_is_half_the_round_trip() {
        // Edge at t=1000; request sent 1010, answered 1014 (mid 1012); OBS had 5012 ms.
        let s = edge_sample(&raw(1010.0, 1014.0, 5012, None), 1000.0, at(0), 0.0).unwrap();
        assert_eq!(s.offset_ms, 5000.0);
        assert_eq!(s.rtt_ms, 4.0);
        assert_eq!(s.error_ms, 2.0);
        assert_eq!(s.sampled_after_ms, 12.0);
        assert_eq!(s.rtt_min_ms, Some(4.0));
    }

    #[test]
    fn an_edge_keeps_its_slowest_and_its_fastest_poll() {
        // Three polls: 4 ms, one OBS took 40 ms to answer, 2 ms.
        let mut r = raw(1010.0, 1014.0, 5012, None);
        r.more = vec![(1020.0, 1060.0, 5040), (1070.0, 1072.0, 5071)];
        let s = edge_sample(&r, 1000.0, at(0), 0.0).unwrap();
        assert_eq!(s.rtt_ms, 40.0);
        assert_eq!(s.rtt_min_ms, Some(2.0));
        assert_eq!(s.error_ms, 20.0, "the error is bounded by the slowest");
    }

    #[test]
    fn frame_timeline_adds_one_frame_to_the_error() {
        // 10 fps: outputDuration moves in 100 ms steps.
        let s = edge_sample(&raw(1010.0, 1014.0, 5000, Some(100.0)), 1000.0, at(0), 0.0).unwrap();
        // 5000 counted 12 ms after the edge: the frame in progress, taken at its middle.
        assert_eq!(s.offset_ms, 5038.0);
        assert_eq!(s.error_ms, 102.0);
        // The truth (5000 at the edge, anywhere inside the frame) lies within the bound.
        for truth in [4988.0, 5000.0, 5088.0] {
            assert!((s.offset_ms - truth).abs() <= s.error_ms);
        }
    }

    #[test]
    fn timecode_is_used_when_the_duration_is_missing() {
        let mut r = raw(0.0, 2.0, 0, None);
        r.output_timecode = "00:00:03.001".into();
        assert_eq!(edge_sample(&r, 0.0, at(0), 0.0).unwrap().offset_ms, 3000.0);
    }

    #[test]
    fn a_backwards_clock_or_a_sample_before_the_edge_is_refused() {
        assert!(matches!(
            edge_sample(&raw(10.0, 9.0, 0, None), 0.0, at(0), 0.0),
            Err(SampleError::NegativeRoundTrip(_))
        ));
        assert!(matches!(
            edge_sample(&raw(10.0, 12.0, 0, None), 50.0, at(0), 0.0),
            Err(SampleError::BeforeReference(_))
        ));
    }

    #[test]
    fn a_wall_clock_step_between_the_edges_moves_no_offset() {
        // The same monotonic timings; the wall clock stepped back 1 h between the edges.
        let mut rec = RecordingRecord::planned(1, 1, "x");
        let start = edge_sample(&raw(5.0, 7.0, 2006, None), 0.0, at(0), 0.0).unwrap();
        let end = edge_sample(
            &raw(60_005.0, 60_007.0, 62_006, None),
            60_000.0,
            at(-3_540_000),
            60_000.0,
        )
        .unwrap();
        assert!(apply_sample(&mut rec, MatchEdge::Start, start).is_empty());
        assert!(apply_sample(&mut rec, MatchEdge::End, end).is_empty());
        assert_eq!(rec.match_start_offset_ms, Some(2000));
        assert_eq!(rec.match_end_offset_ms, Some(62_000));
        assert_eq!(rec.alignment.as_ref().unwrap().drift_ms, Some(0.0));
        // The file start is labelled from the start edge's wall time.
        assert_eq!(rec.timeline_started_at, Some(at(-2000)));
    }

    #[test]
    fn an_obs_timeline_that_loses_frames_is_reported() {
        let mut rec = RecordingRecord::planned(1, 1, "x");
        let f = Some(100.0);
        let start = edge_sample(&raw(0.0, 2.0, 1000, f), 0.0, at(0), 0.0).unwrap();
        // 60 s of match, but OBS's timeline advanced only 59.3 s (7 frames short; the tolerance
        // is 3 frames plus both error bounds: 502 ms).
        let end = edge_sample(
            &raw(60_000.0, 60_002.0, 60_300, f),
            60_000.0,
            at(60_000),
            60_000.0,
        )
        .unwrap();
        apply_sample(&mut rec, MatchEdge::Start, start);
        let w = apply_sample(&mut rec, MatchEdge::End, end);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("dropped or lagged"), "{w:?}");
        assert_eq!(rec.alignment.as_ref().unwrap().drift_ms, Some(-700.0));
        // Two frames short is within tolerance.
        let mut ok = RecordingRecord::planned(1, 1, "x");
        let end = edge_sample(
            &raw(60_000.0, 60_002.0, 60_800, f),
            60_000.0,
            at(60_000),
            60_000.0,
        )
        .unwrap();
        apply_sample(&mut ok, MatchEdge::Start, start);
        assert!(apply_sample(&mut ok, MatchEdge::End, end).is_empty());
    }

    #[test]
    fn late_start_and_early_stop_are_reported() {
        let mut rec = RecordingRecord::planned(1, 1, "x");
        // OBS had 200 ms when asked 500 ms after the edge: the file began 300 ms late.
        let late = edge_sample(&raw(499.0, 501.0, 200, None), 0.0, at(0), 0.0).unwrap();
        let w = apply_sample(&mut rec, MatchEdge::Start, late);
        assert!(w[0].contains("started 300 ms after"), "{w:?}");
        assert_eq!(rec.match_start_offset_ms, Some(-300));
        assert_eq!(ffmpeg_cut_line(&rec), None);

        let mut stopped = raw(10_000.0, 10_002.0, 0, None);
        stopped.output_active = false;
        let end = edge_sample(&stopped, 9_000.0, at(9_000), 9_000.0).unwrap();
        let w = apply_sample(&mut rec, MatchEdge::End, end);
        assert!(w[0].contains("stopped before the match ended"), "{w:?}");
        assert_eq!(rec.match_end_offset_ms, None);
        assert_eq!(rec.alignment.as_ref().unwrap().warnings.len(), 2);
    }

    #[test]
    fn spread_is_the_range_of_start_offsets_of_that_match() {
        let mut recs = Vec::new();
        for (player, duration) in [(1, 1000), (2, 1023), (3, 1007)] {
            let mut r = RecordingRecord::planned(player, 1, "x");
            let s = edge_sample(&raw(10.0, 14.0, duration, None), 10.0, at(0), 0.0).unwrap();
            apply_sample(&mut r, MatchEdge::Start, s);
            recs.push(r);
        }
        let mut other = RecordingRecord::planned(1, 2, "x");
        other.match_start_offset_ms = Some(99_999);
        recs.push(other);
        let mut m: MatchRecord = serde_json::from_value(serde_json::json!({
            "number": 1, "repeat": 1, "latency": []
        }))
        .unwrap();
        match_spread(&mut m, &recs);
        assert_eq!(m.alignment_spread_ms, Some(23));
        assert_eq!(m.alignment_error_ms, Some(2.0));
        assert_eq!(
            match_line(&m, &recs).unwrap(),
            "the match starts 0.998–1.021 s into the 3 files (spread 23 ms, each offset ±2 ms)"
        );
    }

    #[test]
    fn cut_line_quotes_the_path_and_refuses_control_characters() {
        let mut rec = RecordingRecord::planned(2, 3, "x");
        rec.path = Some("/rec/it's p2.mkv".into());
        rec.match_start_offset_ms = Some(2_345);
        rec.match_end_offset_ms = Some(62_400);
        assert_eq!(
            ffmpeg_cut_line(&rec).unwrap(),
            r"ffmpeg -ss 2.345 -t 60.055 -i '/rec/it'\''s p2.mkv' -c copy '/rec/it'\''s p2.match3.mkv'"
        );
        rec.path = Some("/rec/a\nrm -rf x.mkv".into());
        assert_eq!(ffmpeg_cut_line(&rec), None);
        rec.path = Some("/rec/a.mkv".into());
        rec.match_end_offset_ms = None;
        assert_eq!(ffmpeg_cut_line(&rec), None);
    }
}
