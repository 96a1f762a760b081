-- duet matching on Redis: the same rules as src/matching.rs, atomically.
-- ARGV: 1 prefix, 2 op, 3 now_ms, 4 widen_ms, 5 cooldown_ms, 6 scan_limit,
--       7 report_window_ms, 8 pairing id stem, 9.. op arguments.
-- Returns a flat list: 'm', pairing_id (a match) | 'w', user (widened) | '1'/'0'.
local P = ARGV[1]
local op = ARGV[2]
local now = tonumber(ARGV[3])
local widen = tonumber(ARGV[4])
local cooldown = tonumber(ARGV[5])
local limit = tonumber(ARGV[6])
local window = tonumber(ARGV[7])
local stem = ARGV[8]
local out = {}
local npairs = 0
local DAY = 86400000

local function num(x) return string.format('%d', x) end

local function split(s)
  local t = {}
  if s == nil or s == '' then return t end
  for x in string.gmatch(s, '([^,]+)') do t[#t + 1] = x end
  return t
end

local function pairkey(kind, d1, d2)
  if d1 < d2 then return P .. kind .. d1 .. '|' .. d2 end
  return P .. kind .. d2 .. '|' .. d1
end

local function get_w(user)
  local h = redis.call('HGETALL', P .. 'w:' .. user)
  if #h == 0 then return nil end
  local w = {}
  for i = 1, #h, 2 do w[h[i]] = h[i + 1] end
  w.user = user
  return w
end

local function remove_w(w)
  local qk = P .. 'q:' .. w.qk
  redis.call('ZREM', qk .. ':open', w.user)
  redis.call('ZREM', qk .. ':node:' .. w.node, w.user)
  for _, i in ipairs(split(w.interests)) do redis.call('ZREM', qk .. ':i:' .. i, w.user) end
  redis.call('ZREM', P .. 'pw', w.user)
  redis.call('DEL', P .. 'w:' .. w.user)
  redis.call('DECR', P .. 'wc:' .. w.mode)
end

local function allowed(me, o)
  if o == nil or o.user == me.user or o.device == me.device then return false end
  if o.qk ~= me.qk then return false end
  if redis.call('EXISTS', pairkey('blk:', me.device, o.device)) == 1 then return false end
  local until_ms = redis.call('GET', pairkey('cd:', me.device, o.device))
  if until_ms and tonumber(until_ms) > now then return false end
  return true
end

local function make_pair(a, b)
  remove_w(a)
  remove_w(b)
  local bset = {}
  for _, i in ipairs(split(b.interests)) do bset[i] = true end
  local common = {}
  for _, i in ipairs(split(a.interests)) do if bset[i] then common[#common + 1] = i end end
  npairs = npairs + 1
  local pid = stem .. num(npairs)
  redis.call('SET', pairkey('cd:', a.device, b.device), num(now + cooldown), 'PX', num(cooldown + 60000))
  local ph = P .. 'pair:' .. pid
  redis.call('HSET', ph, 'mode', a.mode, 'matched', num(now), 'common', table.concat(common, ','),
    'a_user', a.user, 'a_device', a.device, 'a_part', a.part, 'a_node', a.node,
    'a_waited', num(now - tonumber(a.joined)), 'a_lang', a.lang, 'a_interests', a.interests,
    'b_user', b.user, 'b_device', b.device, 'b_part', b.part, 'b_node', b.node,
    'b_waited', num(now - tonumber(b.joined)), 'b_lang', b.lang, 'b_interests', b.interests)
  redis.call('PEXPIRE', ph, DAY)
  redis.call('SET', P .. 'cur:' .. a.user, pid, 'PX', DAY)
  redis.call('SET', P .. 'cur:' .. b.user, pid, 'PX', DAY)
  out[#out + 1] = 'm'
  out[#out + 1] = pid
end

local function try_match(me)
  local qk = P .. 'q:' .. me.qk
  local counts = {}
  local order = {}
  for _, i in ipairs(split(me.interests)) do
    local members = redis.call('ZRANGE', qk .. ':i:' .. i, 0, limit - 1)
    for _, u in ipairs(members) do
      if u ~= me.user then
        if counts[u] == nil then
          counts[u] = 0
          order[#order + 1] = u
        end
        counts[u] = counts[u] + 1
      end
    end
  end
  local best, bn, bs, bseq = nil, -1, false, 0
  for _, u in ipairs(order) do
    local o = get_w(u)
    if allowed(me, o) then
      local n = counts[u]
      local s = (o.node == me.node)
      local seq = tonumber(o.seq)
      local better
      if best == nil then better = true
      elseif n ~= bn then better = n > bn
      elseif s ~= bs then better = s
      else better = seq < bseq end
      if better then best, bn, bs, bseq = o, n, s, seq end
    end
  end
  if best == nil and me.open == '1' then
    local function first_allowed(key)
      local members = redis.call('ZRANGE', key, 0, limit)
      for _, u in ipairs(members) do
        if u ~= me.user then
          local o = get_w(u)
          if allowed(me, o) then return o end
        end
      end
      return nil
    end
    best = first_allowed(qk .. ':node:' .. me.node)
    if best == nil then best = first_allowed(qk .. ':open') end
  end
  if best == nil then return end
  if tonumber(best.seq) < tonumber(me.seq) then make_pair(best, me) else make_pair(me, best) end
end

local function add_open(w)
  local qk = P .. 'q:' .. w.qk
  redis.call('ZADD', qk .. ':open', w.seq, w.user)
  redis.call('ZADD', qk .. ':node:' .. w.node, w.seq, w.user)
end

if op == 'join' then
  local user, device, part, node, mode, lang, interests = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14], ARGV[15]
  local old = get_w(user)
  if old then remove_w(old) end
  local seq = redis.call('INCR', P .. 'seq')
  local open = '0'
  if interests == '' then open = '1' end
  local w = { user = user, device = device, part = part, node = node, mode = mode, lang = lang,
    interests = interests, joined = num(now), seq = num(seq), open = open, qk = mode .. '|' .. lang }
  redis.call('HSET', P .. 'w:' .. user, 'device', device, 'part', part, 'node', node, 'mode', mode,
    'lang', lang, 'interests', interests, 'joined', w.joined, 'seq', w.seq, 'open', open, 'qk', w.qk)
  redis.call('PEXPIRE', P .. 'w:' .. user, DAY)
  redis.call('INCR', P .. 'wc:' .. mode)
  local qk = P .. 'q:' .. w.qk
  for _, i in ipairs(split(interests)) do redis.call('ZADD', qk .. ':i:' .. i, seq, user) end
  if open == '1' then add_open(w) else redis.call('ZADD', P .. 'pw', now, user) end
  try_match(w)
  return out
elseif op == 'leave' then
  local w = get_w(ARGV[9])
  if w then
    remove_w(w)
    return { '1' }
  end
  return { '0' }
elseif op == 'tick' then
  local due = redis.call('ZRANGEBYSCORE', P .. 'pw', '-inf', num(now - widen), 'LIMIT', 0, limit)
  for _, user in ipairs(due) do
    redis.call('ZREM', P .. 'pw', user)
    local w = get_w(user)
    if w then
      redis.call('HSET', P .. 'w:' .. user, 'open', '1')
      w.open = '1'
      add_open(w)
      out[#out + 1] = 'w'
      out[#out + 1] = user
    end
  end
  for _, user in ipairs(due) do
    local w = get_w(user)
    if w then try_match(w) end
  end
  return out
elseif op == 'end' then
  local user = ARGV[9]
  local pid = redis.call('GET', P .. 'cur:' .. user)
  if not pid then return {} end
  local ph = P .. 'pair:' .. pid
  local a = redis.call('HGET', ph, 'a_user')
  local b = redis.call('HGET', ph, 'b_user')
  redis.call('DEL', P .. 'cur:' .. user)
  for _, u in ipairs({ a, b }) do
    if u then
      if redis.call('GET', P .. 'cur:' .. u) == pid then redis.call('DEL', P .. 'cur:' .. u) end
      redis.call('SET', P .. 'last:' .. u, pid, 'PX', num(window))
    end
  end
  redis.call('PEXPIRE', ph, num(window))
  redis.call('PEXPIRE', P .. 'tr:' .. pid, num(window))
  return { pid }
elseif op == 'block' then
  redis.call('SET', pairkey('blk:', ARGV[9], ARGV[10]), '1')
  return { '1' }
end
return redis.error_reply('unknown op')
