//! The document store behind `/documents`: a MongoDB collection through the official
//! driver when `MONGODB_URI` is set, otherwise the `documents` table of the relational
//! store (see `Database::insert_document`).
//!
//! A document is any JSON object. Its id is the string in its `_id` field when it has
//! one, otherwise a new ObjectId; reading it back returns the object with `_id` as a
//! string, on both backends.

use std::future::IntoFuture;
use std::time::Duration;

use mongodb::bson::{self, doc, oid::ObjectId, Bson, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::Collection;
use serde_json::{Map, Value};

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::models::now;
use super::queries::is_unique_violation;
use super::schema::documents as documents_table;
use super::{on_conn, Database, DbError};

/// The collection documents are kept in.
pub const COLLECTION: &str = "documents";

/// Longest accepted `_id`.
pub const MAX_ID_CHARS: usize = 128;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// Where documents live.
#[derive(Clone)]
pub enum DocumentStore {
    /// The relational store's `documents` table.
    Relational,
    /// A MongoDB collection.
    Mongo {
        /// The collection.
        collection: Collection<Document>,
        /// Deadline of one operation.
        timeout: Duration,
    },
}

impl DocumentStore {
    /// The collection `documents` in `client`'s default database (from the URI), or in
    /// `fallback_db` when the URI names none.
    pub fn mongo(client: &mongodb::Client, fallback_db: &str, timeout: Duration) -> Self {
        let db = client
            .default_database()
            .unwrap_or_else(|| client.database(fallback_db));
        Self::Mongo {
            collection: db.collection(COLLECTION),
            timeout,
        }
    }

    /// `mongodb` or `relational`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Relational => "relational",
            Self::Mongo { .. } => "mongodb",
        }
    }
}

/// Checks a document and takes its id out: `_id` must be a string of 1–128 characters
/// when present; no key at any depth may start with `$` (MongoDB reserves them).
pub fn prepare(
    mut doc: Map<String, Value>,
) -> Result<(Option<String>, Map<String, Value>), DbError> {
    fn check_keys(map: &Map<String, Value>) -> Result<(), DbError> {
        for (k, v) in map {
            if k.starts_with('$') {
                return Err(DbError::Invalid(format!(
                    "field names may not start with '$': {k:?}"
                )));
            }
            check_value(v)?;
        }
        Ok(())
    }
    fn check_value(v: &Value) -> Result<(), DbError> {
        match v {
            Value::Object(m) => check_keys(m),
            Value::Array(items) => items.iter().try_for_each(check_value),
            _ => Ok(()),
        }
    }
    let id = match doc.remove("_id") {
        None => None,
        Some(Value::String(id)) if !id.is_empty() && id.chars().count() <= MAX_ID_CHARS => Some(id),
        Some(_) => {
            return Err(DbError::Invalid(format!(
                "_id must be a string of 1 to {MAX_ID_CHARS} characters"
            )))
        }
    };
    check_keys(&doc)?;
    Ok((id, doc))
}

/// A new document id (an ObjectId in hex).
pub fn new_id() -> String {
    ObjectId::new().to_hex()
}

/// Returns the document with `_id` first.
pub fn with_id(id: &str, body: Map<String, Value>) -> Value {
    let mut out = Map::with_capacity(body.len() + 1);
    out.insert("_id".into(), Value::String(id.to_owned()));
    out.extend(body);
    Value::Object(out)
}

fn mongo_error(e: mongodb::error::Error) -> DbError {
    match *e.kind {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. } => {
            DbError::Unavailable(format!("MongoDB is unavailable: {e}"))
        }
        ErrorKind::Write(WriteFailure::WriteError(ref w)) if w.code == DUPLICATE_KEY => {
            DbError::Conflict("a document with this _id already exists".into())
        }
        ErrorKind::InsertMany(ref f)
            if f.write_errors
                .as_ref()
                .is_some_and(|w| w.iter().any(|w| w.code == DUPLICATE_KEY)) =>
        {
            DbError::Conflict("a document with this _id already exists".into())
        }
        _ => DbError::Internal(format!("MongoDB: {e}")),
    }
}

