//! oa-run's own build identity: the version and the git commit it was built from, recorded by
//! `build.rs` (empty when built without git or outside a checkout, e.g. from a source export).

use std::sync::OnceLock;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The full commit hash oa-run was built from, when known.
pub fn commit() -> Option<&'static str> {
    let c = env!("OA_RUN_GIT_COMMIT");
    (!c.is_empty()).then_some(c)
}

/// Whether tracked files differed from that commit at build time, when known.
pub fn dirty() -> Option<bool> {
    match env!("OA_RUN_GIT_DIRTY") {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// `0.1.0 (commit 1a2b3c4d5e6f, dirty)`, or `0.1.0 (commit unknown)`; for `--version` and
/// reports.
pub fn describe() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| describe_parts(VERSION, commit(), dirty()))
}

pub(crate) fn describe_parts(version: &str, commit: Option<&str>, dirty: Option<bool>) -> String {
    match commit {
        Some(c) => format!(
            "{version} (commit {}{})",
            c.get(..12).unwrap_or(c),
            if dirty == Some(true) { ", dirty" } else { "" }
        ),
        None => format!("{version} (commit unknown)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_known_and_unknown_commits() {
        let c = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            describe_parts("1.2.3", Some(c), Some(true)),
            "1.2.3 (commit 0123456789ab, dirty)"
        );
        assert_eq!(
            describe_parts("1.2.3", Some(c), Some(false)),
            "1.2.3 (commit 0123456789ab)"
        );
        assert_eq!(
            describe_parts("1.2.3", None, None),
            "1.2.3 (commit unknown)"
        );
    }
}
