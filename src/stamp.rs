//! What a file looked like when it was read, to tell when it changed: its modification time,
//! size, inode and device. Editors and config management replace files by renaming a new one
//! into place, and Kubernetes swaps a ConfigMap's symlinks: a new inode says so even when the
//! time and size happen to match. The path is followed, as reading it is.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// A file's identity and version, as far as `stat` tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    modified: Option<SystemTime>,
    size: u64,
    inode: u64,
    device: u64,
}

impl Stamp {
    /// The stamp of the file at `path` now; `None` when it cannot be read.
    pub fn of(path: &Path) -> Option<Stamp> {
        std::fs::metadata(path).ok().map(|m: Metadata| Stamp {
            modified: m.modified().ok(),
            size: m.len(),
            inode: m.ino(),
            device: m.dev(),
        })
    }
}
