-- Status changes count themselves. Each statement that moves a job between count keys (its
-- status, or DELAYED -> PENDING) writes its own `job_counts` deltas from the rows it returns,
-- in the same statement: the exchange, finish, mark_scheduled, record_starts, cancel,
-- promote_due, rescue_apply and retry_dead_letter statements (crates/store/sql/postgres).
--
-- The update trigger this drops ran for every UPDATE of `jobs` (lease renewals included): it
-- captured each updated row twice (the old and new transition tables, whole rows, payloads
-- included) and grouped them, about 15 % of Postgres's CPU per burned job. Inserts, deletes and
-- truncation keep their triggers.
--
-- A process of an earlier version that still changes statuses after this migration (during a
-- rolling upgrade) does so uncounted. The engine leader checks the counts against the rows
-- when it takes over and every hour after, and corrects them (DispatchStore::recount).
DROP TRIGGER IF EXISTS jobs_counted_update ON jobs;
DROP FUNCTION IF EXISTS job_counts_updated();
