UPDATE jobs SET dead_letter = false WHERE dead_letter
