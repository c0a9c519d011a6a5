//! Documents: any JSON object, stored in MongoDB when `MONGODB_URI` is set and in the
//! relational store otherwise.

use actix_web::{web, HttpResponse};
use courier_actors::db_executor::{GetDocument, InsertDocument};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error::{AppError, ErrorBody};
use crate::routes::data::{ask, Executor};

/// The id of a stored document.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentId {
    /// The document's `_id` as a string: the `_id` it was sent with, else a new ObjectId.
    id: String,
}

/// Stores a JSON object (up to `DOCUMENTS_MAX_BYTES`). A string `_id` in it becomes its id.
#[utoipa::path(
    post, path = "/documents", tag = "data", request_body = Object,
    responses(
        (status = 201, description = "Stored", body = DocumentId),
        (status = 409, description = "A document with this _id exists", body = ErrorBody),
        (status = 413, description = "Larger than DOCUMENTS_MAX_BYTES", body = ErrorBody),
        (status = 422, description = "Not a JSON object, a bad _id, or a field name starting with $", body = ErrorBody),
        (status = 503, description = "The document store is unavailable", body = ErrorBody)
    )
)]
pub async fn create_document(
    db: Executor,
    body: web::Json<Map<String, Value>>,
) -> Result<HttpResponse, AppError> {
    let id = ask(
        &db,
        InsertDocument {
            body: body.into_inner(),
        },
    )
    .await?;
    Ok(HttpResponse::Created()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/documents/{id}"),
        ))
        .json(DocumentId { id }))
}

/// Reads a document; `_id` comes back as a string.
#[utoipa::path(
    get, path = "/documents/{id}", tag = "data",
    params(("id" = String, Path, description = "Document id")),
    responses(
        (status = 200, description = "The document", body = Object),
        (status = 404, description = "Document not found", body = ErrorBody),
        (status = 503, description = "The document store is unavailable", body = ErrorBody)
    )
)]
pub async fn get_document(
    db: Executor,
    id: web::Path<String>,
) -> Result<web::Json<Value>, AppError> {
    let id = id.into_inner();
    if id.is_empty() || id.chars().count() > courier_actors::db::documents::MAX_ID_CHARS {
        return Err(AppError::NotFound("Document not found".into()));
    }
    ask(&db, GetDocument { id })
        .await?
        .map(web::Json)
        .ok_or_else(|| AppError::NotFound("Document not found".into()))
}
