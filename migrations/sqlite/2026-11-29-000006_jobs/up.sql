-- The durable job queue. A job is claimed by setting state = 'running' and a lease; a
-- lease that runs out (its worker died) makes the job claimable again. After its last
-- attempt a failing job stays here as 'dead' with its error (the dead-letter list).
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at TIMESTAMP NOT NULL,
    lease_until TIMESTAMP,
    worker TEXT,
    progress INTEGER NOT NULL DEFAULT 0,
    progress_note TEXT,
    last_error TEXT,
    result TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);
CREATE INDEX jobs_claimable ON jobs (state, run_at);

-- Emails written when no SMTP server is configured.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id BIGINT NOT NULL UNIQUE,
    recipient TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- POST /users/{id}/action: the action, its activity log and the analytics it feeds.
CREATE TABLE actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id),
    action TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
CREATE TABLE activity_log (
    action_id BIGINT PRIMARY KEY REFERENCES actions (id),
    user_id BIGINT NOT NULL,
    action TEXT NOT NULL,
    logged_at TIMESTAMP NOT NULL
);
CREATE TABLE analytics (
    action TEXT PRIMARY KEY,
    count BIGINT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE TABLE analytics_applied (
    action_id BIGINT PRIMARY KEY
);
