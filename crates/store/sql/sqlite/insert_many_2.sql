INSERT INTO job_keys (key, job_id, fingerprint, created_at)
VALUES (?1, ?2, ?3, ?4)
