-- Search by name prefix (the web console): a range over the names in byte order.
CREATE INDEX jobs_name_prefix ON jobs (name);
