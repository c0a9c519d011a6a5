//! `UploadStore`: the owner of the uploads directory (`APP_DATA_DIR/uploads`).
//!
//! Every upload is two files: the content under a name the server made (32 hex digits,
//! never the client's file name) and its metadata next to it as `<name>.json`. Only this
//! module knows that layout. Handlers and jobs send the actor messages:
//!
//! - [`CreateUpload`] hands out an [`UploadWriter`]: the handler streams the body into it
//!   (hashed and size-checked as it arrives, never held in memory) and turns it into a
//!   [`PendingUpload`] when the body ends;
//! - [`CommitUpload`] writes the metadata, which makes the upload downloadable;
//! - [`OpenUpload`] finds an upload for a download; [`RemoveUpload`] deletes one (the
//!   cleanup job).
//!
//! An upload that is not committed (a body cut short, too large, a failed enqueue) is
//! discarded before the client is answered, and removed when its writer or pending upload
//! is dropped in any other way (the client went away mid-body). The actor also sweeps the
//! directory every [`SWEEP_INTERVAL`] for files older than `UPLOAD_TTL_SECS` plus
//! [`SWEEP_GRACE`]: the safety net for a cleanup job that ran on another node, which cannot
//! see this node's disk.
//!
//! The directory is bounded on disk: uploads together may hold at most
//! `UPLOAD_DISK_BUDGET_BYTES`, and none is accepted while the file system has less than
//! `UPLOAD_MIN_FREE_BYTES` free (the SQLite file lives on the same disk). Either refuses
//! the upload with [`UploadError::InsufficientStorage`] (507) and keeps nothing.
//!
//! File I/O runs through tokio's blocking pool (`tokio::fs`), never on the event loop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod files;

use files::DiskUse;
pub use files::{PendingUpload, UploadWriter};

/// Where uploads are stored, inside `APP_DATA_DIR`.
pub const UPLOADS_DIR: &str = "uploads";

/// How often the directory is swept for files past their time.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The sweep spares files this much past `UPLOAD_TTL_SECS`, leaving them to their cleanup job.
pub const SWEEP_GRACE: Duration = Duration::from_secs(60);

/// While an upload is written, the free space of the disk is checked again after every
/// this many bytes.
pub const FREE_SPACE_CHECK_BYTES: u64 = 8 << 20;

/// The store's settings; from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadConfig {
    /// Largest upload (`UPLOAD_MAX_BYTES`; 413 beyond).
    pub max_bytes: u64,
    /// An upload is removed this long after it arrived (`UPLOAD_TTL_SECS`).
    pub ttl: Duration,
    /// Most bytes all uploads together hold on disk (`UPLOAD_DISK_BUDGET_BYTES`; 507 beyond).
    pub disk_budget: u64,
    /// Uploads are refused while the disk has less free space than this
    /// (`UPLOAD_MIN_FREE_BYTES`; 507).
    pub min_free: u64,
}

/// What is kept about an upload, next to it as `<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadMeta {
    /// The stored name: what `/download/{id}` takes.
    pub id: String,
    /// The client's file name, already made safe to show.
    pub filename: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// The job that removes the upload.
    pub cleanup_job_id: i64,
}

/// Why an upload could not be stored or found.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The name is not one this server makes (32 lower-case hex digits).
    #[error("{0:?} is not a file name this server gave out")]
    InvalidName(String),
    /// No such upload (never stored, or removed).
    #[error("File not found")]
    NotFound,
    /// The body is larger than the limit; nothing is kept.
    #[error("the file is larger than the limit of {0} bytes")]
    TooLarge(u64),
    /// The uploads' disk budget is spent, or the disk is nearly full; nothing is kept.
    #[error("{0}")]
    InsufficientStorage(String),
    /// The disk failed.
    #[error("cannot store the upload: {0}")]
    Io(String),
}

fn io(e: std::io::Error) -> UploadError {
    UploadError::Io(e.to_string())
}

