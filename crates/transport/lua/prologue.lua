-- Prepended to every script: `now` is the Redis server clock in milliseconds, so liveness
-- deadlines never depend on the clocks of the processes that write them.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
