# -*- test-case-name: tests.store.test_redis -*-
"""The Lua scripts L{RedisStore} runs: every operation that names an account, or that must not interleave
with another node's, is one script.

Redis runs a script atomically: no command of any other client (another
jangotw node included) runs between its reads and its writes. So resolving an
account name to its id and acting on it is one step, and so is the monthly
quota check with its increment (L{CHARGE}). Scripts are called with
C{EVALSHA} and sent whole with C{EVAL} only when the server does not know them
yet (after a restart).

Every script is called with no KEYS and C{ARGV[1]} the key prefix; the
account-scoped ones take the lower-cased account name as C{ARGV[2]} and fail
with an error reply starting C{JT_NO_ACCOUNT} when there is none. Key names are
built inside the scripts, so the store needs one Redis server (with replicas
or Sentinel if wanted), not Redis Cluster. The key layout is described in
L{jangotw.store.redis}.

Lua numbers are doubles: counters stay exact up to 2**53, and are written back
with C{%.0f} so they never turn into C{1e+15}. Floats that must survive
exactly (times) travel as Python C{repr} strings and are never turned into Lua
numbers.
"""
from __future__ import annotations

import hashlib

from attrs import field, frozen

__all__ = [
    "Script", "account_script", "NO_ACCOUNT",
    "ADD_ACCOUNT", "GET_ACCOUNT", "LIST_ACCOUNTS", "UPDATE_ACCOUNT", "ON_ACCOUNT",
    "ADD_IP", "REMOVE_IP", "ACCOUNTS_FOR_IP", "ADD_FROM", "REMOVE_FROM", "ACCOUNTS_FOR_FROM",
    "SUPPRESS", "RECORD_SEND", "CHARGE", "RECORD_LINKS", "RECORD_EVENT",
]

NO_ACCOUNT = "JT_NO_ACCOUNT"


@frozen
class Script:
    """A Lua script and the SHA1 digest C{EVALSHA} knows it by."""

    name: str
    source: str
    sha: str = field(init=False)

    @sha.default
    def _digest(self) -> str:
        return hashlib.sha1(self.source.encode("utf-8")).hexdigest()


# Helpers every script starts with. An account row is
# {id, name, disabled ("0"/"1"), created, password_hash or nil, {settings key, JSON value, ...}}.
_PRELUDE = """
local P = ARGV[1]
local function require_account(lower)
  local id = redis.call('HGET', P .. 'account:names', lower)
  if not id then
    error({err = '""" + NO_ACCOUNT + """ no such account'})
  end
  return id
end
local function account_row(id)
  local key = P .. 'account:' .. id
  local fields = redis.call('HMGET', key, 'name', 'disabled', 'created', 'password_hash')
  return {id, fields[1], fields[2], fields[3], fields[4], redis.call('HGETALL', key .. ':settings')}
end
local function enabled_rows(order, tags)
  local found = {}
  for _, id in ipairs(order) do
    local row = account_row(id)
    if row[3] == '0' then
      table.insert(found, {tags[id], row})
    end
  end
  return found
end
"""


def account_script(name: str, body: str) -> Script:
    """A script that starts with the helpers above (C{P}, C{require_account}, C{account_row},
    C{enabled_rows}); the store's mixins (contact lists, credentials, import) build theirs with it too."""
    return Script(name, _PRELUDE + body)


_script = account_script


# ARGV: prefix, lower name, name, created, "1" if there is a password hash, the hash.
# Returns {1, new id} or {0, the existing account's name}.
ADD_ACCOUNT = _script("add_account", """
local existing = redis.call('HGET', P .. 'account:names', ARGV[2])
if existing then
  return {0, redis.call('HGET', P .. 'account:' .. existing, 'name')}
end
local id = redis.call('INCR', P .. 'account:next-id')
local key = P .. 'account:' .. id
redis.call('HSET', key, 'name', ARGV[3], 'disabled', '0', 'created', ARGV[4])
if ARGV[5] == '1' then
  redis.call('HSET', key, 'password_hash', ARGV[6])
end
redis.call('HSET', P .. 'account:names', ARGV[2], id)
return {1, id}
""")

# ARGV: prefix, lower name. Returns an account row or nil.
GET_ACCOUNT = _script("get_account", """
local id = redis.call('HGET', P .. 'account:names', ARGV[2])
if not id then
  return false
end
return account_row(id)
""")

