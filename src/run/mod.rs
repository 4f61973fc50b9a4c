//! Running a study: the executor and the pieces it is built from.

pub mod console;
pub mod events;
pub mod executor;
pub mod hub;
pub mod questionnaire;
pub mod recover;
pub mod resume;
pub mod signals;
pub mod state;
pub mod webhooks;
