-- Named queues (see migrations/postgres/0011_queues.sql): every job waits in one, `default`
-- unless the submission names another, and keeps it for life. The claim orders lead with the
-- queue; the queue's running count (its concurrency limit) is read by (queue, status).
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';

DROP INDEX jobs_pending_seq;
DROP INDEX jobs_pending_priority;
DROP INDEX jobs_pending_sjf;
CREATE INDEX jobs_pending_seq ON jobs (queue, seq) WHERE status = 'PENDING' AND delayed = 0;
CREATE INDEX jobs_pending_priority ON jobs (queue, priority, seq)
    WHERE status = 'PENDING' AND delayed = 0;
CREATE INDEX jobs_pending_sjf ON jobs (queue, estimated_duration, seq)
    WHERE status = 'PENDING' AND delayed = 0;
CREATE INDEX jobs_queue_status ON jobs (queue, status);
