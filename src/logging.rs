//! Structured logs (tracing) to stderr, printed above the progress bars when stderr is a
//! terminal, and copied to the run directory's `oa-run.log` once a run has one.

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use indicatif::MultiProgress;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The bars' owner, only when stderr is an attended terminal (else plain log lines).
static BARS: OnceLock<MultiProgress> = OnceLock::new();
/// The run's log file, once the run directory exists.
static LOG_FILE: Mutex<Option<File>> = Mutex::new(None);

/// Whether stderr may carry ANSI colours and bars (a terminal, and NO_COLOR unset).
pub fn stderr_is_rich() -> bool {
    std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// The progress-bar container when bars are shown.
pub fn bars() -> Option<&'static MultiProgress> {
    BARS.get()
}

/// Install the global subscriber. `verbose`: 0 info, 1 debug, 2+ trace; `quiet`: warnings only.
/// `OA_RUN_LOG` (an EnvFilter) overrides both.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let rich = stderr_is_rich();
    if rich {
        let _ = BARS.set(MultiProgress::new());
    }
    let filter = || EnvFilter::try_from_env("OA_RUN_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let stderr_layer = tracing_subscriber::fmt::layer()
        .fmt_fields(escaped_fields())
        .with_writer(StderrAboveBars)
        .with_ansi(rich)
        .with_target(false)
        .with_filter(filter());
    // The file always gets debug detail: it is what a researcher sends when a run went wrong.
    let file_layer = tracing_subscriber::fmt::layer()
        .fmt_fields(escaped_fields())
        .with_writer(RunLogFile)
        .with_ansi(false)
        .with_filter(EnvFilter::new("oa_run=debug,info"));
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
}

use tracing_subscriber::Layer as _;

/// Every field and message of a log line through [`crate::term::escape`]: names, paths,
/// versions and errors from peers end up in log lines, and none may carry a newline (a forged
/// line) or an escape sequence to the terminal.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt as _;
    tracing_subscriber::fmt::format::debug_fn(|w, field, value| {
        let text = format!("{value:?}");
        let text = crate::term::escape(&text);
        if field.name() == "message" {
            write!(w, "{text}")
        } else {
            write!(w, "{}={text}", field.name())
        }
    })
    .delimited(" ")
}

/// Start copying logs into `path` (the run directory's `oa-run.log`).
pub fn attach_file(path: &Path) -> io::Result<()> {
    // Participants' names and IPs appear in it.
    let f = {
        use std::os::unix::fs::OpenOptionsExt as _;
        File::options()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?
    };
    *LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    Ok(())
}

/// Stop copying logs to the run's file (flushes it).
pub fn detach_file() {
    if let Some(mut f) = LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = f.flush();
        let _ = f.sync_all();
    }
}

/// One line to the terminal only (above the bars), never to the run's log file: for what
/// must not be kept there, such as the questionnaire links with their tokens.
pub fn terminal_only(line: &str) {
    let _ = StderrAboveBars.write_all(format!("{line}\n").as_bytes());
}

#[derive(Clone, Copy)]
struct StderrAboveBars;

impl Write for StderrAboveBars {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match BARS.get() {
            // Hide the bars while the line is printed, so lines scroll above them.
            Some(m) => m.suspend(|| io::stderr().write_all(buf))?,
            None => io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for StderrAboveBars {
    type Writer = StderrAboveBars;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[derive(Clone, Copy)]
struct RunLogFile;

impl Write for RunLogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            f.write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RunLogFile {
    type Writer = RunLogFile;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_peers_text_cannot_forge_a_log_line_or_reach_the_terminal() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .fmt_fields(escaped_fields())
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        let name = "Eve\n2026-01-01T00:00:00Z  INFO match exit\u{1b}[2J";
        tracing::subscriber::with_default(sub, || {
            tracing::info!(name = %name, path = "a\rb", "player {name} joined");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.contains('\u{1b}') && !out.contains('\r'));
        assert!(out.contains("player Eve\\n2026"), "{out}");
        assert!(out.contains("name=Eve\\n2026"), "{out}");
    }
}
