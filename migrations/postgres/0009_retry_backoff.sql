-- A job's own retry backoff (NULL = the installation's). Set at submission and never changed:
-- at the end of the row they are part of the unchanged suffix every update leaves out of
-- its WAL record.
ALTER TABLE jobs ADD COLUMN backoff_base double precision, ADD COLUMN backoff_cap double precision;
