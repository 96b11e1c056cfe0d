#!lua name=rankd
--[[
rankd's server-side function library (Redis >= 7.0 / Valkey). One board = one hash tag, so every
function touches the keys of one slot only, and every key is declared in KEYS (ElastiCache
rejects undeclared keys). Board keys, in this order (service/backend/redis/keys.py):

  z    ZSET  all scores 0, members = store/sortkey.py keys  NUM(10) | SEQ(6, ties=first) | MEMBER | TYPE(1)
  m    HASH  member -> its current sort key
  d    HASH  member -> metadata JSON
  cfg  HASH  order, ties, update, seq, epoch
  ev   shard channel (SPUBLISH)

Equal ZSET scores order members by memcmp, so ZRANK + 1 is rankd's rank on both orders (NUM is
negated on desc boards by the caller). Ranks in replies are 1-based; 0 means "none".

NUM is 8 bytes of float(v) made sortable (sign bit flipped for positives, all bits for negatives)
and 2 bytes of v - int(float(v)) + 2^15 (nonzero only for ints beyond 2^53). Lua numbers are
doubles, so an int64 is handled as hi * 2^32 + lo, each half exact; see add().
Byte comparisons use string.byte loops, never Lua's "<" on strings (strcoll: locale-dependent).
All numbers go back to Redis through itoa(): redis.call() formats a Lua number with %.14g, which
turns seq 10^15 into "1e+15".
]]

local TWO32 = 4294967296
local LIMIT = 9223372036854775808 -- 2^63: any magnitude reaching it is refused (store/values.py)
local SEQ_LIMIT = 281474976710656 -- 2^48: SEQ is 6 bytes

local function itoa(n)
  return string.format('%d', n)
end

-- 10 NUM bytes -> f = float(v) and corr = v - int(f) (0 for floats)
local function num_decode(num)
  local b = { string.byte(num, 1, 8) }
  if b[1] >= 128 then
    b[1] = b[1] - 128
  else
    for i = 1, 8 do b[i] = 255 - b[i] end
  end
  local f = struct.unpack('>d', string.char(unpack(b)))
  local c1, c2 = string.byte(num, 9, 10)
  return f, c1 * 256 + c2 - 32768
end

local function num_encode(f, corr)
  f = f + 0.0 -- -0.0 + 0.0 is +0.0: a zero must have one encoding
  local b = { string.byte(struct.pack('>d', f), 1, 8) }
  if b[1] >= 128 then
    for i = 1, 8 do b[i] = 255 - b[i] end
  else
    b[1] = b[1] + 128
  end
  local c = corr + 32768
  b[9] = math.floor(c / 256)
  b[10] = c % 256
  return string.char(unpack(b))
end

-- memcmp(a, b, 10) < 0
local function num_less(a, b)
  for i = 1, 10 do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return false
end

-- the int f + corr as hi * 2^32 + lo, 0 <= lo < 2^32; f is integral, |f| <= 2^63: all exact
local function int_split(f, corr)
  local hi = math.floor(f / TWO32)
  local lo = f - hi * TWO32 + corr
  if lo < 0 then
    lo = lo + TWO32
    hi = hi - 1
  elseif lo >= TWO32 then
    lo = lo - TWO32
    hi = hi + 1
  end
  return hi, lo
end

--[[ old + delta in stored space (both already negated on desc boards), as Python computes it:
int + int is exact; anything with a float is float(old) + float(delta), and f IS float(v).
Returns NUM, TYPE (0 int / 1 float), or nil when |total| would reach 2^63. ]]
local function add(onum, otype, dnum, dtype)
  local of, oc = num_decode(onum)
  local df, dc = num_decode(dnum)
  if otype == 1 or dtype == 1 then
    local t = of + df
    if t >= LIMIT or t <= -LIMIT then return nil end
    return num_encode(t, 0), 1
  end
  local ohi, olo = int_split(of, oc)
  local dhi, dlo = int_split(df, dc)
  local hi, lo = ohi + dhi, olo + dlo
  if lo >= TWO32 then
    lo = lo - TWO32
    hi = hi + 1
  end
  -- -2^63 < total < 2^63  <=>  -2^31 <= hi < 2^31, and not (hi = -2^31 and lo = 0)
  if hi >= 2147483648 or hi < -2147483648 or (hi == -2147483648 and lo == 0) then
    return nil
  end
  -- hi * 2^32 is exact, "+ lo" is one IEEE rounding (ties to even) = Python's float(int)
  local f = hi * TWO32 + lo
  local fhi = math.floor(f / TWO32)
  local corr = (hi - fhi) * TWO32 + (lo - (f - fhi * TWO32))
  return num_encode(f, corr), 0
end

local function seq6(seq)
  local b = {}
  for i = 6, 1, -1 do
    b[i] = seq % 256
    seq = math.floor(seq / 256)
  end
  return string.char(unpack(b))
end

local function key_member(key, first)
  return string.sub(key, first and 17 or 11, -2)
end

local function stale(order, ties)
  return redis.error_reply('STALECONFIG ' .. order .. ' ' .. ties)
end

-- a board with windows, a ranking or bounds (cfg "opts") is served by the rankd_x* functions
-- at the end of this file; these answer "OPTS" for it and change nothing
local function has_opts(cfg)
  return redis.call('HEXISTS', cfg, 'opts') == 1
end

local function opts_error()
  return redis.error_reply('OPTS')
end

local function need_keys(keys, n)
  if #keys ~= n then error('rankd: expected ' .. n .. ' keys, got ' .. #keys) end
end

