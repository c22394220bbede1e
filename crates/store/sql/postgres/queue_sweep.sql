-- Every PENDING job without a `job_queue` entry gets one: a process of an earlier version that
-- moved it back to PENDING after migration 0017 (during a rolling upgrade) wrote none. The
-- entry keeps the job's position, which may lie below its queue's floor (migration 0019): the
-- floor goes back to the front, and the leader's next raise sets it again. Returns how many
-- entries were written.
WITH entered AS (
    INSERT INTO job_queue (id, queue, seq, priority, estimated_duration, run_at, delayed,
                           created_at, job_type)
    SELECT j.id, j.queue, j.seq, j.priority, j.estimated_duration, j.run_at, j.delayed,
           j.created_at, j.job_type
    FROM jobs j
    WHERE j.status = 'PENDING' AND NOT EXISTS (SELECT 1 FROM job_queue q WHERE q.id = j.id)
    ON CONFLICT (id) DO NOTHING
    RETURNING queue
), lowered AS (
    INSERT INTO queue_floors (queue, seq)
    SELECT DISTINCT queue, 0 FROM entered
    ON CONFLICT (queue) DO UPDATE SET seq = 0
)
SELECT count(*) FROM entered