async fn bounded<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, mongodb::error::Error>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r.map_err(mongo_error),
        Err(_) => Err(DbError::Timeout(timeout)),
    }
}

/// Inserts into MongoDB; returns the id.
pub async fn mongo_insert(
    collection: &Collection<Document>,
    timeout: Duration,
    id: Option<String>,
    body: Map<String, Value>,
) -> Result<String, DbError> {
    let mut document = bson::to_document(&body)
        .map_err(|e| DbError::Invalid(format!("the document cannot be stored: {e}")))?;
    let (key, shown) = match id {
        Some(id) => (Bson::String(id.clone()), id),
        None => {
            let oid = ObjectId::new();
            (Bson::ObjectId(oid), oid.to_hex())
        }
    };
    document.insert("_id", key);
    bounded(timeout, collection.insert_one(document).into_future()).await?;
    Ok(shown)
}

/// Reads from MongoDB; the id matches an ObjectId (when it is one) or a string `_id`.
pub async fn mongo_get(
    collection: &Collection<Document>,
    timeout: Duration,
    id: &str,
) -> Result<Option<Value>, DbError> {
    if let Ok(oid) = ObjectId::parse_str(id) {
        if let Some(doc) = bounded(
            timeout,
            collection.find_one(doc! { "_id": oid }).into_future(),
        )
        .await?
        {
            return Ok(Some(to_json(id, doc)));
        }
    }
    let found = bounded(
        timeout,
        collection.find_one(doc! { "_id": id }).into_future(),
    )
    .await?;
    Ok(found.map(|doc| to_json(id, doc)))
}

fn to_json(id: &str, mut doc: Document) -> Value {
    doc.remove("_id");
    match Bson::Document(doc).into_relaxed_extjson() {
        Value::Object(map) => with_id(id, map),
        _ => with_id(id, Map::new()),
    }
}

impl Database {
    /// Stores a document; returns its id.
    pub async fn insert_document(&self, body: Map<String, Value>) -> Result<String, DbError> {
        let (id, body) = prepare(body)?;
        match self.documents() {
            DocumentStore::Mongo {
                collection,
                timeout,
            } => {
                let started = std::time::Instant::now();
                let result = mongo_insert(collection, *timeout, id, body).await;
                self.record("mongo_insert_document", started, &result);
                result
            }
            DocumentStore::Relational => {
                let id = id.unwrap_or_else(new_id);
                let text =
                    serde_json::to_string(&body).map_err(|e| DbError::Internal(e.to_string()))?;
                on_conn!(self, "insert_document", |conn| async {
                    diesel::insert_into(documents_table::table)
                        .values((
                            documents_table::id.eq(&id),
                            documents_table::body.eq(&text),
                            documents_table::created_at.eq(now()),
                        ))
                        .execute(conn)
                        .await
                        .map_err(|e| match e {
                            e if is_unique_violation(&e) => {
                                DbError::Conflict("a document with this _id already exists".into())
                            }
                            e => self.err(e),
                        })
                })?;
                Ok(id)
            }
        }
    }

    /// The document with `id`, with `_id` as a string.
    pub async fn get_document(&self, id: &str) -> Result<Option<Value>, DbError> {
        match self.documents() {
            DocumentStore::Mongo {
                collection,
                timeout,
            } => {
                let started = std::time::Instant::now();
                let result = mongo_get(collection, *timeout, id).await;
                self.record("mongo_get_document", started, &result);
                result
            }
            DocumentStore::Relational => {
                let body: Option<String> = on_conn!(self, "get_document", |conn| async {
                    documents_table::table
                        .find(id)
                        .select(documents_table::body)
                        .first::<String>(conn)
                        .await
                        .optional()
                        .map_err(|e| self.err(e))
                })?;
                body.map(|text| match serde_json::from_str(&text) {
                    Ok(Value::Object(map)) => Ok(with_id(id, map)),
                    _ => Err(DbError::Internal(format!(
                        "document {id} is not a JSON object in the store"
                    ))),
                })
                .transpose()
            }
        }
    }
}
