SELECT scanned_to FROM rescue_marks WHERE name = 'leases'
