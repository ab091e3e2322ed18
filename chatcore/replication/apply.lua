-- The apply script (loaded by chatcore/replication/_layout.py; run with EVALSHA).
--
-- It applies a whole batch of changes in one call. Per change: dedupe by its id, then
-- last-writer-wins (per field for a conversation: each field has its own stamp,
-- '<field>:hlc'), and a stream entry only when the change is new AND altered Redis.
-- Stamps are fixed-width text ending in the device id, so comparing them as strings is
-- comparing (time, counter, device).
--
-- KEYS[1]: the change stream. ARGV[1]: the key prefix, then one argument per change: its
-- JSON as the outbox stores it (data last, so a message's JSON is the text between
-- '"data":' and the final brace, stored as is: no decode/encode round trip can alter
-- it). A CONVERSATION change is followed by its metadata as JSON text.
--
-- Every change is checked before anything is written: a malformed one makes the script
-- return {'bad', n, reason} (n counts changes from 1) with Redis untouched. Otherwise it
-- returns {'ok', altered, duplicates}. The conversation keys are built here, not passed
-- in KEYS: that is what a single Redis allows, and what a Cluster would refuse.
local prefix = ARGV[1]
local stamp_pattern = '^' .. string.rep('%d', 13) .. '%.' .. string.rep('%d', 5) .. '%..+$'
local merged_fields = {'title', 'backend', 'model', 'system', 'metadata'}
local function text_or_empty(value)
  if type(value) == 'string' then return value end
  return ''
end
local changes = {}
local i = 2
local n = 0
while i <= #ARGV do
  local raw = ARGV[i]
  n = n + 1
  local ok, c = pcall(cjson.decode, raw)
  if not ok or type(c) ~= 'table' then
    return {'bad', n, 'not a JSON object'}
  end
  local kind, cid, stamp, device, data = c.kind, c.conversation_id, c.hlc, c.device_id, c.data
  if type(cid) ~= 'string' or cid == '' then
    return {'bad', n, 'conversation_id: expected non-empty text'}
  end
  if type(stamp) ~= 'string' or not string.find(stamp, stamp_pattern) then
    return {'bad', n, 'hlc: expected <13 digits>.<5 digits>.<device id>'}
  end
  if type(device) ~= 'string' or device == '' then
    return {'bad', n, 'device_id: expected non-empty text'}
  end
  if type(data) ~= 'table' then
    return {'bad', n, 'data: expected an object'}
  end
  local change = {kind = kind, cid = cid, stamp = stamp, device = device, raw = raw}
  if kind == 'message' then
    if type(data.id) ~= 'string' or data.id == '' then
      return {'bad', n, 'data.id: expected non-empty text'}
    end
    local at = string.find(raw, '"data":', 1, true)
    if not at or string.sub(raw, -2) ~= '}}' then
      return {'bad', n, 'data: expected as the last field'}
    end
    change.id = 'msg:' .. data.id .. ':' .. stamp
    change.mid = data.id
    change.body = string.sub(raw, at + 7, -2)
  elseif kind == 'conversation' then
    i = i + 1
    if ARGV[i] == nil then
      return {'bad', n, 'no metadata argument after a conversation change'}
    end
    change.id = 'conversation:' .. cid .. ':' .. stamp
    change.created_at = text_or_empty(data.created_at)
    -- Only the fields the change carries (a change from before per-field merge
    -- carries all five); JSON null is cjson.null, not nil, so a cleared field counts.
    change.fields = {}
    for _, name in ipairs(merged_fields) do
      if data[name] ~= nil then
        if name == 'metadata' then
          change.fields[#change.fields + 1] = {name, ARGV[i]}
        else
          change.fields[#change.fields + 1] = {name, text_or_empty(data[name])}
        end
      end
    end
    if #change.fields == 0 then
      return {'bad', n, 'data: expected at least one of ' .. table.concat(merged_fields, ', ')}
    end
  elseif kind == 'tombstone' then
    if type(data.deleted_at) ~= 'string' then
      return {'bad', n, 'data.deleted_at: expected text'}
    end
    change.id = 'tombstone:' .. cid .. ':' .. stamp
    change.deleted_at = data.deleted_at
  else
    return {'bad', n, 'kind: expected message, conversation or tombstone'}
  end
  changes[n] = change
  i = i + 1
end
local stream = KEYS[1]
local tombstoned = {}
local altered_count, duplicates = 0, 0
for _, c in ipairs(changes) do
  local base = prefix .. ':{conv:' .. c.cid .. '}:'
  if redis.call('SADD', base .. 'applied', c.id) == 0 then
    duplicates = duplicates + 1
  else
    local tomb = tombstoned[c.cid]
    if tomb == nil then
      tomb = redis.call('HEXISTS', base .. 'meta', 'deleted_hlc') == 1
      tombstoned[c.cid] = tomb
    end
    local altered = false
    if tomb then
      altered = false
    elseif c.kind == 'message' then
      local current = redis.call('HGET', base .. 'mhlc', c.mid)
      if (not current) or c.stamp > current then
        redis.call('HSET', base .. 'msgs', c.mid, c.body)
        redis.call('HSET', base .. 'mhlc', c.mid, c.stamp)
        altered = true
      end
    elseif c.kind == 'conversation' then
      local meta = base .. 'meta'
      local whole = redis.call('HGET', meta, 'hlc')
      if whole then
        -- A hash with a stamp but no field stamps was written before per-field
        -- merge: its one stamp is the stamp of every field.
        local legacy = true
        for _, name in ipairs(merged_fields) do
          if redis.call('HEXISTS', meta, name .. ':hlc') == 1 then legacy = false end
        end
        if legacy then
          for _, name in ipairs(merged_fields) do
            redis.call('HSET', meta, name .. ':hlc', whole)
          end
        end
      end
      local writes = {}
      for _, field in ipairs(c.fields) do
        local current = redis.call('HGET', meta, field[1] .. ':hlc')
        if (not current) or c.stamp > current then
          writes[#writes + 1] = field[1]
          writes[#writes + 1] = field[2]
          writes[#writes + 1] = field[1] .. ':hlc'
          writes[#writes + 1] = c.stamp
        end
      end
      local created = redis.call('HGET', meta, 'created_at')
      if (not created) or c.created_at < created then
        writes[#writes + 1] = 'created_at'
        writes[#writes + 1] = c.created_at
      end
      if (not whole) or c.stamp > whole then
        writes[#writes + 1] = 'hlc'
        writes[#writes + 1] = c.stamp
        writes[#writes + 1] = 'device'
        writes[#writes + 1] = c.device
      end
      if #writes > 0 then
        redis.call('HSET', meta, unpack(writes))
        altered = true
      end
    else
      redis.call('DEL', base .. 'msgs', base .. 'mhlc')
      redis.call('HSET', base .. 'meta', 'deleted_hlc', c.stamp, 'deleted_at', c.deleted_at)
      tombstoned[c.cid] = true
      altered = true
    end
    if altered then
      redis.call('XADD', stream, '*', 'device', c.device, 'change', c.raw)
      altered_count = altered_count + 1
    end
  end
end
return {'ok', altered_count, duplicates}
