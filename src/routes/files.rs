//! Uploads and downloads: `POST /upload` streams a multipart file to disk (never held
//! whole in memory), hashing it on the way, and schedules its removal; `GET
//! /download/{name}` streams it back with `Range`, `ETag` and `Content-Disposition`.
//!
//! A file is stored under a random name chosen by the server — the client's file name is
//! kept only as metadata (sanitised) and never used to build a path. Download names are
//! checked before any path is built: only the server's own names pass.

use std::path::{Path, PathBuf};

use actix_files::NamedFile;
use actix_multipart::Multipart;
use actix_web::http::header::{ContentDisposition, DispositionParam, DispositionType};
use actix_web::{web, HttpRequest, HttpResponse};
use courier_actors::db::jobs::NewJob;
use courier_actors::job_worker::Wake;
use courier_actors::jobs::kind;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use crate::error::{AppError, ErrorBody};
use crate::routes::data::{ask, Db};
use crate::startup::UPLOADS_DIR;
use crate::state::AppState;
use courier_actors::db_executor::EnqueueJobs;

/// Longest original file name kept (characters).
pub const MAX_FILENAME_CHARS: usize = 255;

/// What is kept about an upload, next to it as `<name>.json`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Upload {
    /// The stored name: what `/download/{name}` takes.
    id: String,
    /// The client's file name, sanitised (shown in `Content-Disposition`).
    filename: String,
    /// Size in bytes.
    size: u64,
    /// SHA-256 of the content, hex.
    sha256: String,
    /// Where to fetch it.
    download: String,
    /// The job that removes it, `UPLOAD_TTL_SECS` after the upload.
    cleanup_job_id: i64,
}

fn uploads_dir(state: &AppState) -> PathBuf {
    state.config.data_dir.join(UPLOADS_DIR)
}

/// Bidirectional-text controls, which can make `evil\u{202E}fdp.exe` read as `evilexe.pdf`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The client's file name made safe to show: its last path component, without control
/// characters, bidirectional-text controls or quotes, at most 255 characters; `upload` when
/// nothing is left.
pub fn sanitise_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c) && *c != '"')
        .take(MAX_FILENAME_CHARS)
        .collect();
    let clean = clean.trim().trim_start_matches('.').to_owned();
    if clean.is_empty() {
        "upload".to_owned()
    } else {
        clean
    }
}

/// A stored name as the server makes them: 32 lower-case hex digits.
fn valid_stored_name(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Removes a partial upload.
async fn discard(path: &Path) {
    let _ = tokio::fs::remove_file(path).await;
}

/// Stores the multipart field `file` (up to `UPLOAD_MAX_BYTES`; 413 beyond, and nothing is
/// kept). Returns its id, sanitised name, size and SHA-256; a job removes it after
/// `UPLOAD_TTL_SECS` (60 s by default, as in the seed).
#[utoipa::path(
    post, path = "/upload", tag = "files",
    request_body(content_type = "multipart/form-data", description = "A form with one file field named `file`"),
    responses(
        (status = 201, description = "Stored", body = Upload),
        (status = 400, description = "Not a multipart form with a `file` field", body = ErrorBody),
        (status = 413, description = "Larger than UPLOAD_MAX_BYTES", body = ErrorBody)
    )
)]
pub async fn upload(
    state: web::Data<AppState>,
    db: Db,
    mut form: Multipart,
) -> Result<HttpResponse, AppError> {
    let limit = state.config.files.max_bytes;
    let dir = uploads_dir(&state);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| AppError::Internal(format!("cannot create {}: {e}", dir.display())))?;
    while let Some(field) = form.next().await {
        let mut field =
            field.map_err(|e| AppError::BadRequest(format!("malformed multipart body: {e}")))?;
        if field.name() != Some("file") {
            // Other form fields are read past and ignored.
            while let Some(chunk) = field.next().await {
                chunk
                    .map_err(|e| AppError::BadRequest(format!("malformed multipart body: {e}")))?;
            }
            continue;
        }
        let original = sanitise_filename(
            field
                .content_disposition()
                .and_then(|cd| cd.get_filename())
                .unwrap_or(""),
        );
        let id = format!("{:032x}", rand::random::<u128>());
        let path = dir.join(&id);
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| AppError::Internal(format!("cannot store the upload: {e}")))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = field.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    discard(&path).await;
                    return Err(AppError::BadRequest(format!(
                        "the upload was cut short: {e}"
                    )));
                }
            };
            size += chunk.len() as u64;
            if size > limit {
                drop(file);
                discard(&path).await;
                return Err(AppError::PayloadTooLarge(format!(
                    "the file is larger than the limit of {limit} bytes"
                )));
            }
            hasher.update(&chunk);
            if let Err(e) = file.write_all(&chunk).await {
                discard(&path).await;
                return Err(AppError::Internal(format!("cannot store the upload: {e}")));
            }
        }
        if let Err(e) = file.flush().await {
            discard(&path).await;
            return Err(AppError::Internal(format!("cannot store the upload: {e}")));
        }
        let job = NewJob::new(
            kind::CLEANUP_UPLOAD,
            &json!({"stored_name": id}),
            state.config.jobs.worker.max_attempts,
            state.config.files.ttl,
        );
        let cleanup_job_id = match ask(&db, EnqueueJobs { jobs: vec![job] }).await {
            Ok(ids) => ids[0],
            Err(e) => {
                // Without its cleanup job the file would stay forever: refuse it.
                discard(&path).await;
                return Err(e);
            }
        };
        let upload = Upload {
            download: format!("/download/{id}"),
            id,
            filename: original,
            size,
            sha256: hex::encode(hasher.finalize()),
            cleanup_job_id,
        };
        let meta = serde_json::to_vec(&upload).unwrap_or_default();
        if let Err(e) = tokio::fs::write(dir.join(format!("{}.json", upload.id)), meta).await {
            discard(&path).await;
            return Err(AppError::Internal(format!("cannot store the upload: {e}")));
        }
        state.jobs.do_send(Wake);
        return Ok(HttpResponse::Created()
            .insert_header(("Location", upload.download.clone()))
            .json(upload));
    }
    Err(AppError::BadRequest(
        "expected a multipart/form-data body with a file field named `file`".into(),
    ))
}

