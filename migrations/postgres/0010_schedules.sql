-- Periodic jobs. `spec` holds what a user sets (cron, time zone, job template, overlap,
-- catch-up) as JSON; the fire state lives in columns. The engine leader fires a due schedule
-- by enqueuing its job (idempotency key `schedule:<name>:<fire time>`, so one fire time makes
-- at most one job whatever happens) and then moving `next_fire_at` on with a conditional
-- update, so a second leader never fires the same time again.
CREATE TABLE schedules (
    name         text        PRIMARY KEY,
    spec         jsonb       NOT NULL,
    paused       boolean     NOT NULL,
    next_fire_at timestamptz,
    last_fire_at timestamptz,
    last_job_id  uuid,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;
