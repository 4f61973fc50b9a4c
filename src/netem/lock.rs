//! One oa-run per interface: an exclusive lock held while a tree is in place, so a second run
//! (or `oa-run net-reset`) does not mistake a live run's tree for a crashed run's leftover. The
//! kernel drops the lock when the holder dies, which is exactly when its tree becomes a leftover.
//!
//! The lock directory sits in a world-writable place (`/run/lock`, else the temp dir), and root
//! writes a pid into the lock file, so another local user must not be able to point that write
//! elsewhere: the directory is used only if it is a real directory owned by us (root when run as
//! root) and writable by nobody else, and lock files are opened relative to it with
//! `O_NOFOLLOW`, so a planted symlink is refused instead of followed.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};

use super::error::NetemError;

/// Held while oa-run owns the tree on one interface (in one network namespace). Dropping it
/// removes the lock file and releases the lock.
#[derive(Debug)]
pub struct InterfaceLock {
    lock: Option<Flock<File>>,
    pub path: PathBuf,
    /// Whether the file at `path` is the one we locked (then we remove it on release).
    owns_file: bool,
}

fn lock_dir() -> PathBuf {
    let run = PathBuf::from("/run/lock");
    let base = if run.is_dir() {
        run
    } else {
        std::env::temp_dir()
    };
    base.join("oa-run")
}

/// Create `dir` (0755) if missing, then make sure nobody else can put things into it: a real
/// directory (not a symlink), owned by this user, not writable by group or others.
fn safe_dir(dir: &Path) -> Result<(), NetemError> {
    let unsafe_dir = |why: String| {
        lock_err(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{why}; remove it (oa-run creates it again safely)"),
            ),
        )
    };
    match DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(lock_err(dir, e)),
    }
    let m = std::fs::symlink_metadata(dir).map_err(|e| lock_err(dir, e))?;
    if !m.file_type().is_dir() {
        return Err(unsafe_dir("it is not a directory (a symlink?)".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if m.uid() != me {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not {me}",
            m.uid()
        )));
    }
    if m.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "others may write into it (mode {:o})",
            m.mode() & 0o7777
        )));
    }
    Ok(())
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn lock_err(path: &Path, source: std::io::Error) -> NetemError {
    NetemError::Lock {
        path: path.display().to_string(),
        source,
    }
}

impl InterfaceLock {
    /// Take the lock for `interface` in `scope` (which network namespace it lives in), or say
    /// which process holds it.
    pub fn acquire(scope: &str, interface: &str) -> Result<InterfaceLock, NetemError> {
        Self::acquire_in(&lock_dir(), scope, interface)
    }

    fn acquire_in(dir: &Path, scope: &str, interface: &str) -> Result<InterfaceLock, NetemError> {
        safe_dir(dir)?;
        let path = dir.join(format!("netem-{}-{}.lock", clean(scope), clean(interface)));
        // A holder removes the file when it lets go; if that happened between our open and our
        // lock, we hold a lock on a removed file: try again on the current one (bounded).
        for _ in 0..5 {
            let mut me = Self::try_once(&path, interface)?;
            let current = std::fs::metadata(&path).ok();
            let ours = me.lock.as_ref().and_then(|l| l.metadata().ok());
            if let (Some(a), Some(b)) = (current, ours)
                && a.ino() == b.ino()
                && a.dev() == b.dev()
            {
                me.owns_file = true;
                if let Some(l) = me.lock.as_mut() {
                    // The holder's pid, for the message another run shows.
                    let _ = l.set_len(0);
                    let _ = l.rewind();
                    let _ = write!(l, "{}", std::process::id());
                }
                return Ok(me);
            }
        }
        Err(NetemError::InUse {
            interface: interface.into(),
            pid: None,
        })
    }

    fn try_once(path: &Path, interface: &str) -> Result<InterfaceLock, NetemError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            // A symlink planted in its place fails with ELOOP instead of being followed.
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(path)
            .map_err(|e| lock_err(path, e))?;
        let m = file.metadata().map_err(|e| lock_err(path, e))?;
        if !m.file_type().is_file() {
            return Err(lock_err(
                path,
                std::io::Error::other("the lock file is not a regular file"),
            ));
        }
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(InterfaceLock {
                lock: Some(lock),
                path: path.to_path_buf(),
                owns_file: false,
            }),
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut s = String::new();
                let _ = (&mut file).take(32).read_to_string(&mut s);
                Err(NetemError::InUse {
                    interface: interface.into(),
                    pid: s.trim().parse().ok(),
                })
            }
            Err((_, e)) => Err(lock_err(path, e.into())),
        }
    }
}

impl Drop for InterfaceLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock, then release it.
        if self.owns_file {
            let _ = std::fs::remove_file(&self.path);
        }
        self.lock.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let scope = format!("unit-test-{}", std::process::id());
        let a = InterfaceLock::acquire(&scope, "eth/0").unwrap();
        assert!(a.path.to_str().unwrap().ends_with("-eth_0.lock"));
        match InterfaceLock::acquire(&scope, "eth/0") {
            Err(NetemError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected InUse, got {other:?}"),
        }
        let path = a.path.clone();
        drop(a);
        assert!(!path.exists(), "the lock file goes with the lock");
        let b = InterfaceLock::acquire(&scope, "eth/0").unwrap();
        drop(b);
        assert!(!path.exists());
    }

    /// A local user plants a symlink where the lock file goes (or owns the directory): the
    /// pid write must never land on the symlink's target.
    #[test]
    fn a_planted_symlink_or_an_open_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("oa-run");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("netem-s-eth0.lock")).unwrap();
        match InterfaceLock::acquire_in(&dir, "s", "eth0") {
            Err(NetemError::Lock { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(nix::libc::ELOOP), "{source}")
            }
            other => panic!("expected a refused symlink, got {other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(dir.join("netem-s-eth0.lock").is_symlink(), "not followed");

        // A directory others may write into.
        std::fs::remove_file(dir.join("netem-s-eth0.lock")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = InterfaceLock::acquire_in(&dir, "s", "eth0").unwrap_err();
        assert!(
            e.to_string().contains("others may write")
                || format!("{e:?}").contains("others may write"),
            "{e:?}"
        );
        // The directory itself a symlink.
        let link = tmp.path().join("link");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(InterfaceLock::acquire_in(&link, "s", "eth0").is_err());
        // The safe case still works, and leaves a 0644 file only while held.
        let l = InterfaceLock::acquire_in(&dir, "s", "eth0").unwrap();
        assert_eq!(
            std::fs::metadata(&l.path).unwrap().mode() & 0o022,
            0,
            "others cannot write"
        );
        drop(l);
    }
}
