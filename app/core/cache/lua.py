"""The Lua scripts that make each lease, fill, release, store and tombstone one atomic operation on Redis.

Each script but the tombstone touches one key (KEYS[1]); the tombstone touches the keys of one write, which share a
hash slot on Redis Cluster (they carry the user's id as hash tag), so every script runs there too. ARGV[1] is the
hash field, or '' for a string key. The markers' formats are those of `backend.py`.
"""

from __future__ import annotations

_READ = """
local v
if ARGV[1] == '' then v = redis.call('GET', KEYS[1]) else v = redis.call('HGET', KEYS[1], ARGV[1]) end
"""

# The bytes of a list hash, names and values: O(fields), and fields are bounded. Run on misses only, never on hits.
_HASH_BYTES = """
local function hash_bytes(key)
  local n = 0
  for _, f in ipairs(redis.call('HKEYS', key)) do n = n + #f + redis.call('HSTRLEN', key, f) end
  return n
end
"""

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# ARGV: field, token, lease ms, key TTL (s), the hash's bound in fields and bytes (0: none).
# Returns {LeaseState} or {hit, value}.
GET_OR_LEASE = (
    _HASH_BYTES
    + """
if ARGV[1] ~= '' and redis.call('HEXISTS', KEYS[1], '__tomb__') == 1 then return {3} end
"""
    + _READ
    + _NOW_MS
    + """
if v then
  if string.sub(v, 1, 11) == '{"__tomb__"' then return {3} end
  if string.sub(v, 1, 13) ~= '{"__lease__":' then return {1, v} end
  local until_ms = tonumber(string.match(v, '"until":(%d+)'))
  if until_ms and until_ms > now then return {2} end
end
local lease_ms = tonumber(ARGV[3])
local marker = '{"__lease__":"' .. ARGV[2] .. '","until":' .. (now + lease_ms) .. '}'
if ARGV[1] == '' then
  redis.call('SET', KEYS[1], marker, 'PX', lease_ms)
else
  local max_fields, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
  if max_fields > 0 then
    local grow = #marker + (v and -#v or #ARGV[1])
    if (not v and redis.call('HLEN', KEYS[1]) >= max_fields) or hash_bytes(KEYS[1]) + grow > max_bytes then
      return {4}
    end
  end
  redis.call('HSET', KEYS[1], ARGV[1], marker)
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
end
return {0}
"""
)

# ARGV: field, token, value, TTL (s), the hash's bound in bytes (0: none). Returns 1 if stored.
FILL = (
    _HASH_BYTES
    + _READ
    + """
if not v then return 0 end
local expected = '{"__lease__":"' .. ARGV[2] .. '",'
if string.sub(v, 1, #expected) ~= expected then return 0 end
if ARGV[1] == '' then
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
else
  local max_bytes = tonumber(ARGV[5])
  if max_bytes > 0 and hash_bytes(KEYS[1]) + #ARGV[3] - #v > max_bytes then
    redis.call('HDEL', KEYS[1], ARGV[1])
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
end
return 1
"""
)

# ARGV: field, token. Returns 1 if this token's lease was there (and is now gone).
RELEASE = (
    _READ
    + """
if not v then return 0 end
local expected = '{"__lease__":"' .. ARGV[2] .. '",'
if string.sub(v, 1, #expected) ~= expected then return 0 end
if ARGV[1] == '' then redis.call('DEL', KEYS[1]) else redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"""
)

# A string key only. ARGV: value, TTL (s). Returns 1 if stored, 0 if a tombstone or a live lease is in the way.
STORE = (
    """
local v = redis.call('GET', KEYS[1])
if v then
  if string.sub(v, 1, 11) == '{"__tomb__"' then return 0 end
  if string.sub(v, 1, 13) == '{"__lease__":' then
"""
    + _NOW_MS
    + """
    local until_ms = tonumber(string.match(v, '"until":(%d+)'))
    if until_ms and until_ms > now then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
)

# KEYS: the write's keys (one hash slot). ARGV: the tombstones' TTL (ms), then '1' (a hash) or '0' per key.
TOMBSTONE = """
for i, key in ipairs(KEYS) do
  redis.call('DEL', key)
  if ARGV[i + 1] == '1' then
    redis.call('HSET', key, '__tomb__', '{"__tomb__":1}')
    redis.call('PEXPIRE', key, ARGV[1])
  else
    redis.call('SET', key, '{"__tomb__":1}', 'PX', ARGV[1])
  end
end
return #KEYS
"""