--[[ Idempotency (a write retried after an ambiguous failure applies once)
  iz   ZSET  P:{B}:iz  idempotency id -> when it may be forgotten (ms, the shard's TIME)
  ih   HASH  P:{B}:ih  idempotency id -> fp (32 hex chars) .. cmsgpack(first reply)
An id is "r" + 32 random hex chars drawn by rankd per request (its own retry after a
connection error or a failover), or "c" + 32 hex chars of SHA-256(members, client key) for an
Idempotency-Key header. rankd's own ids are recorded only where a repeat would not be a no-op:
on sum and latest boards (re-applying a best score changes nothing). Kept IDEM_TTL_MS, and at
most IDEM_MAX per board (the oldest are forgotten first); trimming is bounded per call. Both
keys expire with the last id, so a quiet board keeps no trace. The records are written by the
same function call as the write, so they replicate (and survive a failover) with it. ]]
local IDEM_TTL_MS = 300000
local IDEM_MAX = 100000
local IDEM_TRIM = 64

local function idem_wanted(id, update)
  if id == '' then return nil end
  if string.sub(id, 1, 1) == 'r' and update == 'best' then return nil end
  return id
end

-- the first reply recorded under id (the caller adjusts it), error IDEMMISMATCH, or nil
local function idem_seen(ih, id, fp)
  local found = redis.call('HGET', ih, id)
  if not found then return nil end
  if string.sub(found, 1, 32) ~= fp then return redis.error_reply('IDEMMISMATCH') end
  -- rewrite it: a replayed reply is a write too, so a WAIT after it on this connection waits
  -- for a replication offset past the first application, not for nothing
  redis.call('HSET', ih, id, found)
  return cmsgpack.unpack(string.sub(found, 33))
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function idem_record(iz, ih, id, fp, reply)
  local now = now_ms()
  local old = redis.call('ZRANGEBYSCORE', iz, '-inf', itoa(now), 'LIMIT', '0', itoa(IDEM_TRIM))
  local over = redis.call('ZCARD', iz) - #old - IDEM_MAX + 1
  if over > 0 then
    for _, v in ipairs(redis.call('ZRANGE', iz, itoa(#old), itoa(#old + math.min(over, IDEM_TRIM) - 1))) do
      old[#old + 1] = v
    end
  end
  if #old > 0 then
    redis.call('ZREM', iz, unpack(old))
    redis.call('HDEL', ih, unpack(old))
  end
  local until_ms = now + IDEM_TTL_MS
  redis.call('ZADD', iz, itoa(until_ms), id)
  redis.call('HSET', ih, id, fp .. cmsgpack.pack(reply))
  redis.call('PEXPIREAT', iz, itoa(until_ms))
  redis.call('PEXPIREAT', ih, itoa(until_ms))
end

--[[ rankd_write  KEYS z m d cfg ev iz ih
ARGV order ties publish(0/1) epoch create(0/1) idem fp, then per item: member NUM(10, stored
space) TYPE(0/1) meta (meta = metadata JSON, "" = none). Applies the items in order under the
board's update rule, all or nothing: pass 1 decides every item against a shadow of the board (a
batch may repeat a member) without writing; an error leaves the board untouched.
create = 0: an absent board is not created (error NOBOARD: the caller admits it under
--max-boards first). idem = "" or the write's idempotency id (see "Idempotency" below), fp the
request's fingerprint.
Errors: "STALECONFIG <order> <ties>" (the caller's order/ties differ from the board's: re-read,
re-encode, retry), "RANGE <i>" (item i, 0-based, would bring a sum to magnitude 2^63),
"NOBOARD", "IDEMMISMATCH" (an idempotency id seen with another request).
Reply: created(0/1), seq, then per item: changed(0/1), rank, prev_rank(0 = new), key, old_key
("" = new). Unchanged items: rank = prev_rank and key = old_key. A repeated idempotency id gets
the reply of its first application back (created 0), and nothing is written. ]]
local function write(keys, args)
  need_keys(keys, 7)
  local H = 7
  local n = (#args - H) / 4
  if n < 1 or n ~= math.floor(n) then error('rankd_write: bad argument count ' .. #args) end
  local c = redis.call('HMGET', keys[4], 'order', 'ties', 'update', 'seq', 'opts')
  if c[5] then return opts_error() end -- the hot path: the guard rides on this HMGET
  local created = 0
  if not c[1] then
    if args[5] ~= '1' then return redis.error_reply('NOBOARD') end
    -- what POST score does on an unknown board: create it with the defaults
    if args[1] ~= 'desc' or args[2] ~= 'first' then return stale('desc', 'first') end
    c = { 'desc', 'first', 'best', '0' }
    created = 1 -- written after pass 1: a refused write must not leave a new board behind
  elseif c[1] ~= args[1] or c[2] ~= args[2] then
    return stale(c[1], c[2])
  end
  local idem = idem_wanted(args[6], c[3])
  if idem then
    local seen = idem_seen(keys[7], idem, args[7])
    if seen then
      if not seen.err then seen[1] = 0 end -- created: a replay creates nothing
      return seen
    end
  end
  local first, update = c[2] == 'first', c[3]

  -- pass 1: decide, no writes
  local shadow, plan, changes = {}, {}, 0
  for i = 0, n - 1 do
    local member, num, typ = args[H + 1 + 4 * i], args[H + 2 + 4 * i], args[H + 3 + 4 * i]
    if #num ~= 10 or (typ ~= '0' and typ ~= '1') or member == '' then
      error('rankd_write: malformed item ' .. i)
    end
    typ = tonumber(typ)
    local old = shadow[member]
    if old == nil then old = redis.call('HGET', keys[2], member) end
    local newnum, newtype = num, typ
    if old then
      local onum, otype = string.sub(old, 1, 10), string.byte(old, -1)
      if update == 'best' then
        if not num_less(num, onum) then newnum, newtype = onum, otype end
      elseif update == 'sum' then
        newnum, newtype = add(onum, otype, num, typ)
        if not newnum then return redis.error_reply('RANGE ' .. i) end
      end
      if newnum == onum then -- numerically equal: no change at all, not even tie order
        newnum, newtype = nil, nil
      end
    end
    if newnum then
      changes = changes + 1
      shadow[member] = newnum .. string.char(newtype)
    else
      shadow[member] = old
    end
    plan[i + 1] = { member, newnum, newtype, args[H + 4 + 4 * i] }
  end

  local seq = tonumber(c[4])
  if seq + changes >= SEQ_LIMIT then error('rankd_write: board write counter exhausted') end

  -- pass 2: apply in order; nothing below can fail, so a batch is never half-applied
  if created == 1 then
    redis.call('HSET', keys[4], 'order', 'desc', 'ties', 'first', 'update', 'best', 'seq', '0',
      'epoch', args[4])
  end
  local publish = args[3] == '1'
  local out = { created, 0 }
  for i = 1, n do
    local member, newnum, newtype, meta = plan[i][1], plan[i][2], plan[i][3], plan[i][4]
    local old = redis.call('HGET', keys[2], member)
    if not newnum then
      local r = redis.call('ZRANK', keys[1], old) + 1
      out[#out + 1] = 0
      out[#out + 1] = r
      out[#out + 1] = r
      out[#out + 1] = old
      out[#out + 1] = old
    else
      local prev = 0
      if old then
        prev = redis.call('ZRANK', keys[1], old) + 1
        redis.call('ZREM', keys[1], old)
      end
      seq = seq + 1
      local key
      if first then
        key = newnum .. seq6(seq) .. member .. string.char(newtype)
      else
        key = newnum .. member .. string.char(newtype)
      end
      redis.call('ZADD', keys[1], '0', key)
      redis.call('HSET', keys[2], member, key)
      if meta ~= '' then redis.call('HSET', keys[3], member, meta) end
      local r = redis.call('ZRANK', keys[1], key) + 1
      if publish then
        redis.call('SPUBLISH', keys[5],
          'set ' .. itoa(seq) .. ' ' .. itoa(r) .. ' ' .. itoa(prev) .. ' ' .. member)
      end
      out[#out + 1] = 1
      out[#out + 1] = r
      out[#out + 1] = prev
      out[#out + 1] = key
      out[#out + 1] = old or ''
    end
  end
  if seq ~= tonumber(c[4]) then redis.call('HSET', keys[4], 'seq', itoa(seq)) end
  out[2] = seq
  if idem then idem_record(keys[6], keys[7], idem, args[7], out) end
  return out
end

--[[ rankd_remove  KEYS z m d cfg ev   ARGV member publish(0/1)
Reply: nil when the member is absent, else {seq, prev_rank, old_key}. rankd bumps seq on
delete too, so a subscriber sees every mutation as seq + 1. ]]
local function remove(keys, args)
  need_keys(keys, 5)
  if has_opts(keys[4]) then return opts_error() end
  local old = redis.call('HGET', keys[2], args[1])
  if not old then return false end
  local r = redis.call('ZRANK', keys[1], old) + 1
  redis.call('ZREM', keys[1], old)
  redis.call('HDEL', keys[2], args[1])
  redis.call('HDEL', keys[3], args[1])
  local seq = redis.call('HINCRBY', keys[4], 'seq', 1)
  if args[2] == '1' then
    redis.call('SPUBLISH', keys[5], 'del ' .. itoa(seq) .. ' ' .. itoa(r) .. ' ' .. args[1])
  end
  return { seq, r, old }
end

--[[ rankd_configure  KEYS z cfg   ARGV order update ties epoch player_writes(0/1) player_rate
public_read(0/1) create(0/1)
Creates the board or changes its options; order/ties may change only while it is empty.
Error "CONFLICT <order> <ties>" otherwise, "NOBOARD" when the board is absent and create = 0
(the caller admits it under --max-boards first). The player policy (store/boards.py _POLICY) is
kept in cfg as pw, pr, pub; a board created by a write has none of them: the defaults (0, 60, 0).
Reply: {created(0/1), order, update, ties, seq, epoch}. ]]
local function configure(keys, args)
  need_keys(keys, 2)
  if has_opts(keys[2]) then return opts_error() end
  if #args ~= 8 then error('rankd_configure: expected 8 arguments, got ' .. #args) end
  local c = redis.call('HMGET', keys[2], 'order', 'ties')
  local created = 0
  if not c[1] then
    if args[8] ~= '1' then return redis.error_reply('NOBOARD') end
    created = 1
    redis.call('HSET', keys[2], 'seq', '0', 'epoch', args[4])
  elseif (c[1] ~= args[1] or c[2] ~= args[3]) and redis.call('ZCARD', keys[1]) > 0 then
    return redis.error_reply('CONFLICT ' .. c[1] .. ' ' .. c[2])
  end
  redis.call('HSET', keys[2], 'order', args[1], 'update', args[2], 'ties', args[3],
    'pw', args[5], 'pr', args[6], 'pub', args[7])
  local r = redis.call('HMGET', keys[2], 'seq', 'epoch')
  return { created, args[1], args[2], args[3], tonumber(r[1]), r[2] }
end

--[[ rankd_drop  KEYS z m d cfg ev iz ih   ARGV publish(0/1)
UNLINK, never DEL: a 200 MB ZSET is freed off the main thread. The idempotency records go too:
a board created again under the name must not answer its writes from the old one's.
Reply: 1 dropped, 0 absent. ]]
local function drop(keys, args)
  need_keys(keys, 7)
  if has_opts(keys[4]) then return opts_error() end
  if redis.call('EXISTS', keys[4]) == 0 then return 0 end
  redis.call('UNLINK', keys[1], keys[2], keys[3], keys[4], keys[6], keys[7])
  if args[1] == '1' then redis.call('SPUBLISH', keys[5], 'drop') end
  return 1
end

--[[ rankd_admit_board  KEYS registry   ARGV board max
--max-boards on the cluster: the registry (P:boards, one slot) is the count. A board already
listed is admitted; else, below max, it is listed now (before it is created, so two processes
creating boards at once cannot both pass the last place). Error "FULL <n>" at the cap.
Reply: 1. ]]
local function admit_board(keys, args)
  need_keys(keys, 1)
  if redis.call('ZSCORE', keys[1], args[1]) then return 1 end
  local n = redis.call('ZCARD', keys[1])
  if n >= tonumber(args[2]) then return redis.error_reply('FULL ' .. itoa(n)) end
  redis.call('ZADD', keys[1], '0', args[1])
  return 1
end

--[[ rankd_describe (read-only)  KEYS z cfg
Reply: nil when absent, else {order, update, ties, seq, epoch, total, pw, pr, pub} (the policy
fields false where never configured). ]]
local function describe(keys, args)
  need_keys(keys, 2)
  local c = redis.call('HMGET', keys[2], 'order', 'update', 'ties', 'seq', 'epoch', 'pw', 'pr',
    'pub')
  if not c[1] then return false end
  return { c[1], c[2], c[3], tonumber(c[4]), c[5], redis.call('ZCARD', keys[1]), c[6], c[7],
    c[8] }
end

local function metas(d, list, first)
  if #list == 0 or redis.call('EXISTS', d) == 0 then return {} end
  local members = {}
  for i = 1, #list do members[i] = key_member(list[i], first) end
  return redis.call('HMGET', d, unpack(members))
end

--[[ rankd_top (read-only)  KEYS z d cfg   ARGV offset(0-based) limit
Reply: nil when the board is absent, else {order, ties, seq, total, {key...}, {meta | nil ...}}:
ranks offset+1 .. offset+limit, one snapshot ({} for the metadata when the board has none).
Every read returns order and ties, so the caller decodes keys by the board, not by a cache. ]]
local function top(keys, args)
  need_keys(keys, 3)
  if has_opts(keys[3]) then return opts_error() end
  local c = redis.call('HMGET', keys[3], 'order', 'ties', 'seq')
  if not c[1] then return false end
  local off, lim = tonumber(args[1]), tonumber(args[2])
  local list = {}
  if lim > 0 then list = redis.call('ZRANGE', keys[1], itoa(off), itoa(off + lim - 1)) end
  return { c[1], c[2], tonumber(c[3]), redis.call('ZCARD', keys[1]), list,
    metas(keys[2], list, c[2] == 'first') }
end

--[[ rankd_entry (read-only)  KEYS z m d cfg   ARGV member
Reply: nil when the board is absent, {} when the member is, else {order, ties, rank, key, meta}. ]]
local function entry(keys, args)
  need_keys(keys, 4)
  if has_opts(keys[4]) then return opts_error() end
  local c = redis.call('HMGET', keys[4], 'order', 'ties')
  if not c[1] then return false end
  local key = redis.call('HGET', keys[2], args[1])
  if not key then return {} end
  return { c[1], c[2], redis.call('ZRANK', keys[1], key) + 1, key,
    redis.call('HGET', keys[3], args[1]) }
end

--[[ rankd_around (read-only)  KEYS z m d cfg   ARGV member radius
Up to radius entries on each side of member, member included. Reply: nil when the board is
absent, {} when the member is, else {order, ties, first_rank, {key...}, {meta | nil ...}}. ]]
local function around(keys, args)
  need_keys(keys, 4)
  if has_opts(keys[4]) then return opts_error() end
  local c = redis.call('HMGET', keys[4], 'order', 'ties')
  if not c[1] then return false end
  local key = redis.call('HGET', keys[2], args[1])
  if not key then return {} end
  local pos, radius = redis.call('ZRANK', keys[1], key), tonumber(args[2])
  local lo = math.max(0, pos - radius)
  local list = redis.call('ZRANGE', keys[1], itoa(lo), itoa(pos + radius))
  return { c[1], c[2], lo + 1, list, metas(keys[3], list, c[2] == 'first') }
end

--[[ rankd_rank_for_score (read-only)  KEYS z cfg   ARGV order ties NUM(10, stored space)
The rank a newcomer posting that score now would get: ties=first puts it behind everyone
already at the score (probe NUM | SEQ(seq + 1)), ties=member gives the best rank among equals
(the bare NUM sorts before every key that starts with it).
Reply: rank; nil when the board is absent; error STALECONFIG as rankd_write. ]]
local function rank_for_score(keys, args)
  need_keys(keys, 2)
  if has_opts(keys[2]) then return opts_error() end
  local c = redis.call('HMGET', keys[2], 'order', 'ties', 'seq')
  if not c[1] then return false end
  if c[1] ~= args[1] or c[2] ~= args[2] then return stale(c[1], c[2]) end
  local probe = args[3]
  if c[2] == 'first' then probe = probe .. seq6(tonumber(c[3]) + 1) end
  return redis.call('ZLEXCOUNT', keys[1], '-', '(' .. probe) + 1
end

--[[ rankd_view (read-only)  KEYS z m d cfg   ARGV top(n), count(m), m members, then pairs
(member, radius)
What the WebSocket hub shows, in one call per board per flush: the top n, each member's place,
and the entries within radius ranks of each pair's member (its around-me views).
Reply: nil when the board is absent, else {order, ties, seq, total, epoch, {key...}, {meta...},
{key_1 or false, rank_1, key_2 or false, rank_2, ...} (rank 0 = absent),
{{rank or 0, first_rank, {key...}, {meta...}} per pair}}. ]]
local function view(keys, args)
  need_keys(keys, 4)
  if has_opts(keys[4]) then return opts_error() end
  local c = redis.call('HMGET', keys[4], 'order', 'ties', 'seq', 'epoch')
  if not c[1] then return false end
  local first = c[2] == 'first'
  local lim = tonumber(args[1])
  local count = tonumber(args[2])
  local list = {}
  if lim > 0 then list = redis.call('ZRANGE', keys[1], '0', itoa(lim - 1)) end
  local places = {}
  for i = 3, 2 + count do
    local key = redis.call('HGET', keys[2], args[i])
    if key then
      places[#places + 1] = key
      places[#places + 1] = redis.call('ZRANK', keys[1], key) + 1
    else
      places[#places + 1] = false
      places[#places + 1] = 0
    end
  end
  local near = {}
  for i = 3 + count, #args - 1, 2 do
    local key = redis.call('HGET', keys[2], args[i])
    if key then
      local pos, radius = redis.call('ZRANK', keys[1], key), tonumber(args[i + 1])
      local lo = math.max(0, pos - radius)
      local around = redis.call('ZRANGE', keys[1], itoa(lo), itoa(pos + radius))
      near[#near + 1] = { pos + 1, lo + 1, around, metas(keys[3], around, first) }
    else
      near[#near + 1] = { 0, 0, {}, {} }
    end
  end
  return { c[1], c[2], tonumber(c[3]), redis.call('ZCARD', keys[1]), c[4], list,
    metas(keys[3], list, first), places, near }
end

--[[ Sessions (service/backend/redis/sessions.py). One bucket T = one slot:
  s    HASH  u (user, absent = anonymous) data c(created) ttl idle max v(version)   PEXPIREAT = expiry
  x    ZSET  the bucket's user index: "<id> <user>" -> expires_at (seconds, float); an id has no
             space, so the first space splits the member
  e    STRING  P:e:{T}:<digest(id)>: this id was used here. Written by create and rotate (for
             the new id) with PEXPIRE = lifetime + max_ttl and never shortened, so it outlives
             every way the session can end (deleted, rotated, revoked, evicted, expired -- Redis
             expires keys silently) by at least --session-max-ttl: create-with-id finds it and
             answers "ended" (410). The ending functions need not write anything.
  sev  shard channel: "rotated <id>", "deleted <id>", "revoked <id>", "evicted <id>"
Times are the shard's TIME in seconds (6 decimals), so instances' clocks never decide expiry.
A session whose expires_at <= now is dead at once, whether or not Redis has evicted it yet.
Session replies: {user or false, data, created, ttl, idle, max, version}. ]]

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(x)
  return string.format('%.6f', x)
end

local function pexpireat(key, at)
  redis.call('PEXPIREAT', key, string.format('%d', math.ceil(at * 1000)))
end

local function check_id(sid)
  if #sid < 32 or #sid > 128 or string.find(sid, ' ', 1, true) then
    error('rankd: bad session id')
  end
end

-- "<id> <user>" -> id, user
local function split_member(m)
  local at = string.find(m, ' ', 1, true)
  return string.sub(m, 1, at - 1), string.sub(m, at + 1)
end

-- drop dead index entries and keep the index key alive exactly as long as its last entry
local function index_fix(x, now)
  redis.call('ZREMRANGEBYSCORE', x, '-inf', fmt(now))
  local last = redis.call('ZRANGE', x, '-1', '-1', 'WITHSCORES')
  if #last == 2 then pexpireat(x, tonumber(last[2])) end
end

local function s_load(s, now)
  local f = redis.call('HMGET', s, 'u', 'data', 'c', 'ttl', 'idle', 'max', 'v')
  if not f[3] then return nil end
  local idle, max = tonumber(f[5]), tonumber(f[6])
  if math.min(idle, max) <= now then return nil end
  return { f[1] or false, f[2], f[3], f[4], idle, max, tonumber(f[7]) }
end

local function s_reply(r)
  return { r[1], r[2], r[3], r[4], fmt(r[5]), fmt(r[6]), r[7] }
end

-- a use: push the idle deadline (never shorten it), move the expiry and the index score
local function s_touch(s, x, sid, r, now)
  local idle = now + tonumber(r[4])
  if idle > r[5] then
    r[5] = idle
    redis.call('HSET', s, 'idle', fmt(idle))
    local exp = math.min(idle, r[6])
    pexpireat(s, exp)
    if r[1] then
      redis.call('ZADD', x, 'XX', fmt(exp), sid .. ' ' .. r[1])
      index_fix(x, now)
    end
  end
end

local function user_ids(x, user, now)
  index_fix(x, now)
  local ids = {}
  for _, m in ipairs(redis.call('ZRANGE', x, '0', '-1')) do
    local sid, u = split_member(m)
    if u == user then ids[#ids + 1] = sid end
  end
  return ids
end

--[[ rankd_s_create  KEYS s x e sev, then s_1..s_n
ARGV id user("" = none) data ttl lifetime per_user_limit policy(evict-oldest|refuse) max_ttl,
then id_1..id_n (the user's sessions, listed by the caller: what eviction may end)
Errors: "EXISTS" (the id is live here or was used here: SessionExists / SessionEnded is decided
by the caller with rankd_s_known), "LIMIT <n>" (the user holds per_user_limit live sessions and
the policy is refuse), "FULL" (the policy is evict-oldest and the caller did not declare every
session of the user: list them and call again). Reply: the session, then the evicted id or false.
An evicted session ends like any other: removed, unindexed, "evicted <id>" published. ]]
local function s_create(keys, args)
  local n = #keys - 4
  if n < 0 or #args ~= n + 8 then error('rankd_s_create: bad argument count') end
  local sid, user = args[1], args[2]
  check_id(sid)
  if redis.call('EXISTS', keys[1]) == 1 or redis.call('EXISTS', keys[3]) == 1 then
    return redis.error_reply('EXISTS')
  end
  local now = now_s()
  local ttl, life = tonumber(args[4]), tonumber(args[5])
  local idle, max = now + ttl, now + life
  local exp = math.min(idle, max)
  local evicted = false
  if user ~= '' then
    local ids = user_ids(keys[2], user, now)
    if #ids >= tonumber(args[6]) then
      if args[7] ~= 'evict-oldest' then return redis.error_reply('LIMIT ' .. #ids) end
      local declared = {}
      for i = 1, n do declared[args[8 + i]] = keys[4 + i] end
      local oldest, oldest_c, oldest_key = nil, nil, nil
      for _, id in ipairs(ids) do
        local key = declared[id]
        if not key then return redis.error_reply('FULL') end
        local r = s_load(key, now)
        if r and (not oldest or tonumber(r[3]) < oldest_c) then
          oldest, oldest_c, oldest_key = id, tonumber(r[3]), key
        end
      end
      if oldest then
        redis.call('UNLINK', oldest_key)
        redis.call('ZREM', keys[2], oldest .. ' ' .. user)
        redis.call('SPUBLISH', keys[4], 'evicted ' .. oldest)
        evicted = oldest
      end
    end
    redis.call('HSET', keys[1], 'u', user)
    redis.call('ZADD', keys[2], fmt(exp), sid .. ' ' .. user)
  end
  redis.call('HSET', keys[1], 'data', args[3], 'c', fmt(now), 'ttl', args[4], 'idle', fmt(idle),
    'max', fmt(max), 'v', '1')
  pexpireat(keys[1], exp)
  redis.call('SET', keys[3], '1', 'PX', string.format('%d', (life + tonumber(args[8])) * 1000))
  if user ~= '' then index_fix(keys[2], now) end
  return { user ~= '' and user or false, args[3], fmt(now), args[4], fmt(idle), fmt(max), 1,
    evicted }
end

--[[ rankd_s_known (read-only)  KEYS s e   Reply: 2 live, 1 used here and ended, 0 unknown. ]]
local function s_known(keys, args)
  need_keys(keys, 2)
  if s_load(keys[1], now_s()) then return 2 end
  return redis.call('EXISTS', keys[2])
end

--[[ rankd_s_get  KEYS s x   ARGV id touch(0/1)   Reply: the session or nil (absent/expired). ]]
local function s_get(keys, args)
  need_keys(keys, 2)
  local now = now_s()
  local r = s_load(keys[1], now)
  if not r then return false end
  if args[2] == '1' then s_touch(keys[1], keys[2], args[1], r, now) end
  return s_reply(r)
end

--[[ rankd_s_put  KEYS s x   ARGV id data expected_version
Compare-and-set: the data is replaced (version + 1, counts as a use) only if the session is at
expected_version; error "VERSION <v>" otherwise. nil when absent. ]]
local function s_put(keys, args)
  need_keys(keys, 2)
  local now = now_s()
  local r = s_load(keys[1], now)
  if not r then return false end
  if r[7] ~= tonumber(args[3]) then return redis.error_reply('VERSION ' .. r[7]) end
  r[2] = args[2]
  r[7] = r[7] + 1
  redis.call('HSET', keys[1], 'data', args[2], 'v', itoa(r[7]))
  s_touch(keys[1], keys[2], args[1], r, now)
  return s_reply(r)
end

--[[ rankd_s_rotate  KEYS s_old s_new x sev e_new   ARGV old_id new_id max_ttl
The session moves to a fresh id in the same bucket; the old id is dead at once (its e marker,
written when it was created, keeps it refused). Keeps user, data, version, created and max;
counts as a use. nil when absent; error "EXISTS". ]]
local function s_rotate(keys, args)
  need_keys(keys, 5)
  local now = now_s()
  local r = s_load(keys[1], now)
  if not r then return false end
  if redis.call('EXISTS', keys[2]) == 1 or redis.call('EXISTS', keys[5]) == 1 then
    return redis.error_reply('EXISTS')
  end
  local idle = math.max(r[5], now + tonumber(r[4]))
  local exp = math.min(idle, r[6])
  redis.call('HSET', keys[2], 'data', r[2], 'c', r[3], 'ttl', r[4], 'idle', fmt(idle),
    'max', fmt(r[6]), 'v', itoa(r[7]))
  if r[1] then
    redis.call('HSET', keys[2], 'u', r[1])
    redis.call('ZREM', keys[3], args[1] .. ' ' .. r[1])
    redis.call('ZADD', keys[3], fmt(exp), args[2] .. ' ' .. r[1])
    index_fix(keys[3], now)
  end
  pexpireat(keys[2], exp)
  redis.call('SET', keys[5], '1')
  pexpireat(keys[5], r[6] + tonumber(args[3]))
  redis.call('UNLINK', keys[1])
  redis.call('SPUBLISH', keys[4], 'rotated ' .. args[1])
  r[5] = idle
  return s_reply(r)
end

--[[ rankd_s_delete  KEYS s x sev   ARGV id
Reply: 1 (a user's session), 2 (a session without a user), or 0 when absent/expired. ]]
local function s_delete(keys, args)
  need_keys(keys, 3)
  local now = now_s()
  local r = s_load(keys[1], now)
  if not r then return 0 end
  redis.call('UNLINK', keys[1])
  if r[1] then redis.call('ZREM', keys[2], args[1] .. ' ' .. r[1]) end
  redis.call('SPUBLISH', keys[3], 'deleted ' .. args[1])
  if r[1] then return 1 end
  return 2 -- a session without a user: the caller uncounts it (--max-anonymous-sessions)
end

--[[ rankd_s_list  KEYS x   ARGV user   Reply: the ids of the user's live sessions. ]]
local function s_list(keys, args)
  need_keys(keys, 1)
  return user_ids(keys[1], args[1], now_s())
end

--[[ rankd_s_revoke  KEYS x sev s_1..s_n   ARGV user except_id("" = none) id_1..id_n
Deletes every live session of user but except_id. The caller listed the ids first (a function
may touch only declared keys); if the user gained a session since, the reply is the error
"RETRY" and nothing is deleted, so revoke-all is atomic with respect to concurrent creates.
Reply: how many were revoked. ]]
local function s_revoke(keys, args)
  local n = #keys - 2
  if n < 0 or #args ~= n + 2 then error('rankd_s_revoke: bad argument count') end
  local now = now_s()
  local declared = {}
  for i = 1, n do declared[args[2 + i]] = keys[2 + i] end
  local ids = user_ids(keys[1], args[1], now)
  for _, sid in ipairs(ids) do
    if sid ~= args[2] and not declared[sid] then return redis.error_reply('RETRY') end
  end
  local count = 0
  for _, sid in ipairs(ids) do
    if sid ~= args[2] then
      redis.call('UNLINK', declared[sid])
      redis.call('ZREM', keys[1], sid .. ' ' .. args[1])
      redis.call('SPUBLISH', keys[2], 'revoked ' .. sid)
      count = count + 1
    end
  end
  index_fix(keys[1], now)
  return count
end

--[[ --max-anonymous-sessions on the cluster. Sessions without a user live in random buckets, so
the count is one ZSET of its own slot, P:anon: session id -> its first idle deadline (seconds,
the shard's TIME). Admission is atomic here, so the set never holds more than max ids; an id is
removed when its session is deleted or rotated away, and an id whose deadline passed is only a
*candidate* for removal (a touched session lives on): at the cap the caller verifies candidates
against their buckets (rankd_anon_refresh) and asks again.

rankd_anon_admit  KEYS anon   ARGV id ttl max k
Reply: 1 admitted (or already counted), else {0, count, up to k candidate ids, oldest first}. ]]
local function anon_admit(keys, args)
  need_keys(keys, 1)
  if redis.call('ZSCORE', keys[1], args[1]) then return 1 end
  local now = now_s()
  local n = redis.call('ZCARD', keys[1])
  if n < tonumber(args[3]) then
    redis.call('ZADD', keys[1], fmt(now + tonumber(args[2])), args[1])
    return 1
  end
  local out = { 0, n }
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', keys[1], '-inf', fmt(now), 'LIMIT', '0', args[4])) do
    out[#out + 1] = id
  end
  return out
end

--[[ rankd_anon_refresh  KEYS anon   ARGV (id, deadline or "") pairs
Candidates checked by the caller: "" = the session has ended (removed), else its current
deadline (only for ids still counted: XX). Reply: how many were removed. ]]
local function anon_refresh(keys, args)
  need_keys(keys, 1)
  local removed = 0
  for i = 1, #args - 1, 2 do
    if args[i + 1] == '' then
      removed = removed + redis.call('ZREM', keys[1], args[i])
    else
      redis.call('ZADD', keys[1], 'XX', args[i + 1], args[i])
    end
  end
  return removed
end

redis.register_function('rankd_write', write)
redis.register_function('rankd_remove', remove)
redis.register_function('rankd_configure', configure)
redis.register_function('rankd_drop', drop)
redis.register_function('rankd_admit_board', admit_board)
local ro = { 'no-writes' }
redis.register_function { function_name = 'rankd_describe', callback = describe, flags = ro }
redis.register_function { function_name = 'rankd_top', callback = top, flags = ro }
redis.register_function { function_name = 'rankd_entry', callback = entry, flags = ro }
redis.register_function { function_name = 'rankd_around', callback = around, flags = ro }
redis.register_function { function_name = 'rankd_rank_for_score', callback = rank_for_score,
  flags = ro }
redis.register_function('rankd_s_create', s_create)
redis.register_function('rankd_s_get', s_get)
redis.register_function { function_name = 'rankd_s_known', callback = s_known, flags = ro }
redis.register_function('rankd_s_put', s_put)
redis.register_function('rankd_s_rotate', s_rotate)
redis.register_function('rankd_s_delete', s_delete)
redis.register_function('rankd_s_list', s_list)
redis.register_function('rankd_s_revoke', s_revoke)
redis.register_function('rankd_anon_admit', anon_admit)
redis.register_function('rankd_anon_refresh', anon_refresh)
redis.register_function { function_name = 'rankd_view', callback = view, flags = ro }

--[[ ---------------------------------------------------------------------------------------
Windows, periods and rankings (issue #14 on this backend). A section of its own: the functions
above serve boards with the default windows/ranking/bounds unchanged, and refuse (error "OPTS")
a board whose cfg has an ``opts`` field; the ``rankd_x*`` functions below serve every board.

cfg gains ``opts``: the JSON of the options other than order/update/ties and the player policy
(ranking, windows, reset_offset, keep, grace, min_score, max_score), absent when all are at
their defaults. Every x function gets the caller's idea of (order, ties, opts) and answers
"STALEOPTS" when it is wrong (nothing done): rankd re-reads the board and builds its keys again.

A table is one period of one window, six declared keys (service/backend/redis/keys.py):
  z  ZSET   sort keys, as above          u  ZSET  distinct NUMs (ranking=dense boards only)
  m  HASH   member -> sort key           c  HASH  NUM -> how many keys carry it (dense only)
  d  HASH   member -> metadata JSON      r  ZSET  the window's stored period ids by start
The "all" window's table is the board's z/m/d, so a plain board is one table. rankd computes
period ids from its clock (store/periods.py) and passes them: a function never reads a clock.
Ranks shown: ordinal = ZRANK + 1; competition = 1 + keys with a smaller NUM (ZLEXCOUNT over
"(" NUM: a key is longer than its NUM, so it sorts after it); dense = the same count on u.
------------------------------------------------------------------------------------------ ]]

local function x_head(cfg, args)
  local c = redis.call('HMGET', cfg, 'order', 'ties', 'opts', 'update', 'seq', 'epoch')
  if not c[1] then return nil, false end
  if c[1] ~= args[1] or c[2] ~= args[2] or (c[3] or '') ~= args[3] then
    return nil, redis.error_reply('STALEOPTS')
  end
  return c, nil
end

local function x_tables(keys, first, count)
  local t = {}
  for i = 0, count - 1 do
    local b = first + 6 * i
    t[i + 1] = { z = keys[b], m = keys[b + 1], d = keys[b + 2], u = keys[b + 3],
      c = keys[b + 4], r = keys[b + 5] }
  end
  return t
end

local function num_next(num)
  local b = { string.byte(num, 1, 10) }
  local i = 10
  while b[i] == 255 do
    b[i] = 0
    i = i - 1
  end
  b[i] = b[i] + 1
  return string.char(unpack(b))
end

-- the rank shown for key at 0-based pos (the key in the table, or about to leave it)
local function x_rank(t, ranking, key, pos)
  if ranking == 'competition' then
    return redis.call('ZLEXCOUNT', t.z, '-', '(' .. string.sub(key, 1, 10)) + 1
  elseif ranking == 'dense' then
    return redis.call('ZLEXCOUNT', t.u, '-', '(' .. string.sub(key, 1, 10)) + 1
  end
  return pos + 1
end

-- ranks of the consecutive keys list from 0-based position pos0 (store/ranks.py page_ranks)
local function x_page(t, ranking, list, pos0)
  local out = {}
  if #list == 0 then return out end
  local rank = x_rank(t, ranking, list[1], pos0)
  out[1] = rank
  local prev = string.sub(list[1], 1, 10)
  for i = 2, #list do
    local num = string.sub(list[i], 1, 10)
    if ranking ~= 'ordinal' and num ~= prev then
      if ranking == 'dense' then rank = rank + 1 else rank = pos0 + i end
      prev = num
    elseif ranking == 'ordinal' then
      rank = pos0 + i
    end
    out[i] = rank
  end
  return out
end

local function x_add(t, dense, key)
  redis.call('ZADD', t.z, '0', key)
  if dense then
    local num = string.sub(key, 1, 10)
    if redis.call('HINCRBY', t.c, num, 1) == 1 then redis.call('ZADD', t.u, '0', num) end
  end
end

local function x_rem(t, dense, key)
  redis.call('ZREM', t.z, key)
  if dense then
    local num = string.sub(key, 1, 10)
    if redis.call('HINCRBY', t.c, num, -1) <= 0 then
      redis.call('HDEL', t.c, num)
      redis.call('ZREM', t.u, num)
    end
  end
end

--[[ rankd_xwrite  KEYS cfg ev iz ih, then 6 keys per table
ARGV order ties opts publish ranking idem fp ntables, per table: period_id start all(0/1); then
per item: member NUM TYPE meta ntargets, then that many 1-based table numbers.
All or nothing, as rankd_write (pass 1 decides against shadows, pass 2 applies). One seq per
item that changes any table. idem/fp as rankd_write's ("Idempotency" above): a repeated id gets
the first application's reply back, nothing written, whatever tables the repeat names (a retry
may come after a period rolled over: the write stays where it first applied). Errors:
STALEOPTS, "RANGE <i>", "IDEMMISMATCH".
Reply: {seq, {per table: ZCARD of its window's r}, per item: {per target: changed, rank,
prev (0 = new), key, old_key, pos, prev_pos}} ]]
local function xwrite(keys, args)
  local c, err = x_head(keys[1], args)
  if err then return err end
  if not c then return redis.error_reply('STALEOPTS') end
  local publish, ranking, nt = args[4] == '1', args[5], tonumber(args[8])
  local dense = ranking == 'dense'
  local first, update = c[2] == 'first', c[4]
  local idem = idem_wanted(args[6], update)
  if idem then
    local seen = idem_seen(keys[4], idem, args[7])
    if seen then return seen end
  end
  local tabs = x_tables(keys, 5, nt)
  local a = 9
  for i = 1, nt do
    tabs[i].pid, tabs[i].start, tabs[i].all = args[a], args[a + 1], args[a + 2] == '1'
    a = a + 3
  end
  local items, shadow = {}, {}
  for i = 1, nt do shadow[i] = {} end
  local idx = 0
  while a <= #args do
    local it = { member = args[a], num = args[a + 1], typ = tonumber(args[a + 2]),
      meta = args[a + 3], plans = {} }
    local k = tonumber(args[a + 4])
    a = a + 5
    for j = 1, k do
      local ti = tonumber(args[a])
      a = a + 1
      local t = tabs[ti]
      local old = shadow[ti][it.member]
      if old == nil then old = redis.call('HGET', t.m, it.member) end
      local newnum, newtype = it.num, it.typ
      if old then
        local onum, otype = string.sub(old, 1, 10), string.byte(old, -1)
        if update == 'best' then
          if not num_less(it.num, onum) then newnum, newtype = onum, otype end
        elseif update == 'sum' then
          newnum, newtype = add(onum, otype, it.num, it.typ)
          if not newnum then return redis.error_reply('RANGE ' .. idx) end
        end
        if newnum == onum then newnum, newtype = nil, nil end
      end
      if newnum then
        shadow[ti][it.member] = newnum .. string.char(newtype)
      else
        shadow[ti][it.member] = old
      end
      it.plans[j] = { ti, newnum, newtype }
    end
    items[#items + 1] = it
    idx = idx + 1
  end
  local seq = tonumber(c[5])
  local out = { 0, {} }
  for _, it in ipairs(items) do
    local changed = false
    for _, p in ipairs(it.plans) do if p[2] then changed = true end end
    local res = {}
    if changed then
      seq = seq + 1
      if seq >= SEQ_LIMIT then error('rankd_xwrite: board write counter exhausted') end
    end
    local low, high, inf = nil, 0, false
    for _, p in ipairs(it.plans) do
      local t, newnum, newtype = tabs[p[1]], p[2], p[3]
      local old = redis.call('HGET', t.m, it.member)
      if not newnum then
        local pos = redis.call('ZRANK', t.z, old)
        local r = x_rank(t, ranking, old, pos)
        res[#res + 1] = { 0, r, r, old, old, pos + 1, pos + 1 }
      else
        if not t.all then redis.call('ZADD', t.r, 'NX', t.start, t.pid) end
        local prev, ppos = 0, 0
        if old then
          ppos = redis.call('ZRANK', t.z, old)
          prev = x_rank(t, ranking, old, ppos)
          ppos = ppos + 1
          x_rem(t, dense, old)
        end
        local key
        if first then
          key = newnum .. seq6(seq) .. it.member .. string.char(newtype)
        else
          key = newnum .. it.member .. string.char(newtype)
        end
        x_add(t, dense, key)
        redis.call('HSET', t.m, it.member, key)
        if it.meta ~= '' then redis.call('HSET', t.d, it.member, it.meta) end
        local pos = redis.call('ZRANK', t.z, key)
        res[#res + 1] = { 1, x_rank(t, ranking, key, pos), prev, key, old or '', pos + 1, ppos }
        local lo = pos + 1
        if ppos > 0 and ppos < lo then lo = ppos end
        if not low or lo < low then low = lo end
        if ppos == 0 then inf = true elseif math.max(ppos, pos + 1) > high then
          high = math.max(ppos, pos + 1)
        end
      end
    end
    if changed and publish then
      -- one message per item: the union of what it moved in every table (a superset of spans)
      if inf then high = 0 end
      redis.call('SPUBLISH', keys[2],
        'set ' .. itoa(seq) .. ' ' .. itoa(low) .. ' ' .. itoa(high) .. ' ' .. it.member)
    end
    out[#out + 1] = res
  end
  for i = 1, nt do
    if tabs[i].all then out[2][i] = 0 else out[2][i] = redis.call('ZCARD', tabs[i].r) end
  end
  if seq ~= tonumber(c[5]) then redis.call('HSET', keys[1], 'seq', itoa(seq)) end
  out[1] = seq
  if idem then idem_record(keys[3], keys[4], idem, args[7], out) end
  return out
end

--[[ rankd_xremove  KEYS cfg ev, 6 keys per table (each window's current period)
ARGV order ties opts publish ranking member. Reply: nil (no board), 0 (member in no table), or
seq. ]]
local function xremove(keys, args)
  local c, err = x_head(keys[1], args)
  if err then return err end
  if not c then return false end
  local dense, member = args[5] == 'dense', args[6]
  local tabs = x_tables(keys, 3, (#keys - 2) / 6)
  local found, low = false, nil
  for _, t in ipairs(tabs) do
    local old = redis.call('HGET', t.m, member)
    if old then
      found = true
      local pos = redis.call('ZRANK', t.z, old) + 1
      if not low or pos < low then low = pos end
      x_rem(t, dense, old)
      redis.call('HDEL', t.m, member)
      redis.call('HDEL', t.d, member)
    end
  end
  if not found then return 0 end
  local seq = redis.call('HINCRBY', keys[1], 'seq', 1)
  if args[4] == '1' then
    redis.call('SPUBLISH', keys[2], 'del ' .. itoa(seq) .. ' ' .. itoa(low) .. ' ' .. member)
  end
  return seq
end

--[[ rankd_xpatch  KEYS cfg ev, 6 keys per table (each window's current period)
ARGV order ties opts publish ranking member meta ("" = clear). Metadata replaced in every table
holding the member; seq + 1 when anything changed. Reply: nil (no board), {} (member in no
table), else {seq, key, rank, meta} of the first table holding it. ]]
local function xpatch(keys, args)
  local c, err = x_head(keys[1], args)
  if err then return err end
  if not c then return false end
  local ranking, member, meta = args[5], args[6], args[7]
  local tabs = x_tables(keys, 3, (#keys - 2) / 6)
  local found, pos0, changed = nil, nil, false
  for _, t in ipairs(tabs) do
    local key = redis.call('HGET', t.m, member)
    if key then
      local was = redis.call('HGET', t.d, member) or ''
      if was ~= meta then
        changed = true
        if meta == '' then redis.call('HDEL', t.d, member) else
          redis.call('HSET', t.d, member, meta) end
        local pos = redis.call('ZRANK', t.z, key) + 1
        if not pos0 or pos < pos0 then pos0 = pos end
      end
      if not found then found = { t, key } end
    end
  end
  if not found then return {} end
  local seq = tonumber(c[5])
  if changed then
    seq = redis.call('HINCRBY', keys[1], 'seq', 1)
    if args[4] == '1' then
      redis.call('SPUBLISH', keys[2], 'set ' .. itoa(seq) .. ' ' .. itoa(pos0) .. ' ' ..
        itoa(pos0) .. ' ' .. member)
    end
  end
  local t, key = found[1], found[2]
  local pos = redis.call('ZRANK', t.z, key)
  return { seq, key, x_rank(t, ranking, key, pos), redis.call('HGET', t.d, member) or false }
end

local function x_metas(t, list, first)
  return metas(t.d, list, first)
end

--[[ rankd_xread (read-only)  KEYS cfg, 6 keys of one table   ARGV order ties opts ranking op ...
  top    offset limit                      {seq, total, pos0, {key}, {meta}, {rank}}
  entry  member                            {seq, total, pos, key, meta, rank, below} or {}
  around member radius                     {seq, total, pos0, {key}, {meta}, {rank}} or {}
  rank   NUM(probe) NUM                    {seq, total, rank}
  lookup member...                         {seq, total, {key}, {meta}, {rank}}
  range  lo_NUM hi_next_NUM offset limit   {seq, total, count, pos0, {key}, {meta}, {rank}}
nil when the board is absent. ]]
local function xread(keys, args)
  local c, err = x_head(keys[1], args)
  if err then return err end
  if not c then return false end
  local t = x_tables(keys, 2, 1)[1]
  local ranking, op, first = args[4], args[5], c[2] == 'first'
  local seq, total = tonumber(c[5]), redis.call('ZCARD', t.z)
  local function page(pos0, lim)
    local list = {}
    if lim > 0 then list = redis.call('ZRANGE', t.z, itoa(pos0), itoa(pos0 + lim - 1)) end
    return { seq, total, pos0, list, x_metas(t, list, first), x_page(t, ranking, list, pos0) }
  end
  if op == 'top' then
    return page(tonumber(args[6]), tonumber(args[7]))
  elseif op == 'entry' or op == 'around' then
    local key = redis.call('HGET', t.m, args[6])
    if not key then return {} end
    local pos = redis.call('ZRANK', t.z, key)
    if op == 'around' then
      local radius = tonumber(args[7])
      local lo = math.max(0, pos - radius)
      return page(lo, pos + radius + 1 - lo)
    end
    local below
    if ranking == 'ordinal' then below = total - 1 - pos else
      below = total - redis.call('ZLEXCOUNT', t.z, '-', '(' .. num_next(string.sub(key, 1, 10)))
    end
    return { seq, total, pos, key, redis.call('HGET', t.d, args[6]) or false,
      x_rank(t, ranking, key, pos), below }
  elseif op == 'rank' then
    local probe, num = args[6], args[7]
    if first then probe = probe .. seq6(seq + 1) end
    local r
    if ranking == 'competition' then
      r = redis.call('ZLEXCOUNT', t.z, '-', '(' .. num) + 1
    elseif ranking == 'dense' then
      r = redis.call('ZLEXCOUNT', t.u, '-', '(' .. num) + 1
    else
      r = redis.call('ZLEXCOUNT', t.z, '-', '(' .. probe) + 1
    end
    return { seq, total, r }
  elseif op == 'lookup' then
    local list, ranks = {}, {}
    for i = 6, #args do
      local key = redis.call('HGET', t.m, args[i])
      if key then
        list[#list + 1] = key
        ranks[#ranks + 1] = x_rank(t, ranking, key, redis.call('ZRANK', t.z, key))
      end
    end
    return { seq, total, list, x_metas(t, list, first), ranks }
  elseif op == 'range' then
    local lo, hi = '[' .. args[6], '(' .. args[7]
    local count = redis.call('ZLEXCOUNT', t.z, lo, hi)
    local start = redis.call('ZLEXCOUNT', t.z, '-', '(' .. args[6])
    local off, lim = tonumber(args[8]), tonumber(args[9])
    local p0 = start + math.min(off, count)
    local n = math.min(lim, count - math.min(off, count))
    local r = page(p0, n)
    table.insert(r, 3, count)
    return r
  end
  error('rankd_xread: unknown op ' .. op)
end

--[[ rankd_xview (read-only)  KEYS cfg, 6 keys of one table
ARGV order ties opts ranking top(n) count(m) m members, then pairs (member, radius).
rankd_view for any table, with the ranks shown. Reply: nil when the board is absent, else
{seq, total, epoch, {key}, {meta}, {rank}, {key or false, rank, pos, ...},
{{pos or 0, first_pos, {key}, {meta}, {rank}} per pair}} ]]
local function xview(keys, args)
  local c, err = x_head(keys[1], args)
  if err then return err end
  if not c then return false end
  local t = x_tables(keys, 2, 1)[1]
  local ranking, first = args[4], c[2] == 'first'
  local lim, count = tonumber(args[5]), tonumber(args[6])
  local list = {}
  if lim > 0 then list = redis.call('ZRANGE', t.z, '0', itoa(lim - 1)) end
  local places = {}
  for i = 7, 6 + count do
    local key = redis.call('HGET', t.m, args[i])
    if key then
      local pos = redis.call('ZRANK', t.z, key)
      places[#places + 1] = key
      places[#places + 1] = x_rank(t, ranking, key, pos)
      places[#places + 1] = pos + 1
    else
      places[#places + 1] = false
      places[#places + 1] = 0
      places[#places + 1] = 0
    end
  end
  local near = {}
  for i = 7 + count, #args - 1, 2 do
    local key = redis.call('HGET', t.m, args[i])
    if key then
      local pos, radius = redis.call('ZRANK', t.z, key), tonumber(args[i + 1])
      local lo = math.max(0, pos - radius)
      local around = redis.call('ZRANGE', t.z, itoa(lo), itoa(pos + radius))
      near[#near + 1] = { pos + 1, lo + 1, around, x_metas(t, around, first),
        x_page(t, ranking, around, lo) }
    else
      near[#near + 1] = { 0, 0, {}, {}, {} }
    end
  end
  return { tonumber(c[5]), redis.call('ZCARD', t.z), c[6], list, x_metas(t, list, first),
    x_page(t, ranking, list, 0), places, near }
end

--[[ rankd_xdescribe (read-only)  KEYS cfg, then any z keys
Reply: nil when absent, else {order, update, ties, seq, epoch, pw, pr, pub, opts or false,
{ZCARD of each z}}. ]]
local function xdescribe(keys, args)
  local c = redis.call('HMGET', keys[1], 'order', 'update', 'ties', 'seq', 'epoch', 'pw', 'pr',
    'pub', 'opts')
  if not c[1] then return false end
  local sizes = {}
  for i = 2, #keys do sizes[#sizes + 1] = redis.call('ZCARD', keys[i]) end
  return { c[1], c[2], c[3], tonumber(c[4]), c[5], c[6], c[7], c[8], c[9] or false, sizes }
end

--[[ rankd_xconfigure  KEYS cfg, 6 keys per table (every stored period of every window, old
config and new), then the old windows' r keys
ARGV order update ties epoch pw pr pub opts("" = none) ranking fixed(0/1: options that need an
empty board change) expected_opts ("-" = the board must be absent)
Creates or changes a board. fixed: every declared z must be empty ("CONFLICT" otherwise), and
every declared key is dropped (new windows start empty). Switching to or from dense builds or
drops u/c of every table: O(n). Reply: {created, seq}. ]]
local function xconfigure(keys, args)
  local cfg = keys[1]
  local c = redis.call('HMGET', cfg, 'order', 'opts')
  local expected = args[11]
  if (c[1] and (c[2] or '') ~= expected) or (not c[1] and expected ~= '-') then
    return redis.error_reply('STALEOPTS')
  end
  local nt = math.floor((#keys - 1) / 6)
  local tabs = x_tables(keys, 2, nt)
  local created = 0
  if not c[1] then
    created = 1
    redis.call('HSET', cfg, 'seq', '0', 'epoch', args[4])
  end
  if args[10] == '1' then
    for _, t in ipairs(tabs) do
      if redis.call('ZCARD', t.z) > 0 then return redis.error_reply('CONFLICT') end
    end
    for i = 2, #keys do
      if keys[i] ~= cfg then redis.call('UNLINK', keys[i]) end
    end
  end
  local dense = args[9] == 'dense'
  for _, t in ipairs(tabs) do
    local has = redis.call('EXISTS', t.c) == 1 or redis.call('EXISTS', t.u) == 1
    if dense and not has then
      local counts = {}
      local order = {}
      for _, key in ipairs(redis.call('ZRANGE', t.z, '0', '-1')) do
        local num = string.sub(key, 1, 10)
        if not counts[num] then
          counts[num] = 0
          order[#order + 1] = num
        end
        counts[num] = counts[num] + 1
      end
      for _, num in ipairs(order) do
        redis.call('ZADD', t.u, '0', num)
        redis.call('HSET', t.c, num, itoa(counts[num]))
      end
    elseif not dense and has then
      redis.call('UNLINK', t.u, t.c)
    end
  end
  redis.call('HSET', cfg, 'order', args[1], 'update', args[2], 'ties', args[3],
    'pw', args[5], 'pr', args[6], 'pub', args[7])
  if args[8] == '' then redis.call('HDEL', cfg, 'opts') else
    redis.call('HSET', cfg, 'opts', args[8]) end
  return { created, tonumber(redis.call('HGET', cfg, 'seq')) }
end

--[[ rankd_xtrim  KEYS r, then 5 keys (z m d u c) per period   ARGV period ids
Drops periods no longer kept (rankd decides from its clock and the board's keep). Reply: count. ]]
local function xtrim(keys, args)
  for i, pid in ipairs(args) do
    local b = 2 + 5 * (i - 1)
    redis.call('UNLINK', keys[b], keys[b + 1], keys[b + 2], keys[b + 3], keys[b + 4])
    redis.call('ZREM', keys[1], pid)
  end
  return #args
end

--[[ rankd_xdrop  KEYS cfg ev, then every key of the board   ARGV publish(0/1)
Reply: 1 dropped, 0 absent. ]]
local function xdrop(keys, args)
  if redis.call('EXISTS', keys[1]) == 0 then return 0 end
  redis.call('UNLINK', keys[1])
  for i = 3, #keys do redis.call('UNLINK', keys[i]) end
  if args[1] == '1' then redis.call('SPUBLISH', keys[2], 'drop') end
  return 1
end

redis.register_function('rankd_xwrite', xwrite)
redis.register_function('rankd_xremove', xremove)
redis.register_function('rankd_xpatch', xpatch)
redis.register_function('rankd_xconfigure', xconfigure)
redis.register_function('rankd_xtrim', xtrim)
redis.register_function('rankd_xdrop', xdrop)
redis.register_function { function_name = 'rankd_xread', callback = xread, flags = ro }
redis.register_function { function_name = 'rankd_xview', callback = xview, flags = ro }
redis.register_function { function_name = 'rankd_xdescribe', callback = xdescribe, flags = ro }
