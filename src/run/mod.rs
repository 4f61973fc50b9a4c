//! Running a study: the pieces the executor is built from.

pub mod signals;
