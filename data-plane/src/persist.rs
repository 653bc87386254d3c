//! The last snapshot on disk, so that a sidecar started while the control plane is away still
//! answers. Written atomically (a temporary file, flushed, then renamed over the old one), so a
//! crash mid-write leaves the previous snapshot intact.

use std::{
    io::{BufWriter, IntoInnerError},
    path::{Path, PathBuf},
};

use waypost_model::WatchEvent;

/// Bytes gathered before each write to the snapshot file.
const WRITE_BUFFER: usize = 64 * 1024;

/// The snapshot file in a data directory.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    path: PathBuf,
}

impl SnapshotFile {
    /// `dir/snapshot.json`; the directory is created when missing.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            path: dir.join("snapshot.json"),
        })
    }

    /// The saved snapshot, if there is a readable one. An unreadable file is logged and
    /// ignored: the control plane's next snapshot replaces it.
    pub fn load(&self) -> Option<WatchEvent> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => {
                tracing::warn!(path = %self.path.display(), %err, "cannot read the saved snapshot");
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(event @ WatchEvent::Snapshot { .. }) => Some(event),
            Ok(_) => None,
            Err(err) => {
                tracing::warn!(path = %self.path.display(), %err, "ignoring an unreadable saved snapshot");
                None
            }
        }
    }

    /// Replaces the saved snapshot (blocking: call from a blocking task).
    pub fn save(&self, snapshot: &WatchEvent) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        // serde_json writes token by token: straight to the file, a snapshot of a few thousand
        // instances took some 300,000 write(2) calls, and ten sidecars on one host spent most
        // of two cores in the kernel saving them.
        let file = std::fs::File::create(&tmp)?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        serde_json::to_writer(&mut out, snapshot)?;
        // Writes what is left in the buffer; the file is then synced before the rename.
        let file = out.into_inner().map_err(IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}
