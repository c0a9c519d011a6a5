//! Uploads and downloads: `POST /upload` streams a multipart file to disk (never held
//! whole in memory), hashing it on the way, and schedules its removal; `GET
//! /download/{name}` streams it back with `Range`, `ETag` and `Content-Disposition`.
//!
//! A file is stored under a random name chosen by the server — the client's file name is
//! kept only as metadata (sanitised) and never used to build a path. Download names are
//! checked before any path is built: only the server's own names pass.
//!
//! The form is read by [`crate::multipart`], which bounds what it holds (part headers,
//! parts, other fields, the whole body); the upload store bounds the disk.

use actix_files::NamedFile;
use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{web, HttpRequest, HttpResponse};
use courier_actors::db::job_queue::NewJob;
use courier_actors::db_executor::EnqueueJobs;
use courier_actors::job_worker::{kind, Wake};
use courier_actors::upload_store::{
    CommitUpload, CreateUpload, OpenUpload, UploadError, UploadMeta,
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::error::{AppError, ErrorBody};
use crate::multipart::{boundary_of, Multipart, MultipartError, MultipartLimits};
use crate::routes::data::{ask, Executor};
use crate::state::AppState;

/// Longest original file name kept (characters).
pub const MAX_FILENAME_CHARS: usize = 255;

/// A stored upload, as `POST /upload` answers.
#[derive(Debug, Serialize, ToSchema)]
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

impl From<UploadMeta> for Upload {
    fn from(meta: UploadMeta) -> Self {
        Self {
            download: format!("/download/{}", meta.id),
            id: meta.id,
            filename: meta.filename,
            size: meta.size,
            sha256: meta.sha256,
            cleanup_job_id: meta.cleanup_job_id,
        }
    }
}

impl From<UploadError> for AppError {
    fn from(e: UploadError) -> Self {
        match e {
            UploadError::InvalidName(_) => AppError::BadRequest(e.to_string()),
            UploadError::NotFound => AppError::NotFound(e.to_string()),
            UploadError::TooLarge(_) => AppError::PayloadTooLarge(e.to_string()),
            UploadError::InsufficientStorage(_) => AppError::InsufficientStorage(e.to_string()),
            UploadError::Io(_) => AppError::Internal(e.to_string()),
        }
    }
}

impl From<MultipartError> for AppError {
    fn from(e: MultipartError) -> Self {
        match e {
            MultipartError::Malformed(_) | MultipartError::Incomplete(_) => {
                AppError::BadRequest(e.to_string())
            }
            MultipartError::TooLarge(_) => AppError::PayloadTooLarge(e.to_string()),
            MultipartError::TimedOut(_) => AppError::RequestTimeout(e.to_string()),
        }
    }
}

fn store_down(e: actix::MailboxError) -> AppError {
    AppError::Unavailable(format!("the upload store is unavailable: {e}"))
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

/// Stores the multipart field `file` (up to `UPLOAD_MAX_BYTES`; 413 beyond, and nothing is
/// kept). Returns its id, sanitised name, size and SHA-256; a job removes it after
/// `UPLOAD_TTL_SECS` (60 s by default).
#[utoipa::path(
    post, path = "/upload", tag = "files",
    request_body(content_type = "multipart/form-data", description = "A form with one file field named `file`"),
    responses(
        (status = 201, description = "Stored", body = Upload),
        (status = 400, description = "Not a multipart form with a `file` field", body = ErrorBody),
        (status = 408, description = "The body arrived too slowly", body = ErrorBody),
        (status = 413, description = "Larger than UPLOAD_MAX_BYTES, or a form past its limits", body = ErrorBody),
        (status = 507, description = "The uploads' disk budget is spent, or the disk is nearly full", body = ErrorBody)
    )
)]
pub async fn upload(
    req: HttpRequest,
    state: web::Data<AppState>,
    db: Executor,
    body: web::Payload,
) -> Result<HttpResponse, AppError> {
    let boundary = boundary_of(req.headers().get(header::CONTENT_TYPE))?;
    let form = &state.config.multipart;
    // Everything but the file is bounded on its own; the body may hold those and the file.
    let overhead = form.parts * (form.header_bytes + 2 * (boundary.len() + 8));
    let limits = MultipartLimits {
        header_bytes: form.header_bytes,
        parts: form.parts,
        field_bytes: form.field_bytes,
        body_bytes: state.config.files.max_bytes + (form.field_bytes + overhead) as u64,
    };
    let mut form = Multipart::new(Box::pin(body), &boundary, limits);
    while let Some(part) = form.next_part().await? {
        if part.name != "file" {
            // Other fields are read past (counted against their limit) and ignored.
            while form.next_chunk().await?.is_some() {}
            continue;
        }
        let filename = sanitise_filename(part.filename.as_deref().unwrap_or(""));
        let mut writer = state
            .uploads
            .send(CreateUpload { filename })
            .await
            .map_err(store_down)??;
        let received: Result<(), AppError> = async {
            while let Some(chunk) = form.next_chunk().await? {
                writer.write(&chunk).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = received {
            // Nothing is kept: the file is gone before the client hears why.
            writer.discard().await;
            return Err(e);
        }
        let upload = writer.finish().await?;
        let job = NewJob::new(
            kind::CLEANUP_UPLOAD,
            &json!({"stored_name": upload.id}),
            state.config.jobs.worker.max_attempts,
            state.config.files.ttl,
        );
        // Without its cleanup job the file would stay forever: refuse it.
        let cleanup_job_id = match ask(&db, EnqueueJobs { jobs: vec![job] }).await {
            Ok(ids) => ids[0],
            Err(e) => {
                upload.discard().await;
                return Err(e);
            }
        };
        let meta = state
            .uploads
            .send(CommitUpload {
                upload,
                cleanup_job_id,
            })
            .await
            .map_err(store_down)??;
        state.jobs.do_send(Wake);
        let upload = Upload::from(meta);
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
    let stored = state
        .uploads
        .send(OpenUpload {
            id: filename.into_inner(),
        })
        .await
        .map_err(store_down)??;
    let path = stored.path;
    let file = web::block(move || NamedFile::open(path))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|_| AppError::from(UploadError::NotFound))?
        .set_content_type(actix_web::mime::APPLICATION_OCTET_STREAM)
        .set_content_disposition(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(stored.meta.filename)],
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
}
