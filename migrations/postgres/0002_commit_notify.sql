-- Submissions announce themselves at commit: a statement that inserts PENDING jobs sends the
-- lowest queue-entry sequence number it wrote on channel `jobsched_committed`. The engine leader
-- listens, so a new job reaches it straight from the database instead of through the API's
-- separate publish (which stays, as the path for stores without notifications).
CREATE FUNCTION jobsched_notify_committed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first_seq bigint;
BEGIN
    SELECT min(seq) INTO first_seq FROM inserted WHERE status = 'PENDING';
    IF first_seq IS NOT NULL THEN
        PERFORM pg_notify('jobsched_committed', first_seq::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_committed
    AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobsched_notify_committed();
