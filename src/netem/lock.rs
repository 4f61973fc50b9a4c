//! One oa-run per interface: an exclusive lock held while a tree is in place, so a second run
//! (or `oa-run net-reset`) does not mistake a live run's tree for a crashed run's leftover. The
//! kernel drops the lock when the holder dies, which is exactly when its tree becomes a leftover.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

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
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).map_err(|e| lock_err(&dir, e))?;
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
            .open(path)
            .map_err(|e| lock_err(path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(InterfaceLock {
                lock: Some(lock),
                path: path.to_path_buf(),
                owns_file: false,
            }),
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut s = String::new();
                let _ = file.read_to_string(&mut s);
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
}
