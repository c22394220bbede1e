SELECT 1 FROM jobs WHERE id = ?1 AND attempt = ?2 AND status = 'RUNNING'
