SELECT key, value FROM settings WHERE starts_with(key, $1) ORDER BY key
