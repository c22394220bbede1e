SELECT json_extract(value, '$.concurrency_limit') FROM settings WHERE key = ?1
