SELECT name, schema, preemptible, default_timeout_seconds, registered_by,
updated_at FROM job_types ORDER BY name
