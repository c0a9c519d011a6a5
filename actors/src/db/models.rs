//! Rows as the API shows them, and the rows handlers ask to insert.
//!
//! Timestamps are UTC, kept to the millisecond on both backends, and shown as
//! `2026-11-29T16:05:34.123Z` — the same text the raw `/users-fast` path builds in SQL.

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::schema::{comments, data, orders, posts, users};

/// The timestamp format of every row in the API.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// The current UTC time, cut to whole milliseconds (what both backends store exactly).
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(3)
}

/// Serialises row timestamps in [`TIMESTAMP_FORMAT`] (`#[serde(serialize_with = ...)]`).
pub mod timestamp {
    use chrono::NaiveDateTime;
    use serde::Serializer;

    use super::TIMESTAMP_FORMAT;

    /// A timestamp.
    pub fn required<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&t.format(TIMESTAMP_FORMAT))
    }

    /// A timestamp that may be missing (`null`).
    pub fn optional<S: Serializer>(t: &Option<NaiveDateTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => required(t, s),
            None => s.serialize_none(),
        }
    }
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Serialize, ToSchema)]
#[diesel(table_name = users)]
pub struct User {
    /// The user's id.
    pub id: i64,
    /// Display name, 1–255 characters.
    pub name: String,
    /// Email address, lower-cased; unique.
    pub email: String,
    /// When the user was created (UTC).
    #[serde(serialize_with = "timestamp::required")]
    #[schema(value_type = String, example = "2026-11-29T16:05:34.123Z")]
    pub created_at: NaiveDateTime,
}

/// A user to create.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = users)]
pub struct NewUser {
    /// Display name.
    pub name: String,
    /// Email address (already validated and lower-cased).
    pub email: String,
    /// Creation time.
    pub created_at: NaiveDateTime,
}

/// A post.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, ToSchema)]
#[diesel(table_name = posts)]
pub struct Post {
    /// The post's id.
    pub id: i64,
    /// The user who wrote it.
    pub author_id: i64,
    /// Title, 1–255 characters.
    pub title: String,
    /// Body text.
    pub body: String,
    /// When it was written (UTC).
    #[serde(serialize_with = "timestamp::required")]
    #[schema(value_type = String, example = "2026-11-29T16:05:34.123Z")]
    pub created_at: NaiveDateTime,
}

/// A post to create.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = posts)]
pub struct NewPost {
    /// The author's user id.
    pub author_id: i64,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: String,
    /// Creation time.
    pub created_at: NaiveDateTime,
}

/// A comment on a post.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, ToSchema)]
#[diesel(table_name = comments)]
pub struct Comment {
    /// The comment's id.
    pub id: i64,
    /// The post it belongs to.
    pub post_id: i64,
    /// The user who wrote it.
    pub author_id: i64,
    /// Body text.
    pub body: String,
    /// When it was written (UTC).
    #[serde(serialize_with = "timestamp::required")]
    #[schema(value_type = String, example = "2026-11-29T16:05:34.123Z")]
    pub created_at: NaiveDateTime,
}

/// A comment to create.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = comments)]
pub struct NewComment {
    /// The post.
    pub post_id: i64,
    /// The author's user id.
    pub author_id: i64,
    /// Body text.
    pub body: String,
    /// Creation time.
    pub created_at: NaiveDateTime,
}

/// An order.
#[derive(Debug, Clone, Queryable, Selectable, Serialize, ToSchema)]
#[diesel(table_name = orders)]
pub struct Order {
    /// The order's id.
    pub id: i64,
    /// The user who placed it.
    pub user_id: i64,
    /// What was ordered.
    pub product: String,
    /// How many.
    pub quantity: i32,
    /// Total in cents.
    pub amount_cents: i64,
    /// When it was placed (UTC).
    #[serde(serialize_with = "timestamp::required")]
    #[schema(value_type = String, example = "2026-11-29T16:05:34.123Z")]
    pub created_at: NaiveDateTime,
}

/// An order to create.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = orders)]
pub struct NewOrder {
    /// The user placing it.
    pub user_id: i64,
    /// What is ordered.
    pub product: String,
    /// How many (at least 1).
    pub quantity: i32,
    /// Total in cents (not negative).
    pub amount_cents: i64,
    /// Creation time.
    pub created_at: NaiveDateTime,
}

/// A row of the `data` table as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = data)]
pub struct DataRow {
    /// The row's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its value, JSON text.
    pub value: String,
    /// When it was written (UTC).
    pub created_at: NaiveDateTime,
}

/// A row of the `data` table as the API shows it: the value is JSON, not a string.
#[derive(Debug, Serialize, ToSchema)]
pub struct DataItem {
    /// The row's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its value.
    #[schema(value_type = Object)]
    pub value: Box<RawValue>,
    /// When it was written (UTC).
    #[serde(serialize_with = "timestamp::required")]
    #[schema(value_type = String, example = "2026-11-29T16:05:34.123Z")]
    pub created_at: NaiveDateTime,
}

impl DataRow {
    /// The row as the API shows it. A value that is not valid JSON (written outside
    /// courier) is shown as a JSON string.
    pub fn into_item(self) -> DataItem {
        let text = if serde_json::from_str::<&RawValue>(&self.value).is_ok() {
            self.value
        } else {
            serde_json::Value::String(self.value).to_string()
        };
        let value = RawValue::from_string(text).expect("checked or encoded as JSON");
        DataItem {
            id: self.id,
            name: self.name,
            value,
            created_at: self.created_at,
        }
    }
}

/// A `data` row to create.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = data)]
pub struct NewData {
    /// Its name.
    pub name: String,
    /// Its value, JSON text.
    pub value: String,
    /// Creation time.
    pub created_at: NaiveDateTime,
}

/// One page of a keyset-paginated listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    /// The rows, in ascending id order.
    pub items: Vec<T>,
    /// Pass this as `after` to get the next page; `null` on the last page.
    pub next_after: Option<i64>,
}

/// The dashboard: newest users and orders and the user count.
#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    /// The ten newest users.
    pub users: Vec<User>,
    /// The ten newest orders.
    pub orders: Vec<Order>,
    /// How many users there are.
    pub total_users: i64,
}

/// A post with its author and comments (fetched at once).
#[derive(Debug, Serialize, ToSchema)]
pub struct PostWithRelations {
    /// The post.
    pub post: Post,
    /// Its comments, oldest first (at most `POST_COMMENTS_LIMIT`).
    pub comments: Vec<Comment>,
    /// The post's author.
    pub author: User,
}
