SELECT count(*) FROM jobs WHERE dead_letter
