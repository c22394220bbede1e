-- Leases are found through `job_leases`, not through an index on `jobs.lease_expires_at`.
--
-- A claim changes the lease, so while an index referred to it every claim inserted its new row
-- version there (besides the primary key), and no claim could ever be a HOT update. Now each
-- statement that hands out a lease (an exchange's claims, the engine's dispatch, a start, a
-- renewal) also inserts one row here: the expiry it set, its holder and the jobs it set it on.
-- The rescuer reads the rows whose expiry has passed and checks each job's own lease (a job
-- renewed since is in a later row); the worker that lost an exchange's reply finds its jobs the
-- same way. The rescuer deletes the rows it is done with.
--
-- A process of an earlier version that still hands out leases after this migration (during a
-- rolling upgrade) writes no row. The engine leader lists every SCHEDULED and RUNNING job here
-- when it takes over and every hour after (with the recount, DispatchStore::recount), so the
-- rescuer finds those jobs too.
CREATE TABLE job_leases (
    expires_at timestamptz NOT NULL,
    -- The worker holding the lease; NULL for the engine's SCHEDULED jobs and the leader's list.
    owner      text,
    ids        uuid[]      NOT NULL
);
CREATE INDEX job_leases_expiry ON job_leases (expires_at);

INSERT INTO job_leases (expires_at, owner, ids)
SELECT lease_expires_at, lease_owner, array_agg(id)
  FROM jobs
 WHERE status IN ('SCHEDULED', 'RUNNING') AND lease_expires_at IS NOT NULL
 GROUP BY 1, 2;

DROP INDEX IF EXISTS jobs_lease;