/// A stored name as the server makes them: 32 lower-case hex digits.
pub fn is_stored_name(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The metadata file of upload `id` in `dir`.
fn meta_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// An upload found by [`OpenUpload`].
#[derive(Debug)]
pub struct StoredUpload {
    /// What is known about it.
    pub meta: UploadMeta,
    /// Its content, to stream to the client.
    pub path: PathBuf,
}

/// Start receiving an upload named `filename` by the client.
#[derive(Message, Debug)]
#[rtype(result = "Result<UploadWriter, UploadError>")]
pub struct CreateUpload {
    /// The client's file name, already made safe to show.
    pub filename: String,
}

/// Keep a received upload: write its metadata, naming the job that will remove it.
#[derive(Message)]
#[rtype(result = "Result<UploadMeta, UploadError>")]
pub struct CommitUpload {
    /// The upload.
    pub upload: PendingUpload,
    /// Its cleanup job.
    pub cleanup_job_id: i64,
}

/// Find an upload by its stored name.
#[derive(Message, Debug)]
#[rtype(result = "Result<StoredUpload, UploadError>")]
pub struct OpenUpload {
    /// The stored name.
    pub id: String,
}

/// Remove an upload (metadata first, so it stops being downloadable at once). Answers
/// whether there was anything to remove.
#[derive(Message, Debug)]
#[rtype(result = "Result<bool, UploadError>")]
pub struct RemoveUpload {
    /// The stored name.
    pub id: String,
}

/// The actor; see the module documentation.
pub struct UploadStore {
    dir: PathBuf,
    config: UploadConfig,
    disk: DiskUse,
}

impl UploadStore {
    /// The uploads of `data_dir` (in [`UPLOADS_DIR`]). What the directory already holds is
    /// counted against the budget (read on a blocking thread).
    pub async fn open(data_dir: &Path, config: UploadConfig) -> Self {
        let dir = data_dir.join(UPLOADS_DIR);
        let scan = dir.clone();
        let used = tokio::task::spawn_blocking(move || bytes_in(&scan))
            .await
            .unwrap_or(0);
        Self {
            disk: DiskUse {
                used: Arc::new(AtomicU64::new(used)),
                budget: config.disk_budget,
                min_free: config.min_free,
                dir: dir.clone(),
            },
            dir,
            config,
        }
    }

    /// Bytes the uploads hold now.
    pub fn bytes_used(&self) -> u64 {
        self.disk.used.load(Ordering::Acquire)
    }
}

/// The bytes of the files in `dir`.
fn bytes_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Actor for UploadStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_INTERVAL, |this, ctx| {
            let (dir, age) = (this.dir.clone(), this.config.ttl + SWEEP_GRACE);
            let disk = this.disk.clone();
            ctx.spawn(
                async move {
                    let swept = tokio::task::spawn_blocking(move || sweep(&dir, age)).await;
                    if let Ok((n @ 1.., bytes)) = swept {
                        disk.release(bytes);
                        log::info!("uploads: swept {n} files past their time");
                    }
                }
                .into_actor(this),
            );
        });
    }
}

impl Handler<CreateUpload> for UploadStore {
    type Result = ResponseFuture<Result<UploadWriter, UploadError>>;

    fn handle(&mut self, msg: CreateUpload, _: &mut Self::Context) -> Self::Result {
        let dir = self.dir.clone();
        let (disk, limit) = (self.disk.clone(), self.config.max_bytes);
        Box::pin(async move {
            tokio::fs::create_dir_all(&dir).await.map_err(io)?;
            disk.check_free_space().await?;
            let id = format!("{:032x}", rand::random::<u128>());
            let path = dir.join(&id);
            let file = tokio::fs::File::create(&path).await.map_err(io)?;
            Ok(UploadWriter {
                id,
                filename: msg.filename,
                path: Some(path),
                file,
                hasher: Sha256::new(),
                size: 0,
                limit,
                disk,
                unchecked: 0,
            })
        })
    }
}

