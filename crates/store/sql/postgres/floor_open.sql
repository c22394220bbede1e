-- Whether any of the transactions $1 (virtual transaction ids) is still open, or a prepared
-- transaction of this database waits (it holds no virtual transaction id).
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid = ANY($1))
    OR EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE database = current_database())
