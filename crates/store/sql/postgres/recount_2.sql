-- One recount at a time: this row is locked first (the transaction's first statement, so the
-- lock is taken on its snapshot). A recount that committed after that snapshot makes this
-- statement fail with a serialization error, and the recount is run again on a snapshot that
-- holds its corrections, so no difference is corrected twice.
INSERT INTO rescue_marks (name, scanned_to) VALUES ('recount', 'epoch')
ON CONFLICT (name) DO UPDATE SET scanned_to = rescue_marks.scanned_to
