-- The document store when MONGODB_URI is unset: one JSON object per row.
CREATE TABLE documents (
    id VARCHAR(128) PRIMARY KEY,
    body TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);
