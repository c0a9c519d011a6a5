//! The data endpoints: users (create, read, keyset listing, batch, the raw
//! `/users-fast` path), orders and the dashboard, posts with comments, and the `data`
//! table. Each handler validates its input, sends the worker's `DbExecutor` one message
//! and renders the reply.

use actix::{Addr, Handler, Message};
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use courier_actors::db::models::{
    self, Dashboard, DataItem, NewComment, NewData, NewOrder, NewPost, NewUser, Order, Page, Post,
    PostWithRelations, User,
};
use courier_actors::db::DbError;
use courier_actors::db_executor::{
    CreateComment, CreateData, CreateOrder, CreatePost, CreateUser, CreateUsers, DbExecutor,
    GetDashboard, GetPost, GetUser, GetUserJson, ListData, ListUsers,
};
use courier_actors::protocol::compact_data;
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::error::{AppError, ErrorBody};
use crate::state::AppState;

/// The worker's `DbExecutor` (one per HTTP worker thread), as handlers take it.
pub type Executor = web::Data<Addr<DbExecutor>>;

/// Rows per page when `limit` is not given.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// Most rows one page may hold.
pub const MAX_PAGE_SIZE: i64 = 1000;
/// Longest name, title and product (characters), as the schema's VARCHAR(255).
pub const MAX_TEXT_CHARS: usize = 255;
/// Longest email address (RFC 5321 allows 254 octets).
pub const MAX_EMAIL_CHARS: usize = 254;

/// Sends `msg` to the executor and maps both failures to the error a client sees.
pub async fn ask<M, T>(db: &Addr<DbExecutor>, msg: M) -> Result<T, AppError>
where
    M: Message<Result = Result<T, DbError>> + Send + 'static,
    T: Send + 'static,
    DbExecutor: Handler<M>,
{
    db.send(msg)
        .await
        .map_err(|e| AppError::Unavailable(format!("the database executor is unavailable: {e}")))?
        .map_err(AppError::from)
}

fn created(location: String, body: &impl serde::Serialize) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .json(body)
}

/// Checks a required text field: 1–`max` characters, not only whitespace, no NUL.
fn text(field: &str, value: String, max: usize) -> Result<String, AppError> {
    let chars = value.chars().count();
    if chars == 0 || value.trim().is_empty() {
        return Err(AppError::Unprocessable(format!(
            "{field} must not be empty"
        )));
    }
    if chars > max {
        return Err(AppError::Unprocessable(format!(
            "{field} is {chars} characters; at most {max} are allowed"
        )));
    }
    if value.contains('\0') {
        return Err(AppError::Unprocessable(format!(
            "{field} must not contain NUL characters"
        )));
    }
    Ok(value)
}

fn positive_id(field: &str, id: i64) -> Result<i64, AppError> {
    if id < 1 {
        return Err(AppError::Unprocessable(format!(
            "{field} must be a positive id"
        )));
    }
    Ok(id)
}

/// Keyset paging parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Rows per page, 1–1000 (default 50).
    limit: Option<i64>,
    /// Only rows with ids above this (the previous page's `next_after`); default 0.
    after: Option<i64>,
}

/// A page's `limit`: 1–`MAX_PAGE_SIZE`, `DEFAULT_PAGE_SIZE` when absent.
pub fn page_limit(limit: Option<i64>) -> Result<i64, AppError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(AppError::Unprocessable(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    Ok(limit)
}

/// Whether `email` is a valid address of at most `MAX_EMAIL_CHARS` characters.
pub fn is_email(email: &str) -> bool {
    email.chars().count() <= MAX_EMAIL_CHARS && email_address::EmailAddress::is_valid(email)
}

impl PageQuery {
    fn bounds(&self) -> Result<(i64, i64), AppError> {
        let limit = page_limit(self.limit)?;
        let after = self.after.unwrap_or(0);
        if after < 0 {
            return Err(AppError::Unprocessable("after must not be negative".into()));
        }
        Ok((after, limit))
    }
}

/// A user to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCreate {
    /// 1–255 characters.
    name: String,
    /// A valid address; stored lower-cased and unique.
    email: String,
}

impl UserCreate {
    fn validate(self) -> Result<NewUser, AppError> {
        let name = text("name", self.name, MAX_TEXT_CHARS)?;
        let email = self.email;
        if email.trim() != email || !is_email(&email) {
            return Err(AppError::Unprocessable(format!(
                "email {email:?} is not a valid address"
            )));
        }
        Ok(NewUser {
            name,
            email: email.to_lowercase(),
            created_at: models::now(),
        })
    }
}

/// Creates a user.
#[utoipa::path(
    post, path = "/users", tag = "data", request_body = UserCreate,
    responses(
        (status = 201, description = "Created; Location names the user", body = User),
        (status = 409, description = "The email is in use", body = ErrorBody),
        (status = 422, description = "Invalid name or email", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
        (status = 504, description = "The statement timed out", body = ErrorBody)
    )
)]
pub async fn create_user(
    db: Executor,
    body: web::Json<UserCreate>,
) -> Result<HttpResponse, AppError> {
    let user = body.into_inner().validate()?;
    let user = ask(&db, CreateUser { user }).await?;
    Ok(created(format!("/users/{}", user.id), &user))
}

