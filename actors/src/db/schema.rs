//! The relational schema, shared by Postgres and SQLite (the migrations in
//! `migrations/postgres` and `migrations/sqlite` create the same tables).

diesel::table! {
    /// The seed's users.
    users (id) {
        id -> BigInt,
        name -> Text,
        email -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Posts, written by a user.
    posts (id) {
        id -> BigInt,
        author_id -> BigInt,
        title -> Text,
        body -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Comments on a post.
    comments (id) {
        id -> BigInt,
        post_id -> BigInt,
        author_id -> BigInt,
        body -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Orders placed by a user.
    orders (id) {
        id -> BigInt,
        user_id -> BigInt,
        product -> Text,
        quantity -> Integer,
        amount_cents -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// The seed's `data` table: named JSON values.
    data (id) {
        id -> BigInt,
        name -> Text,
        value -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// The document store when MongoDB is not configured.
    documents (id) {
        id -> Text,
        body -> Text,
        created_at -> Timestamp,
    }
}

diesel::joinable!(posts -> users (author_id));
diesel::joinable!(comments -> posts (post_id));
diesel::joinable!(orders -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(users, posts, comments, orders, data, documents);
