DELETE FROM leaders WHERE role = $1 AND holder = $2
