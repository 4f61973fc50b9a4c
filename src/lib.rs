//! oa-run: declarative network-latency user studies on an OpenArena server.
//!
//! A scenario (YAML) is loaded and checked ([`scenario`]), compiled into a [`plan::Plan`], and
//! the plan is either rendered (`--dry-run`) or walked by the executor.

pub mod align;
pub mod arena;
pub mod build_info;
pub mod check;
pub mod cli;
pub mod error;
pub mod live;
pub mod logging;
pub mod manifest;
pub mod measure;
pub mod netem;
pub mod obs;
pub mod plan;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schema;
pub mod table;
pub mod term;

pub use error::{Error, Result};
