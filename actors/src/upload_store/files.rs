//! What an upload is while it is written: its file, its hash and its share of the disk
//! budget ([`DiskUse`]); and what happens to the file when the upload is given up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{io, UploadError, FREE_SPACE_CHECK_BYTES};

/// Removes a file now (a client told "nothing was kept" must find nothing kept).
pub(super) async fn remove_now(path: Option<PathBuf>) {
    if let Some(path) = path {
        let _ = tokio::fs::remove_file(path).await;
    }
}

/// Removes a file from a drop handler, off the event loop: for an upload given up without
/// [`UploadWriter::discard`] (a request dropped mid-body).
fn remove_later(path: PathBuf) {
    if tokio::runtime::Handle::try_current().is_ok() {
        actix_rt::spawn(async move {
            let _ = tokio::fs::remove_file(path).await;
        });
    }
}

/// The bytes the uploads directory holds, shared by the store and its writers.
#[derive(Debug, Clone)]
pub(super) struct DiskUse {
    pub(super) used: Arc<AtomicU64>,
    pub(super) budget: u64,
    pub(super) min_free: u64,
    pub(super) dir: PathBuf,
}

impl DiskUse {
    /// Counts `n` more bytes, unless that passes the budget.
    pub(super) fn reserve(&self, n: u64) -> Result<(), UploadError> {
        let before = self.used.fetch_add(n, Ordering::AcqRel);
        if before + n > self.budget {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return Err(UploadError::InsufficientStorage(format!(
                "the server's uploads hold their budget of {} bytes; try again later",
                self.budget
            )));
        }
        Ok(())
    }

    /// Counts `n` more bytes that must be kept whatever the budget (an upload's metadata).
    pub(super) fn add(&self, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives `n` bytes back.
    pub(super) fn release(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Refuses while the disk has less than `min_free` bytes free.
    pub(super) async fn check_free_space(&self) -> Result<(), UploadError> {
        let dir = self.dir.clone();
        let free = tokio::task::spawn_blocking(move || free_bytes(&dir))
            .await
            .ok()
            .flatten();
        match free {
            Some(free) if free < self.min_free => Err(UploadError::InsufficientStorage(format!(
                "the server's disk is nearly full ({free} bytes free); try again later"
            ))),
            _ => Ok(()),
        }
    }
}

/// Bytes free for an unprivileged user on the file system holding `dir`.
pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// An upload being received. Dropped before [`UploadWriter::finish`], its file is removed.
pub struct UploadWriter {
    pub(super) id: String,
    pub(super) filename: String,
    pub(super) path: Option<PathBuf>,
    pub(super) file: tokio::fs::File,
    pub(super) hasher: Sha256,
    pub(super) size: u64,
    pub(super) limit: u64,
    pub(super) disk: DiskUse,
    /// Bytes written since the free space was last checked.
    pub(super) unchecked: u64,
}

impl UploadWriter {
    /// Appends a chunk of the body: [`UploadError::TooLarge`] past `UPLOAD_MAX_BYTES`,
    /// [`UploadError::InsufficientStorage`] past the disk budget or the free-space floor.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), UploadError> {
        let n = chunk.len() as u64;
        if self.size + n > self.limit {
            return Err(UploadError::TooLarge(self.limit));
        }
        self.disk.reserve(n)?;
        self.size += n;
        self.unchecked += n;
        if self.unchecked >= FREE_SPACE_CHECK_BYTES {
            self.unchecked = 0;
            self.disk.check_free_space().await?;
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await.map_err(io)
    }

    /// The body ended: flushes the file. The upload is kept once committed.
    pub async fn finish(mut self) -> Result<PendingUpload, UploadError> {
        if let Err(e) = self.file.flush().await {
            self.discard().await;
            return Err(io(e));
        }
        let size = std::mem::take(&mut self.size);
        Ok(PendingUpload {
            id: std::mem::take(&mut self.id),
            filename: std::mem::take(&mut self.filename),
            size,
            sha256: hex::encode(std::mem::take(&mut self.hasher).finalize()),
            path: self.path.take(),
            disk: self.disk.clone(),
        })
    }
}

impl UploadWriter {
    /// Gives the upload up and removes what was written, before returning.
    pub async fn discard(mut self) {
        remove_now(self.path.take()).await;
    }
}

impl Drop for UploadWriter {
    fn drop(&mut self) {
        self.disk.release(self.size);
        if let Some(path) = self.path.take() {
            remove_later(path);
        }
    }
}

/// A received upload that is not downloadable yet. Dropped uncommitted, its file is removed.
pub struct PendingUpload {
    /// The stored name.
    pub id: String,
    pub(super) filename: String,
    pub(super) size: u64,
    pub(super) sha256: String,
    pub(super) path: Option<PathBuf>,
    pub(super) disk: DiskUse,
}

impl PendingUpload {
    /// Gives the upload up and removes its file, before returning.
    pub async fn discard(mut self) {
        if let Some(path) = self.path.take() {
            remove_now(Some(path)).await;
            self.disk.release(self.size);
        }
    }
}

impl Drop for PendingUpload {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            self.disk.release(self.size);
            remove_later(path);
        }
    }
}
