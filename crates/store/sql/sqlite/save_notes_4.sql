DELETE FROM job_logs WHERE seq IN (
SELECT seq FROM (
SELECT seq, row_number() OVER w AS n,
sum(length(CAST(message AS BLOB))) OVER w AS bytes
FROM job_logs WHERE job_id = ?1 AND attempt = ?2
WINDOW w AS (ORDER BY seq DESC)
) WHERE n > ?3 OR bytes > ?4)
