SELECT queue, CASE WHEN status = 'PENDING' AND delayed = 1 THEN 'DELAYED'
ELSE status END, count(*)
FROM jobs WHERE status IN ('PENDING', 'SCHEDULED', 'RUNNING') GROUP BY 1, 2
