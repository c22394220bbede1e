-- The highest queue position handed out so far (read before floor_mark_2.sql), and how many
-- positions a session reserves at a time: above 1, a session can hand out a position lower
-- than one read here later, and the floors are not kept.
SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END,
       (SELECT seqcache FROM pg_sequence WHERE seqrelid = 'job_seq'::regclass)
FROM job_seq
