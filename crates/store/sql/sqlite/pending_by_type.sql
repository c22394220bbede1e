SELECT job_type, count(*) FROM jobs WHERE status = 'PENDING'
GROUP BY job_type ORDER BY job_type
