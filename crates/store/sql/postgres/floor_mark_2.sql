-- The transactions of client sessions open now in this database, this one's aside (read after
-- floor_mark.sql: a transaction that took a position before it is still open here, or has
-- ended).
SELECT coalesce(array_agg(l.virtualxid), '{}')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'virtualxid' AND a.datname = current_database()
  AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