/// Streams a stored upload: `Range` requests (206, 416), `ETag`/`Last-Modified` with
/// conditional requests (304), and `Content-Disposition: attachment` with the original
/// name. A name that is not one the server made — `..`, slashes, encoded separators,
/// absolute paths — is 400; an unknown or removed file is 404.
#[utoipa::path(
    get, path = "/download/{filename}", tag = "files",
    params(("filename" = String, Path, description = "The id returned by /upload")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream"),
        (status = 206, description = "The requested range"),
        (status = 400, description = "Not a valid file name", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody)
    )
)]
pub async fn download(
    req: HttpRequest,
    state: web::Data<AppState>,
    filename: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let name = filename.into_inner();
    if !valid_stored_name(&name) {
        return Err(AppError::BadRequest(format!(
            "{name:?} is not a file name this server gave out"
        )));
    }
    let dir = uploads_dir(&state);
    let not_found = || AppError::NotFound("File not found".into());
    let meta: Upload = match tokio::fs::read(dir.join(format!("{name}.json"))).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|_| not_found())?,
        Err(_) => return Err(not_found()),
    };
    let path = dir.join(&name);
    let file = web::block(move || NamedFile::open(path))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|_| not_found())?
        .set_content_type(actix_web::mime::APPLICATION_OCTET_STREAM)
        .set_content_disposition(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(meta.filename)],
        });
    Ok(file.into_response(&req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_file_names_are_made_safe() {
        assert_eq!(sanitise_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitise_filename("C:\\Users\\me\\cv.pdf"), "cv.pdf");
        assert_eq!(sanitise_filename("a\u{7}b\"c\n.txt"), "abc.txt");
        assert_eq!(sanitise_filename(".bashrc"), "bashrc");
        assert_eq!(sanitise_filename("evil\u{202E}fdp.exe"), "evilfdp.exe");
        assert_eq!(sanitise_filename(".."), "upload");
        assert_eq!(sanitise_filename(""), "upload");
        assert_eq!(
            sanitise_filename(&"x".repeat(300)).len(),
            MAX_FILENAME_CHARS
        );
    }

    #[test]
    fn only_the_servers_own_names_are_served() {
        assert!(valid_stored_name("0123456789abcdef0123456789abcdef"));
        assert!(!valid_stored_name("0123456789ABCDEF0123456789abcdef"));
        assert!(!valid_stored_name("../0123456789abcdef0123456789ab"));
        assert!(!valid_stored_name("0123456789abcdef0123456789abcdef.json"));
    }
}
