-- Scheduled jobs (see migrations/postgres/0007_delayed.sql): a PENDING job submitted with a
-- future run_at is delayed, in no claim order, until the leader promotes it (delayed = 0, a
-- fresh seq) when its time comes.
ALTER TABLE jobs ADD COLUMN delayed INTEGER NOT NULL DEFAULT 0 CHECK (delayed IN (0, 1));

DROP INDEX jobs_pending_seq;
DROP INDEX jobs_pending_priority;
DROP INDEX jobs_pending_sjf;
CREATE INDEX jobs_pending_seq ON jobs (seq) WHERE status = 'PENDING' AND delayed = 0;
CREATE INDEX jobs_pending_priority ON jobs (priority, seq) WHERE status = 'PENDING' AND delayed = 0;
CREATE INDEX jobs_pending_sjf ON jobs (estimated_duration, seq)
    WHERE status = 'PENDING' AND delayed = 0;
CREATE INDEX jobs_delayed ON jobs (run_at, seq) WHERE status = 'PENDING' AND delayed = 1;
