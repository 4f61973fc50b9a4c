//! The run directory and the atomic manifest writer.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{
    LOG_FILE, MANIFEST_FILE, Manifest, ManifestError, SERVER_STDERR_FILE, TEMP_FILE, Timestamp,
};

// ------------------------------------------------------------------------------------------
// The run directory
// ------------------------------------------------------------------------------------------

/// `<output.dir>/<scenario name>-<UTC start, YYYYmmddTHHMMSSZ>/`: manifest, oa-run's log, the
/// server's stderr.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    started: Timestamp,
}

impl RunDir {
    /// Create a fresh run directory (parents as needed). Fails if it already exists: a run
    /// never writes into another run's directory.
    pub fn create(
        output_dir: &Path,
        scenario_name: &str,
        started: Timestamp,
    ) -> Result<RunDir, ManifestError> {
        let name = format!("{scenario_name}-{}", started.compact());
        // The scenario name is checked by the schema; this keeps the directory inside
        // output.dir whatever reaches here.
        if crate::plan::names::check_file_name(&name).is_err() || name.contains(['/', '\\']) {
            return Err(ManifestError::BadName(scenario_name.to_string()));
        }
        std::fs::create_dir_all(output_dir).map_err(|e| ManifestError::CreateRunDir {
            path: output_dir.to_path_buf(),
            source: e,
        })?;
        let path = std::path::absolute(output_dir.join(&name)).map_err(|e| {
            ManifestError::CreateRunDir {
                path: output_dir.join(&name),
                source: e,
            }
        })?;
        // Participants' IPs and names live here: only oa-run's user may look in.
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => Ok(RunDir { path, started }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(ManifestError::RunDirExists(path))
            }
            Err(e) => Err(ManifestError::CreateRunDir { path, source: e }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The run's start time (the one in the directory name).
    pub fn started(&self) -> Timestamp {
        self.started
    }
    pub fn manifest_path(&self) -> PathBuf {
        self.path.join(MANIFEST_FILE)
    }
    pub fn log_path(&self) -> PathBuf {
        self.path.join(LOG_FILE)
    }
    pub fn server_stderr_path(&self) -> PathBuf {
        self.path.join(SERVER_STDERR_FILE)
    }

    /// oa-run's log file, opened for appending (hand it to a tracing writer).
    pub fn open_log(&self) -> Result<File, ManifestError> {
        let path = self.log_path();
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| ManifestError::OpenLog { path, source })
    }

    /// A fresh file for the launched server's stderr (pass it as the child's stderr).
    pub fn create_server_stderr(&self) -> Result<File, ManifestError> {
        let path = self.server_stderr_path();
        OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| ManifestError::OpenLog { path, source })
    }
}

// ------------------------------------------------------------------------------------------
// The atomic writer
// ------------------------------------------------------------------------------------------

/// Writes `manifest.json` in a run directory, atomically, every time it is asked to.
#[derive(Debug)]
pub struct ManifestWriter {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
}

impl ManifestWriter {
    /// Start the manifest of a run: writes it at once (normally with status `running`).
    /// Fails if the directory already holds a manifest.
    pub fn create(run_dir: &Path, manifest: &mut Manifest) -> Result<Self, ManifestError> {
        let w = ManifestWriter {
            dir: run_dir.to_path_buf(),
            path: run_dir.join(MANIFEST_FILE),
            tmp: run_dir.join(TEMP_FILE),
        };
        if w.path.exists() {
            return Err(ManifestError::ManifestExists(w.path));
        }
        w.write(manifest)?;
        Ok(w)
    }

    /// A writer for a run directory whose manifest already exists (the forced-exit hook's last
    /// word on a run). Writes are still atomic; the caller must be the only writer.
    pub fn reopen(run_dir: &Path) -> Self {
        ManifestWriter {
            dir: run_dir.to_path_buf(),
            path: run_dir.join(MANIFEST_FILE),
            tmp: run_dir.join(TEMP_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replace manifest.json with `manifest` (setting its `last_written_at`). After an error
    /// the previous file is still there, complete.
    pub fn write(&self, manifest: &mut Manifest) -> Result<(), ManifestError> {
        manifest.last_written_at = Timestamp::now();
        let mut bytes = serde_json::to_vec_pretty(manifest)?;
        bytes.push(b'\n');
        self.stage(&bytes)?;
        self.commit()
    }

    /// Write and fsync the temp file. A crash after this leaves manifest.json untouched.
    pub(super) fn stage(&self, bytes: &[u8]) -> Result<(), ManifestError> {
        let res = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&self.tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        res.map_err(|e| {
            let _ = std::fs::remove_file(&self.tmp);
            self.write_error(e)
        })
    }

    /// Rename the temp file over manifest.json, then fsync the directory so the rename itself
    /// survives a power cut.
    pub(super) fn commit(&self) -> Result<(), ManifestError> {
        if let Err(e) = std::fs::rename(&self.tmp, &self.path) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(self.write_error(e));
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.write_error(e))
    }

    fn write_error(&self, source: std::io::Error) -> ManifestError {
        ManifestError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

/// Read a manifest back (tests, `runs show`).
pub fn read(path: &Path) -> Result<Manifest, crate::Error> {
    let bytes = std::fs::read(path).map_err(|e| crate::Error::Io {
        what: format!("cannot read {}", path.display()),
        source: e,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| crate::Error::Io {
        what: format!("{} is not a valid manifest", path.display()),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}
