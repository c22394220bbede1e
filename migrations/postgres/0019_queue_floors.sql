-- Each queue's floor: a queue position (`seq`) below which the queue has no claimable entry and
-- can get none, so that a claim in sequence order (FCFS, Round Robin) starts its index scan
-- there.
--
-- A claim deletes the queue entries it takes, and their index entries stay behind, dead, until
-- the table is vacuumed. A claim that started at the front of `job_queue_fcfs` stepped over all
-- of them: measured in a 400k-job burn, the index pages read per claim grew from ~150 to
-- ~1,700 as the queue drained (~100 throughout with the floor), and with 10M jobs pending the
-- dispatch rate was 21.7k jobs/s, against 36.9k and 28.0k in two runs with the floor
-- (BENCHMARKS.md, 2026-12-07).
--
-- The engine leader raises the floors (DispatchStore::raise_floors): it notes the highest
-- position handed out so far and the transactions open at that moment (a floor mark), waits
-- until those have ended (one of them may still write an entry at or below that position), and
-- then sets each queue's floor to its lowest claimable entry at or above the current floor,
-- or to the noted position + 1 if lower: every entry written later has a higher position,
-- since every statement that puts a job in its queue takes a fresh `seq` from `job_seq`. Every
-- 30th raise (about every half minute) looks below the floors too, for entries written by hand
-- or by a process of an earlier version (the recount's `queue_sweep.sql` writes a job's old
-- position). A queue without a row has no floor. An entry waiting out a retry's backoff is
-- claimable later, so it holds its queue's floor at its position until it is claimed. Claims
-- in priority or SJF order, whose indexes are not led by the position, start at the front as
-- before.
CREATE TABLE queue_floors (
    queue text   NOT NULL,
    seq   bigint NOT NULL,
    CONSTRAINT queue_floors_pkey PRIMARY KEY (queue)
);
