-- Delayed jobs whose time has come, earliest first: their `job_queue` entries, locked (as a
-- claim locks them; entries another promoter holds are skipped) until promote_due_2.sql has
-- moved them and their jobs, in the same transaction.
SELECT id FROM job_queue WHERE delayed AND run_at <= $1
ORDER BY run_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED
