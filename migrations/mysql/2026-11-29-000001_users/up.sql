-- Users: the seed's User model. Emails are stored lower-cased, so UNIQUE is case-insensitive.
-- Every table uses utf8mb4 with a binary collation: text compares as on PostgreSQL and
-- SQLite (case-sensitive, accents kept). Timestamps are UTC with milliseconds: every
-- connection sets time_zone '+00:00'. MySQL cannot roll DDL back, so every table is
-- created IF NOT EXISTS: a run cut off part-way is simply run again. Long text is
-- LONGTEXT/MEDIUMTEXT (TEXT stops at 64 KiB, where the other backends have no limit).
CREATE TABLE IF NOT EXISTS users (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    email VARCHAR(255) NOT NULL UNIQUE,
    created_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
