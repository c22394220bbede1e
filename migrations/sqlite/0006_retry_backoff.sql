-- A job's own retry backoff (NULL = the installation's), seconds.
ALTER TABLE jobs ADD COLUMN backoff_base REAL;
ALTER TABLE jobs ADD COLUMN backoff_cap REAL;
