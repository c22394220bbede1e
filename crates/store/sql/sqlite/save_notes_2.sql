INSERT INTO job_tries (job_id, attempt, fraction, message, progress_at)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (job_id, attempt) DO UPDATE
SET fraction = coalesce(excluded.fraction, fraction),
message = CASE WHEN excluded.progress_at IS NULL THEN message
ELSE excluded.message END,
progress_at = coalesce(excluded.progress_at, progress_at)
