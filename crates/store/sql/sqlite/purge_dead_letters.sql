UPDATE jobs SET dead_letter = 0 WHERE dead_letter = 1
