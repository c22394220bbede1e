SELECT 1 FROM schedules WHERE name = ?1
