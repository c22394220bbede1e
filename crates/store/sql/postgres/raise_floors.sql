-- Each queue's new floor, once every transaction open at the mark has ended: its lowest
-- claimable (not delayed) entry at or above its current floor ($2: at or above 0), but at most
-- the mark's position $1 + 1 (an entry written later takes a higher position). A floor that
-- changed since this statement's snapshot (lowered by queue_sweep.sql, or raised by another
-- leader) is left as it is.
WITH queues AS (
    SELECT queue FROM queue_floors UNION SELECT queue FROM job_counts
), new AS (
    SELECT q.queue, f.seq AS old,
           LEAST((SELECT min(e.seq) FROM job_queue e
                  WHERE e.queue = q.queue AND NOT e.delayed
                    AND e.seq >= CASE WHEN $2 THEN 0 ELSE coalesce(f.seq, 0) END),
                 $1 + 1) AS seq
    FROM queues q LEFT JOIN queue_floors f ON f.queue = q.queue
)
INSERT INTO queue_floors (queue, seq)
SELECT queue, seq FROM new ORDER BY queue
ON CONFLICT (queue) DO UPDATE SET seq = EXCLUDED.seq
WHERE queue_floors.seq = (SELECT n.old FROM new n WHERE n.queue = EXCLUDED.queue)
