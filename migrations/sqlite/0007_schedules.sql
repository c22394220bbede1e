-- Periodic jobs (see migrations/postgres/0010_schedules.sql).
CREATE TABLE schedules (
    name         TEXT    PRIMARY KEY NOT NULL,
    spec         TEXT    NOT NULL,
    paused       INTEGER NOT NULL CHECK (paused IN (0, 1)),
    next_fire_at INTEGER,
    last_fire_at INTEGER,
    last_job_id  TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;
