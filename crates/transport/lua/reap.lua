-- Forget the workers whose liveness deadline passed, in one step.
-- KEYS: idle, total, alive, types. ARGV: in-flight key prefix (lists an older version kept
-- per worker; deleted with it). Returns the dead workers.
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', string.format('%d', now))
for _, w in ipairs(dead) do
  redis.call('DEL', ARGV[1] .. w)
  redis.call('HDEL', KEYS[1], w)
  redis.call('HDEL', KEYS[2], w)
  redis.call('ZREM', KEYS[3], w)
  redis.call('HDEL', KEYS[4], w)
end
return dead
