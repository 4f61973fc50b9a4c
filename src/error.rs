//! Typed errors and the one exit-code table (documented in the README).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::scenario::Diagnostic;

/// Exit codes (sysexits.h where one fits).
pub mod exit {
    /// The study (or command) completed.
    pub const OK: u8 = 0;
    /// The run started but failed (a step failed, on_failure=abort, a peer broke mid-run).
    pub const RUN_FAILED: u8 = 1;
    /// Bad command line.
    pub const USAGE: u8 = 2;
    /// The scenario, or a manifest given to `report`, is invalid (EX_DATAERR).
    pub const INVALID_SCENARIO: u8 = 65;
    /// A named input file does not exist (EX_NOINPUT).
    pub const NOT_FOUND: u8 = 66;
    /// A peer (server, OBS, tc) is unreachable or unusable (EX_UNAVAILABLE).
    pub const UNAVAILABLE: u8 = 69;
    /// A bug in oa-run (EX_SOFTWARE).
    pub const INTERNAL: u8 = 70;
    /// The manifest, a log or the run directory could not be written (EX_IOERR).
    pub const OUTPUT: u8 = 74;
    /// Not permitted (e.g. tc without root / CAP_NET_ADMIN) (EX_NOPERM).
    pub const NO_PERMISSION: u8 = 77;
    /// Interrupted by Ctrl-C or SIGTERM (after cleanup).
    pub const INTERRUPTED: u8 = 130;

    /// (code, meaning) for `--help` and the README.
    pub const TABLE: &[(u8, &str)] = &[
        (OK, "success"),
        (
            RUN_FAILED,
            "the study ran but failed (see the manifest's status)",
        ),
        (USAGE, "bad command line"),
        (
            INVALID_SCENARIO,
            "the scenario is invalid (nothing was started), or a manifest given to `report` cannot be read as this version's format",
        ),
        (NOT_FOUND, "a named file does not exist"),
        (
            UNAVAILABLE,
            "a peer (server, OBS, tc) is unreachable or unusable",
        ),
        (INTERNAL, "internal error (a bug in oa-run)"),
        (OUTPUT, "the run directory or manifest could not be written"),
        (
            NO_PERMISSION,
            "not permitted (tc needs root or CAP_NET_ADMIN)",
        ),
        (INTERRUPTED, "interrupted (Ctrl-C / SIGTERM); cleanup ran"),
    ];
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("the scenario has {} problem{}", count_errors(.0), if count_errors(.0) == 1 { "" } else { "s" })]
    InvalidScenario(Vec<Diagnostic>),
    /// A manifest that is not one, or of a format version this oa-run does not read.
    #[error("{0}")]
    InvalidManifest(String),
    #[error("{}: no such file", .0.display())]
    NotFound(PathBuf),
    #[error("{0}")]
    Unavailable(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Output(String),
    #[error("{0}")]
    NoPermission(String),
    #[error("{0}")]
    RunFailed(String),
    #[error("interrupted")]
    Interrupted,
    #[error("internal error: {0}")]
    Internal(String),
}

fn count_errors(d: &[Diagnostic]) -> usize {
    d.iter()
        .filter(|d| d.severity == crate::scenario::Severity::Error)
        .count()
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::InvalidScenario(_) | Error::InvalidManifest(_) => exit::INVALID_SCENARIO,
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::Unavailable(_) => exit::UNAVAILABLE,
            Error::Io { .. } | Error::Output(_) => exit::OUTPUT,
            Error::NoPermission(_) => exit::NO_PERMISSION,
            Error::RunFailed(_) => exit::RUN_FAILED,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Internal(_) => exit::INTERNAL,
        }
    }
}

impl From<&Error> for ExitCode {
    fn from(e: &Error) -> Self {
        ExitCode::from(e.exit_code())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