# ARGV: prefix. Returns every account row, unordered.
LIST_ACCOUNTS = _script("list_accounts", """
local rows = {}
for _, id in ipairs(redis.call('HVALS', P .. 'account:names')) do
  table.insert(rows, account_row(id))
end
return rows
""")

# ARGV: prefix, lower name, key suffix ("" for the account hash, "settings"), field, value.
# Returns the changed account's row.
UPDATE_ACCOUNT = _script("update_account", """
local id = require_account(ARGV[2])
local key = P .. 'account:' .. id
if ARGV[3] ~= '' then
  key = key .. ':' .. ARGV[3]
end
redis.call('HSET', key, ARGV[4], ARGV[5])
return account_row(id)
""")

# ARGV: prefix, lower name, command, key suffix, arguments...
# Runs one command on the account's key P..'account:'..id..':'..suffix and returns its reply.
ON_ACCOUNT = _script("on_account", """
local id = require_account(ARGV[2])
return redis.call(ARGV[3], P .. 'account:' .. id .. ':' .. ARGV[4], unpack(ARGV, 5))
""")

# ARGV: prefix, lower name, start (32 hex digits), prefix length, member of the account's list.
ADD_IP = _script("add_ip", """
local id = require_account(ARGV[2])
if redis.call('ZADD', P .. 'account:' .. id .. ':networks', 'NX', 0, ARGV[5]) == 1 then
  redis.call('SADD', P .. 'net:' .. ARGV[3] .. '/' .. ARGV[4], id)
  redis.call('HINCRBY', P .. 'net:lengths', ARGV[4], 1)
end
return 0
""")

# ARGV: as ADD_IP. Returns 1 if the network was there.
REMOVE_IP = _script("remove_ip", """
local id = require_account(ARGV[2])
if redis.call('ZREM', P .. 'account:' .. id .. ':networks', ARGV[5]) == 0 then
  return 0
end
redis.call('SREM', P .. 'net:' .. ARGV[3] .. '/' .. ARGV[4], id)
if redis.call('HINCRBY', P .. 'net:lengths', ARGV[4], -1) <= 0 then
  redis.call('HDEL', P .. 'net:lengths', ARGV[4])
end
return 1
""")

# ARGV: prefix, address (32 hex digits). For every prefix length some network has, looks up the one
# network of that length that can contain the address: as many set lookups as there are distinct
# lengths (at most 129), however many accounts and networks there are.
# Returns {{longest prefix length, account row}, ...} for enabled accounts.
ACCOUNTS_FOR_IP = _script("accounts_for_ip", """
local address = ARGV[2]
local function masked(length)
  local whole = math.floor(length / 4)
  local bits = length % 4
  local start = string.sub(address, 1, whole)
  if bits > 0 then
    local digit = tonumber(string.sub(address, whole + 1, whole + 1), 16)
    start = start .. string.format('%x', bit.band(digit, 16 - 2 ^ (4 - bits)))
    whole = whole + 1
  end
  return start .. string.rep('0', 32 - whole)
end
local longest, order = {}, {}
for _, text in ipairs(redis.call('HKEYS', P .. 'net:lengths')) do
  local length = tonumber(text)
  for _, id in ipairs(redis.call('SMEMBERS', P .. 'net:' .. masked(length) .. '/' .. text)) do
    if longest[id] == nil then
      table.insert(order, id)
      longest[id] = length
    elseif length > longest[id] then
      longest[id] = length
    end
  end
end
return enabled_rows(order, longest)
""")

# ARGV: prefix, lower name, lower-cased address or @domain.
ADD_FROM = _script("add_from", """
local id = require_account(ARGV[2])
redis.call('SADD', P .. 'account:' .. id .. ':from', ARGV[3])
redis.call('SADD', P .. 'from:' .. ARGV[3], id)
return 0
""")

# ARGV: as ADD_FROM. Returns 1 if it was there.
REMOVE_FROM = _script("remove_from", """
local id = require_account(ARGV[2])
redis.call('SREM', P .. 'from:' .. ARGV[3], id)
return redis.call('SREM', P .. 'account:' .. id .. ':from', ARGV[3])
""")