impl Handler<CommitUpload> for UploadStore {
    type Result = ResponseFuture<Result<UploadMeta, UploadError>>;

    fn handle(&mut self, msg: CommitUpload, _: &mut Self::Context) -> Self::Result {
        let dir = self.dir.clone();
        Box::pin(async move {
            let mut upload = msg.upload;
            let meta = UploadMeta {
                id: upload.id.clone(),
                filename: std::mem::take(&mut upload.filename),
                size: upload.size,
                sha256: std::mem::take(&mut upload.sha256),
                cleanup_job_id: msg.cleanup_job_id,
            };
            let text = serde_json::to_vec(&meta).expect("upload metadata serialises");
            let meta_bytes = text.len() as u64;
            if let Err(e) = tokio::fs::write(meta_path(&dir, &meta.id), text).await {
                upload.discard().await;
                return Err(io(e));
            }
            upload.disk.add(meta_bytes);
            upload.path = None; // kept
            Ok(meta)
        })
    }
}

impl Handler<OpenUpload> for UploadStore {
    type Result = ResponseFuture<Result<StoredUpload, UploadError>>;

    fn handle(&mut self, msg: OpenUpload, _: &mut Self::Context) -> Self::Result {
        let dir = self.dir.clone();
        Box::pin(async move {
            if !is_stored_name(&msg.id) {
                return Err(UploadError::InvalidName(msg.id));
            }
            let bytes = tokio::fs::read(meta_path(&dir, &msg.id))
                .await
                .map_err(|_| UploadError::NotFound)?;
            let meta: UploadMeta =
                serde_json::from_slice(&bytes).map_err(|_| UploadError::NotFound)?;
            Ok(StoredUpload {
                path: dir.join(&meta.id),
                meta,
            })
        })
    }
}

impl Handler<RemoveUpload> for UploadStore {
    type Result = ResponseFuture<Result<bool, UploadError>>;

    fn handle(&mut self, msg: RemoveUpload, _: &mut Self::Context) -> Self::Result {
        let dir = self.dir.clone();
        let disk = self.disk.clone();
        Box::pin(async move {
            // Only a name this server made is ever turned into a path.
            if !is_stored_name(&msg.id) {
                return Err(UploadError::InvalidName(msg.id));
            }
            // The metadata goes first: once it is gone the file cannot be downloaded.
            let mut existed = false;
            for path in [meta_path(&dir, &msg.id), dir.join(&msg.id)] {
                let size = tokio::fs::metadata(&path).await.map_or(0, |m| m.len());
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => {
                        existed = true;
                        disk.release(size);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(UploadError::Io(format!(
                            "cannot remove {}: {e}",
                            path.display()
                        )))
                    }
                }
            }
            Ok(existed)
        })
    }
}

