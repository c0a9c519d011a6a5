-- Rooms' numbering and history when there is no Redis: the broker appends each published
-- event here before anyone receives it, so a restart keeps the numbering and the replay.
-- `epoch` changes when a room's history is lost (the room was forgotten after
-- ROOM_HISTORY_TTL_SECS without events, or this table was emptied).
CREATE TABLE IF NOT EXISTS rooms (
    room VARCHAR(64) PRIMARY KEY,
    epoch VARCHAR(32) NOT NULL,
    last_seq BIGINT NOT NULL,
    updated_at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
CREATE TABLE IF NOT EXISTS room_events (
    room VARCHAR(64) NOT NULL,
    seq BIGINT NOT NULL,
    event MEDIUMTEXT NOT NULL,
    created_at DATETIME(3) NOT NULL,
    PRIMARY KEY (room, seq),
    INDEX room_events_created_at (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