# ARGV: prefix, lower-cased address, its @domain. Returns {{1 if exact else 0, account row}, ...}
# for enabled accounts authorising either.
ACCOUNTS_FOR_FROM = _script("accounts_for_from", """
local exact, order = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'from:' .. ARGV[2])) do
  exact[id] = 1
  table.insert(order, id)
end
for _, id in ipairs(redis.call('SMEMBERS', P .. 'from:' .. ARGV[3])) do
  if exact[id] == nil then
    exact[id] = 0
    table.insert(order, id)
  end
end
return enabled_rows(order, exact)
""")

# ARGV: prefix, lower name, list name, lower-cased address, address as given, reason, created.
# An entry is JSON ["created", "address", "reason"]; adding again keeps the first created.
# Returns 1 if the entry is new.
SUPPRESS = _script("suppress", """
local id = require_account(ARGV[2])
local key = P .. 'account:' .. id .. ':list:' .. ARGV[3]
local created = ARGV[7]
local old = redis.call('HGET', key, ARGV[4])
if old then
  created = cjson.decode(old)[1]
end
redis.call('HSET', key, ARGV[4], cjson.encode({created, ARGV[5], ARGV[6]}))
if old then
  return 0
end
return 1
""")

# ARGV: prefix, lower name, message id, time to live (seconds), at, recipients...
# Each recipient's field (its index) holds JSON ["account as stored", "recipient", "at"].
RECORD_SEND = _script("record_send", """
local id = require_account(ARGV[2])
local name = redis.call('HGET', P .. 'account:' .. id, 'name')
local key = P .. 'send:' .. ARGV[3]
for index = 6, #ARGV do
  redis.call('HSET', key, tostring(index - 6), cjson.encode({name, ARGV[index], ARGV[5]}))
end
if #ARGV >= 6 then
  redis.call('EXPIRE', key, ARGV[4])
end
return 0
""")

# ARGV: prefix, lower name, month, messages, bytes, message limit, byte limit (0: none),
# "1" if overage is allowed. The check and the increment are one atomic step, so charges
# made at once by any number of nodes never pass a limit together.
# Returns {1 if charged else 0, messages, bytes, overage messages, overage bytes} as decimal text.
CHARGE = _script("charge", """
local id = require_account(ARGV[2])
local key = P .. 'account:' .. id .. ':usage:' .. ARGV[3]
local function whole(value)
  return string.format('%.0f', value)
end
local now = redis.call('HMGET', key, 'messages', 'bytes', 'overage_messages', 'overage_bytes')
for index = 1, 4 do
  now[index] = tonumber(now[index]) or 0
end
local messages = now[1] + tonumber(ARGV[4])
local size = now[2] + tonumber(ARGV[5])
local max_messages, max_bytes = tonumber(ARGV[6]), tonumber(ARGV[7])
local over_messages, over_bytes = 0, 0
if max_messages ~= 0 then
  over_messages = math.max(0, messages - max_messages)
end
if max_bytes ~= 0 then
  over_bytes = math.max(0, size - max_bytes)
end
if (over_messages > 0 or over_bytes > 0) and ARGV[8] ~= '1' then
  return {0, whole(now[1]), whole(now[2]), whole(now[3]), whole(now[4])}
end
redis.call('HSET', key, 'messages', whole(messages), 'bytes', whole(size),
           'overage_messages', whole(over_messages), 'overage_bytes', whole(over_bytes))
return {1, whole(messages), whole(size), whole(over_messages), whole(over_bytes)}
""")

# ARGV: prefix, message id, time to live (seconds), urls...
RECORD_LINKS = _script("record_links", """
local key = P .. 'links:' .. ARGV[2]
for index = 4, #ARGV do
  redis.call('HSET', key, tostring(index - 4), ARGV[index])
end
if #ARGV >= 4 then
  redis.call('EXPIRE', key, ARGV[3])
end
return 0
""")

# ARGV: prefix, lower name, kind, message id, time to live of the message's counters (seconds).
RECORD_EVENT = _script("record_event", """
local id = require_account(ARGV[2])
local key = P .. 'account:' .. id .. ':events'
redis.call('HINCRBY', key, ARGV[3], 1)
redis.call('HINCRBY', key .. ':' .. ARGV[4], ARGV[3], 1)
redis.call('EXPIRE', key .. ':' .. ARGV[4], ARGV[5])
return 0
""")
