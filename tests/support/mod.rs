//! Shared test helpers. Include with `mod support;` from an integration test file.
#![allow(dead_code)]

pub mod live;
pub mod webdriver;

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;

/// Whether we run under CI (`CI=true`): there, a missing real peer is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skip a test that needs a real peer which is missing: prints the reason on a developer's
/// machine, panics under CI. Use as `if let Some(why) = missing(...) { return skip(&why); }`.
pub fn skip(reason: &str) {
    if in_ci() {
        panic!("required test peer missing under CI=true: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// `Some(reason)` when a program is not installed.
pub fn missing_program(path: &str) -> Option<String> {
    let found = if path.contains('/') {
        std::path::Path::new(path).exists()
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(path).exists()))
            .unwrap_or(false)
    };
    (!found).then(|| format!("{path} is not installed (run .ci/run or see README)"))
}

/// `Some(reason)` when not root (namespaces, tc).
pub fn missing_root() -> Option<String> {
    (!nix::unistd::geteuid().is_root()).then(|| "needs root (network namespaces / tc)".to_string())
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port that was free a moment ago on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The oa-run binary built for this test run.
pub fn oa_run() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_oa-run"))
}

/// A short unique suffix for namespace and interface names (kernel limit: 15 chars).
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{:x}{:x}",
        std::process::id() % 0xffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Live processes (zombies excluded) whose command line contains `needle`: how tests prove that
/// nothing they started is left running.
pub fn pids_with_cmdline(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                        String::from_utf8_lossy(&c)
                            .replace('\0', " ")
                            .contains(needle)
                    }) && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| !s.contains(") Z "))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Compare `got` with `tests/golden/<dir>/<name>` exactly; `UPDATE_GOLDEN=1` rewrites it
/// (review the diff!).
pub fn assert_golden(dir: &str, name: &str, got: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(dir)
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if want != got {
        let first = want
            .lines()
            .zip(got.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(got.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}:\n  want: {:?}\n  got:  {:?}",
            first + 1,
            want.lines().nth(first),
            got.lines().nth(first)
        );
    }
}

/// A temporary directory others may pass through (0711), as an `output.dir` normally is: a
/// launched server runs as `nobody` under root and must reach its home in the run directory.
#[allow(dead_code)]
pub fn passable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    d
}
