INSERT INTO job_types (name, schema, preemptible, default_timeout_seconds,
registered_by, updated_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (name) DO UPDATE SET schema = excluded.schema,
preemptible = excluded.preemptible,
default_timeout_seconds = excluded.default_timeout_seconds,
registered_by = excluded.registered_by, updated_at = excluded.updated_at
