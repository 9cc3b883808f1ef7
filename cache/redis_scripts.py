"""The RedisStore's Lua scripts (atomic writes, evictions and deletes); see :mod:`cache.redis_store`."""

LUA_DROP = """
local lru, exp, stream = KEYS[1], KEYS[2], KEYS[3]
local eprefix, maxlen = ARGV[1], ARGV[2]
local function drop(id)
  redis.call('ZREM', lru, id)
  redis.call('ZREM', exp, id)
  local n = redis.call('DEL', eprefix .. id)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'op', 'del', 'id', id)
  return n
end
local function purge(now, out)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 1000)) do
    drop(id)
    out[#out + 1] = id
  end
end
"""

# KEYS: lru exp stream entry; ARGV: eprefix maxlen id now ttl_ms expires capacity scope vec field value...
LUA_PUT = LUA_DROP + """
local id, now, expires, capacity = ARGV[3], ARGV[4], ARGV[6], tonumber(ARGV[7])
local entry, scope, vec = KEYS[4], ARGV[8], ARGV[9]
local out = {}
local had_vec = redis.call('HEXISTS', entry, 'vec') == 1
redis.call('DEL', entry)
redis.call('HSET', entry, unpack(ARGV, 10))
redis.call('PEXPIRE', entry, ARGV[5])
redis.call('ZADD', lru, now, id)
redis.call('ZADD', exp, expires, id)
if vec ~= '' then
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'op', 'add', 'id', id, 'scope', scope,
             'exp', expires, 'vec', vec)
elseif had_vec then
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'op', 'del', 'id', id)
end
purge(now, out)
local over = redis.call('ZCARD', lru) - capacity
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', lru, 0, over)) do
    if over > 0 and old ~= id then
      drop(old)
      out[#out + 1] = old
      over = over - 1
    end
  end
end
return out
"""

# KEYS: entry; ARGV: dense vector -> 1 if kept (never recreates a deleted or expired entry)
LUA_KEEP_DENSE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'dense', ARGV[1])
  return 1
end
return 0
"""

# KEYS: lru exp stream; ARGV: eprefix maxlen now -> {entries left, purged ids...}
LUA_COUNT = LUA_DROP + """
local out = {}
purge(ARGV[3], out)
return {redis.call('ZCARD', lru), out}
"""

# KEYS: lru exp stream; ARGV: eprefix maxlen id... -> number of entries deleted
LUA_CLEAR = LUA_DROP + """
local n = 0
for i = 3, #ARGV do n = n + drop(ARGV[i]) end
return n
"""
