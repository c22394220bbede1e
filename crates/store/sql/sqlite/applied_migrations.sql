SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'
