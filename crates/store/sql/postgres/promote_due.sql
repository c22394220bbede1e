-- Delayed jobs whose time has come join their queue, earliest first, each with a new sequence
-- number (behind the jobs already waiting): their `job_queue` entries, locked first (as a
-- claim locks them; entries another promoter holds are skipped). promote_due_2.sql moves their
-- jobs, in the same transaction. An entry whose job is no longer a delayed PENDING one (left by
-- a process of an earlier version) moves too, and the claim that meets it drops it.
UPDATE job_queue q SET delayed = false, seq = nextval('job_seq')
WHERE q.ctid = ANY (ARRAY(
    SELECT ctid FROM job_queue WHERE delayed AND run_at <= $1
    ORDER BY run_at, seq LIMIT $2 FOR UPDATE SKIP LOCKED))
RETURNING q.id, q.seq
