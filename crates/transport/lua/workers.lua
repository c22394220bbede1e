-- The live workers and their slots.
-- KEYS: idle, total, alive. Returns `worker, idle, total` triples, flattened.
local live = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. string.format('%d', now), '+inf')
local out = {}
for _, w in ipairs(live) do
  out[#out + 1] = w
  out[#out + 1] = redis.call('HGET', KEYS[1], w) or '0'
  out[#out + 1] = redis.call('HGET', KEYS[2], w) or '0'
end
return out
