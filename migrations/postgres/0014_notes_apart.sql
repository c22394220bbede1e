-- A run's notes (job_tries, and with them job_logs) no longer refer to `jobs` by a foreign key.
-- The key made every UPDATE of `jobs` (each claim and each completion) queue a row trigger
-- event: measured at 8-13 µs of Postgres CPU per burned job, a quarter of its cost. What the
-- key guaranteed is kept another way: a try's row is written only while its job is RUNNING
-- under the writer's token, with the job's row held FOR KEY SHARE (as the key's check held
-- it), and deleting or truncating jobs deletes their notes (the triggers below).
ALTER TABLE job_tries DROP CONSTRAINT IF EXISTS job_tries_job_id_fkey;

CREATE FUNCTION job_notes_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_tries t USING old_rows o WHERE t.job_id = o.id;
    RETURN NULL;
END
$$;

CREATE FUNCTION job_notes_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_tries;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notes_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION job_notes_deleted();
CREATE TRIGGER jobs_notes_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_notes_truncated();
