//! The relational schema, shared by Postgres and SQLite (the migrations in
//! `migrations/postgres` and `migrations/sqlite` create the same tables).

diesel::table! {
    /// Users.
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
    /// The `data` table: named JSON values.
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

diesel::table! {
    /// The durable job queue.
    jobs (id) {
        id -> BigInt,
        kind -> Text,
        payload -> Text,
        state -> Text,
        attempts -> Integer,
        max_attempts -> Integer,
        run_at -> Timestamp,
        lease_until -> Nullable<Timestamp>,
        worker -> Nullable<Text>,
        progress -> Integer,
        progress_note -> Nullable<Text>,
        last_error -> Nullable<Text>,
        result -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    /// Emails kept locally when no SMTP server is configured.
    outbox (id) {
        id -> BigInt,
        job_id -> BigInt,
        recipient -> Text,
        message -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// Actions users performed.
    actions (id) {
        id -> BigInt,
        user_id -> BigInt,
        action -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    /// The activity log written by the `log_activity` job (one row per action).
    activity_log (action_id) {
        action_id -> BigInt,
        user_id -> BigInt,
        action -> Text,
        logged_at -> Timestamp,
    }
}

diesel::table! {
    /// Counts per action, kept by the `update_analytics` job.
    analytics (action) {
        action -> Text,
        count -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Actions already counted, so a retried job counts once.
    analytics_applied (action_id) {
        action_id -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    jobs,
    outbox,
    actions,
    activity_log,
    analytics,
    analytics_applied
);

diesel::table! {
    /// Each room's epoch and last sequence number (rooms without Redis).
    rooms (room) {
        room -> Text,
        epoch -> Text,
        last_seq -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    /// Room events, as the `event` frame's JSON (rooms without Redis).
    room_events (room, seq) {
        room -> Text,
        seq -> BigInt,
        event -> Text,
        created_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(rooms, room_events);
