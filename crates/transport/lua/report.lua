-- Record a worker's slots and push its liveness deadline.
-- KEYS: idle, total, alive (and types, unused). ARGV: worker, idle, total, ttl in ms.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[1])
return 1
