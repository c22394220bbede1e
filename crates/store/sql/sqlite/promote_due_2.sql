UPDATE jobs SET delayed = 0, seq = ?2 WHERE id = ?1
