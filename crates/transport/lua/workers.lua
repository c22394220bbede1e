-- The live workers, their slots and the job types they serve.
-- KEYS: idle, total, alive, types. Returns `worker, idle, total, types` quadruples, flattened
-- (`types` as the JSON array the worker reported, '' when none).
local live = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. string.format('%d', now), '+inf')
local out = {}
for _, w in ipairs(live) do
  out[#out + 1] = w
  out[#out + 1] = redis.call('HGET', KEYS[1], w) or '0'
  out[#out + 1] = redis.call('HGET', KEYS[2], w) or '0'
  out[#out + 1] = redis.call('HGET', KEYS[4], w) or ''
end
return out
