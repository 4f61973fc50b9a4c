//! Typed errors of the server layer, each with a sentence a researcher can act on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while launching, attaching to or driving the server.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    #[error(
        "the server at {server} refused the rcon password (`Bad rconpassword.`); check server.rcon_password"
    )]
    BadPassword { server: SocketAddr },

    #[error(
        "the server at {server} has no rcon password set, so it refuses all rcon commands; set `rconpassword` in its config"
    )]
    NoPasswordSet { server: SocketAddr },

    #[error(
        "no reply from the server at {server} to `{command}` after {attempts} attempt(s); is it running at that address?"
    )]
    NoReply {
        server: SocketAddr,
        /// The command without arguments that could be sensitive (never the password).
        command: String,
        attempts: u32,
    },

    #[error(
        "nothing is listening at {server} (the port is closed); is the server running at that address?"
    )]
    Refused { server: SocketAddr },

    #[error("rcon socket error talking to {server}: {source}")]
    Socket {
        server: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    #[error("the server rejected `{command}`: {reply}")]
    CommandFailed { command: String, reply: String },

    #[error("invalid {what}: {detail}")]
    InvalidArgument { what: &'static str, detail: String },

    #[error("cannot start the server program {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the server was asked to listen on port {asked} but bound {bound} (the port was busy; another server may be running there); it was stopped"
    )]
    PortMoved { asked: u16, bound: String },

    #[error("the server could not open a UDP socket on {address}; see {}", stderr.display())]
    BindFailed { address: String, stderr: PathBuf },

    #[error("the server exited during {during} ({status}); last output:\n{tail}")]
    ServerExited {
        during: &'static str,
        status: String,
        tail: String,
    },

    #[error("timed out after {:.1} s waiting for {what}", after.as_secs_f64())]
    Timeout { what: String, after: Duration },

    #[error("{what} {}: {source}", path.display())]
    Files {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("slot {slot} {problem}")]
    Slot { slot: u8, problem: String },

    #[error("the game log watcher stopped; the server's state is unknown")]
    MonitorGone,

    #[error("{0}")]
    Unexpected(String),
}

impl ArenaError {
    pub(crate) fn timeout(what: impl Into<String>, after: Duration) -> Self {
        ArenaError::Timeout {
            what: what.into(),
            after,
        }
    }
}

impl From<ArenaError> for crate::Error {
    fn from(e: ArenaError) -> Self {
        let msg = e.to_string();
        match e {
            // The peer is unreachable, misconfigured or refuses us.
            ArenaError::BadPassword { .. }
            | ArenaError::NoPasswordSet { .. }
            | ArenaError::NoReply { .. }
            | ArenaError::Refused { .. }
            | ArenaError::Socket { .. }
            | ArenaError::Spawn { .. }
            | ArenaError::PortMoved { .. }
            | ArenaError::BindFailed { .. } => crate::Error::Unavailable(msg),
            ArenaError::Files { what, path, source } => crate::Error::Io {
                what: format!("{what} {}", path.display()),
                source,
            },
            // A validated scenario never produces these; reaching one is a bug.
            ArenaError::InvalidArgument { .. } => crate::Error::Internal(msg),
            ArenaError::ServerExited { .. }
            | ArenaError::Timeout { .. }
            | ArenaError::CommandFailed { .. }
            | ArenaError::Slot { .. }
            | ArenaError::MonitorGone
            | ArenaError::Unexpected(_) => crate::Error::RunFailed(msg),
        }
    }
}

pub type Result<T, E = ArenaError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit;

    #[test]
    fn maps_to_exit_codes() {
        let server: SocketAddr = "127.0.0.1:27960".parse().unwrap();
        let e: crate::Error = ArenaError::BadPassword { server }.into();
        assert_eq!(e.exit_code(), exit::UNAVAILABLE);
        assert!(e.to_string().contains("rcon password"));
        let e: crate::Error =
            ArenaError::timeout("the match to start", Duration::from_secs(3)).into();
        assert_eq!(e.exit_code(), exit::RUN_FAILED);
        let e: crate::Error = ArenaError::Files {
            what: "cannot create",
            path: "/x".into(),
            source: std::io::Error::other("boom"),
        }
        .into();
        assert_eq!(e.exit_code(), exit::OUTPUT);
    }
}