/// Removes files in `dir` last modified more than `age` ago; returns how many, and their
/// bytes.
fn sweep(dir: &Path, age: Duration) -> (usize, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(std::fs::Metadata::is_file)?;
            let old = meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|elapsed| elapsed > age);
            (old && std::fs::remove_file(e.path()).is_ok()).then_some(meta.len())
        })
        .fold((0, 0), |(n, bytes), len| (n + 1, bytes + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_bytes: u64, disk_budget: u64) -> UploadConfig {
        UploadConfig {
            max_bytes,
            ttl: Duration::from_secs(60),
            disk_budget,
            min_free: 0,
        }
    }

    #[actix_rt::test]
    async fn uploads_together_stay_within_the_disk_budget() {
        let data = std::env::temp_dir().join(format!("courier-budget-{:x}", rand::random::<u64>()));
        let store = UploadStore::open(&data, config(100, 10)).await;
        let disk = store.disk.clone();
        let store = store.start();
        let create = || CreateUpload {
            filename: "a.txt".into(),
        };
        let mut first = store.send(create()).await.unwrap().unwrap();
        first.write(b"12345678").await.unwrap();
        let mut second = store.send(create()).await.unwrap().unwrap();
        assert!(matches!(
            second.write(b"12345").await,
            Err(UploadError::InsufficientStorage(_))
        ));
        assert_eq!(disk.used.load(Ordering::Acquire), 8);
        first.discard().await;
        assert_eq!(disk.used.load(Ordering::Acquire), 0);
        second.write(b"12345").await.unwrap();
        let kept = second.finish().await.unwrap();
        let id = kept.id.clone();
        store
            .send(CommitUpload {
                upload: kept,
                cleanup_job_id: 1,
            })
            .await
            .unwrap()
            .unwrap();
        assert!(
            disk.used.load(Ordering::Acquire) > 5,
            "content and metadata"
        );
        store.send(RemoveUpload { id }).await.unwrap().unwrap();
        assert_eq!(disk.used.load(Ordering::Acquire), 0);
        std::fs::remove_dir_all(&data).unwrap();
    }

    #[test]
    fn only_the_servers_own_names_are_accepted() {
        assert!(is_stored_name("0123456789abcdef0123456789abcdef"));
        assert!(!is_stored_name("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_stored_name("../0123456789abcdef0123456789ab"));
        assert!(!is_stored_name("0123456789abcdef0123456789abcdef.json"));
    }

    #[test]
    fn the_sweep_removes_only_old_files() {
        let dir = std::env::temp_dir().join(format!("courier-sweep-{:x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (old, new) = (dir.join("old"), dir.join("new"));
        std::fs::write(&old, b"x").unwrap();
        std::fs::write(&new, b"y").unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        assert_eq!(sweep(&dir, Duration::from_secs(120)), (1, 1));
        assert!(!old.exists());
        assert!(new.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[actix_rt::test]
    async fn an_upload_is_kept_only_once_committed_and_removed_on_request() {
        let data = std::env::temp_dir().join(format!("courier-up-{:x}", rand::random::<u64>()));
        let store = UploadStore::open(&data, config(8, 1 << 20)).await.start();
        let create = || CreateUpload {
            filename: "a.txt".into(),
        };

        let mut dropped = store.send(create()).await.unwrap().unwrap();
        dropped.write(b"abc").await.unwrap();
        let dropped_path = data.join(UPLOADS_DIR).join(&dropped.id);
        drop(dropped);

        let mut too_big = store.send(create()).await.unwrap().unwrap();
        assert!(matches!(
            too_big.write(b"123456789").await,
            Err(UploadError::TooLarge(8))
        ));
        drop(too_big);

        let mut writer = store.send(create()).await.unwrap().unwrap();
        writer.write(b"hello").await.unwrap();
        let pending = writer.finish().await.unwrap();
        let id = pending.id.clone();
        let meta = store
            .send(CommitUpload {
                upload: pending,
                cleanup_job_id: 7,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(meta.size, 5);
        assert_eq!(
            meta.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let found = store
            .send(OpenUpload { id: id.clone() })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.meta, meta);
        assert_eq!(tokio::fs::read(&found.path).await.unwrap(), b"hello");

        // The dropped upload's file is removed by a task of its own: poll for it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while dropped_path.exists() && std::time::Instant::now() < deadline {
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!dropped_path.exists());

        assert!(store
            .send(RemoveUpload { id: id.clone() })
            .await
            .unwrap()
            .unwrap());
        assert!(matches!(
            store.send(OpenUpload { id: id.clone() }).await.unwrap(),
            Err(UploadError::NotFound)
        ));
        assert!(!store.send(RemoveUpload { id }).await.unwrap().unwrap());
        assert!(matches!(
            store.send(OpenUpload { id: "../x".into() }).await.unwrap(),
            Err(UploadError::InvalidName(_))
        ));
        std::fs::remove_dir_all(&data).unwrap();
    }
}
