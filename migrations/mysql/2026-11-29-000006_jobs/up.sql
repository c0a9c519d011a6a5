-- The durable job queue. A job is claimed by setting state = 'running' and a lease; a
-- lease that runs out (its worker died) makes the job claimable again. After its last
-- attempt a failing job stays here as 'dead' with its error (the dead-letter list).
-- Claims lock rows with FOR UPDATE SKIP LOCKED (MySQL 8, MariaDB 10.6 and later).
CREATE TABLE IF NOT EXISTS jobs (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    kind VARCHAR(64) NOT NULL,
    payload MEDIUMTEXT NOT NULL,
    state VARCHAR(16) NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    run_at DATETIME(3) NOT NULL,
    lease_until DATETIME(3) NULL,
    worker VARCHAR(64) NULL,
    progress INTEGER NOT NULL DEFAULT 0,
    progress_note MEDIUMTEXT NULL,
    last_error MEDIUMTEXT NULL,
    result MEDIUMTEXT NULL,
    created_at DATETIME(3) NOT NULL,
    updated_at DATETIME(3) NOT NULL,
    finished_at DATETIME(3) NULL,
    INDEX jobs_claimable (state, run_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Emails written when no SMTP server is configured.
CREATE TABLE IF NOT EXISTS outbox (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    job_id BIGINT NOT NULL,
    recipient VARCHAR(254) NOT NULL,
    message MEDIUMTEXT NOT NULL,
    created_at DATETIME(3) NOT NULL,
    UNIQUE (job_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- POST /users/{id}/action: the action, its activity log and the analytics it feeds.
CREATE TABLE IF NOT EXISTS actions (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    action VARCHAR(64) NOT NULL,
    created_at DATETIME(3) NOT NULL,
    FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS activity_log (
    action_id BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    action VARCHAR(64) NOT NULL,
    logged_at DATETIME(3) NOT NULL,
    FOREIGN KEY (action_id) REFERENCES actions (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS analytics (
    action VARCHAR(64) PRIMARY KEY,
    count BIGINT NOT NULL,
    updated_at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS analytics_applied (
    action_id BIGINT PRIMARY KEY
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
