//! Running a study: the executor and the pieces it is built from.

pub mod executor;
pub mod signals;
