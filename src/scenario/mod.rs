//! Scenario files: types, loading, validation.

pub mod diag;
pub mod duration;
pub mod level;
pub mod load;
pub mod locate;
pub mod secret;
pub mod semantic;
pub mod types;

pub use diag::{Diagnostic, KeyPath, Origin, Seg, Severity};
pub use duration::Duration;
pub use level::{Level, Percent};
pub use load::{Env, LoadedScenario, Override, ProcessEnv, SecretsMode, load_file, load_str};
pub use secret::Secret;
pub use types::*;