/// Creates up to `USERS_BATCH_MAX` users in one transaction: all of them or none.
#[utoipa::path(
    post, path = "/users/batch", tag = "data", request_body = Vec<UserCreate>,
    responses(
        (status = 201, description = "Every user was created", body = Vec<User>),
        (status = 409, description = "An email is in use or repeated; nothing was created", body = ErrorBody),
        (status = 422, description = "An entry is invalid, or the batch is empty or too large; nothing was created", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn create_users(
    db: Executor,
    state: web::Data<AppState>,
    body: web::Json<Vec<UserCreate>>,
) -> Result<HttpResponse, AppError> {
    let batch = body.into_inner();
    let max = state.config.data.users_batch_max;
    if batch.is_empty() {
        return Err(AppError::Unprocessable("the batch is empty".into()));
    }
    if batch.len() > max {
        return Err(AppError::Unprocessable(format!(
            "the batch holds {} users; at most {max} are allowed",
            batch.len()
        )));
    }
    let mut users = Vec::with_capacity(batch.len());
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    for (i, entry) in batch.into_iter().enumerate() {
        let user = entry.validate().map_err(|e| match e {
            AppError::Unprocessable(m) => AppError::Unprocessable(format!("users[{i}]: {m}")),
            other => other,
        })?;
        if !seen.insert(user.email.clone()) {
            return Err(AppError::Conflict(format!(
                "users[{i}]: email {} appears twice in the batch; no user was created",
                user.email
            )));
        }
        users.push(user);
    }
    let users = ask(&db, CreateUsers { users }).await?;
    Ok(HttpResponse::Created().json(users))
}

/// Reads a user through the query builder (rows mapped to a struct).
#[utoipa::path(
    get, path = "/users/{id}", tag = "data",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 404, description = "User not found", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn get_user(db: Executor, id: web::Path<i64>) -> Result<web::Json<User>, AppError> {
    ask(
        &db,
        GetUser {
            id: id.into_inner(),
        },
    )
    .await?
    .map(web::Json)
    .ok_or_else(|| AppError::NotFound("User not found".into()))
}

/// Reads a user the lower-level way: one prepared statement whose single column is
/// the row as JSON, sent to the client as it is — no mapping to a struct and back.
#[utoipa::path(
    get, path = "/users-fast/{id}", tag = "data",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "The user (same fields as /users/{id})", body = User),
        (status = 404, description = "User not found", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn get_user_fast(db: Executor, id: web::Path<i64>) -> Result<HttpResponse, AppError> {
    let json = ask(
        &db,
        GetUserJson {
            id: id.into_inner(),
        },
    )
    .await?
    .ok_or_else(|| AppError::NotFound("User not found".into()))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(json))
}

/// Lists users by keyset: pass the previous page's `next_after` as `after`. Pages stay
/// cheap however deep, and rows inserted meanwhile are neither skipped nor repeated.
#[utoipa::path(
    get, path = "/users", tag = "data", params(PageQuery),
    responses(
        (status = 200, description = "One page of users, ascending by id", body = Page<User>),
        (status = 422, description = "limit or after out of range", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn list_users(
    db: Executor,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<User>>, AppError> {
    let (after, limit) = query.bounds()?;
    Ok(web::Json(ask(&db, ListUsers { after, limit }).await?))
}

/// The dashboard: the ten newest users and orders and the user count, queried at
/// once on three pooled connections.
#[utoipa::path(
    get, path = "/dashboard", tag = "data",
    responses(
        (status = 200, description = "The dashboard", body = Dashboard),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn dashboard(db: Executor) -> Result<web::Json<Dashboard>, AppError> {
    Ok(web::Json(ask(&db, GetDashboard).await?))
}

/// An order to place.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderCreate {
    /// The user placing it.
    user_id: i64,
    /// What is ordered, 1–255 characters.
    product: String,
    /// How many, 1–1,000,000.
    quantity: i32,
    /// Total in cents, 0 to 10^12.
    amount_cents: i64,
}

/// Most items one order line may hold.
pub const MAX_ORDER_QUANTITY: i32 = 1_000_000;
/// Largest order total in cents (ten billion): sums over many orders stay far from
/// overflowing a 64-bit integer.
pub const MAX_AMOUNT_CENTS: i64 = 1_000_000_000_000;

/// Places an order.
#[utoipa::path(
    post, path = "/orders", tag = "data", request_body = OrderCreate,
    responses(
        (status = 201, description = "Placed", body = Order),
        (status = 422, description = "Invalid field or unknown user", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn create_order(
    db: Executor,
    body: web::Json<OrderCreate>,
) -> Result<HttpResponse, AppError> {
    let o = body.into_inner();
    if !(1..=MAX_ORDER_QUANTITY).contains(&o.quantity) {
        return Err(AppError::Unprocessable(format!(
            "quantity must be between 1 and {MAX_ORDER_QUANTITY}"
        )));
    }
    if !(0..=MAX_AMOUNT_CENTS).contains(&o.amount_cents) {
        return Err(AppError::Unprocessable(format!(
            "amount_cents must be between 0 and {MAX_AMOUNT_CENTS}"
        )));
    }
    let order = NewOrder {
        user_id: positive_id("user_id", o.user_id)?,
        product: text("product", o.product, MAX_TEXT_CHARS)?,
        quantity: o.quantity,
        amount_cents: o.amount_cents,
        created_at: models::now(),
    };
    let order = ask(&db, CreateOrder { order }).await?;
    Ok(created(format!("/orders/{}", order.id), &order))
}

/// A post to write.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostCreate {
    /// The author's user id.
    author_id: i64,
    /// 1–255 characters.
    title: String,
    /// The text.
    body: String,
}

/// Writes a post.
#[utoipa::path(
    post, path = "/posts", tag = "data", request_body = PostCreate,
    responses(
        (status = 201, description = "Written", body = Post),
        (status = 422, description = "Invalid field or unknown author", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn create_post(
    db: Executor,
    body: web::Json<PostCreate>,
) -> Result<HttpResponse, AppError> {
    let p = body.into_inner();
    let post = NewPost {
        author_id: positive_id("author_id", p.author_id)?,
        title: text("title", p.title, MAX_TEXT_CHARS)?,
        body: text("body", p.body, usize::MAX)?,
        created_at: models::now(),
    };
    let post = ask(&db, CreatePost { post }).await?;
    Ok(created(format!("/posts/{}", post.id), &post))
}

/// A comment to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentCreate {
    /// The author's user id.
    author_id: i64,
    /// The text.
    body: String,
}

/// Comments on a post.
#[utoipa::path(
    post, path = "/posts/{id}/comments", tag = "data", request_body = CommentCreate,
    params(("id" = i64, Path, description = "Post id")),
    responses(
        (status = 201, description = "Added", body = models::Comment),
        (status = 404, description = "Post not found", body = ErrorBody),
        (status = 422, description = "Invalid field or unknown author", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn create_comment(
    db: Executor,
    id: web::Path<i64>,
    body: web::Json<CommentCreate>,
) -> Result<HttpResponse, AppError> {
    let c = body.into_inner();
    let post_id = id.into_inner();
    let comment = NewComment {
        post_id,
        author_id: positive_id("author_id", c.author_id)?,
        body: text("body", c.body, usize::MAX)?,
        created_at: models::now(),
    };
    let comment = ask(&db, CreateComment { comment }).await?;
    Ok(created(
        format!("/posts/{post_id}#comment-{}", comment.id),
        &comment,
    ))
}

/// A post with its author and comments (at most 100, oldest first), fetched at once on
/// three pooled connections.
#[utoipa::path(
    get, path = "/posts/{id}", tag = "data",
    params(("id" = i64, Path, description = "Post id")),
    responses(
        (status = 200, description = "The post, its comments and author", body = PostWithRelations),
        (status = 404, description = "Post not found", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn get_post(
    db: Executor,
    id: web::Path<i64>,
) -> Result<web::Json<PostWithRelations>, AppError> {
    ask(
        &db,
        GetPost {
            id: id.into_inner(),
        },
    )
    .await?
    .map(web::Json)
    .ok_or_else(|| AppError::NotFound("Post not found".into()))
}

/// Rows of the `data` table, by keyset.
#[utoipa::path(
    get, path = "/data", tag = "data", params(PageQuery),
    responses(
        (status = 200, description = "One page of rows", body = Page<DataItem>),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn list_data(
    db: Executor,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<DataItem>>, AppError> {
    let (after, limit) = query.bounds()?;
    Ok(web::Json(ask(&db, ListData { after, limit }).await?))
}

/// A row to add to the `data` table.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataCreate {
    /// 1–255 characters.
    name: String,
    /// Any JSON value.
    #[schema(value_type = Object)]
    value: Box<RawValue>,
}

/// Adds a row to the `data` table.
#[utoipa::path(
    post, path = "/data", tag = "data", request_body = DataCreate,
    responses(
        (status = 201, description = "Added", body = DataItem),
        (status = 422, description = "Invalid name, or a value nested deeper than JSON_MAX_DEPTH", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody)
    )
)]
pub async fn create_data(
    state: web::Data<AppState>,
    db: Executor,
    body: web::Json<DataCreate>,
) -> Result<HttpResponse, AppError> {
    let d = body.into_inner();
    let value =
        compact_data(d.value, state.config.json_max_depth).map_err(AppError::Unprocessable)?;
    let row = NewData {
        name: text("name", d.name, MAX_TEXT_CHARS)?,
        value: value.get().to_owned(),
        created_at: models::now(),
    };
    let row = ask(&db, CreateData { row }).await?;
    Ok(created(format!("/data?after={}&limit=1", row.id - 1), &row))
}
