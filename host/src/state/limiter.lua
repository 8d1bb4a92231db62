-- The sluice rate limiter: the one algorithm behind `State::charge` and
-- `State::adjust`, on every backend.
--
-- This file only defines a pure function, `limiter`: no redis.call, no clock,
-- no globals (Redis 7 refuses scripts that create globals). Each backend
-- appends a few lines that read the bucket states, call it with its own
-- clock, and write the new states back:
--   * Redis: inside one EVAL with the server clock (`TIME`), see redis_backend.rs;
--   * memory: through mlua under the shard lock, with the process clock, see memory.rs.
--
-- A bucket is a token bucket refilled continuously. Its state is one string
-- "tokens:last_ms": the token level at `last_ms` (fractional milliseconds on
-- the backend's clock). A missing state means a full bucket, so a state may
-- expire once the bucket would be full again.
--
-- Lua 5.1 numbers are doubles: token levels and times stay exact up to 2^53,
-- and states are written with 17 significant digits so they round-trip.

-- Slack for float rounding when comparing token levels (a millionth of a token).
local EPSILON = 1e-6
-- Keep a state this long after the bucket would be full again.
local TTL_MARGIN_MS = 1000
-- Upper bound of every returned duration, so it converts to an integer cleanly.
local MAX_MS = 9007199254740991

local function clamp_ms(x)
  if x ~= x or x < 0 then
    return 0
  end
  if x > MAX_MS then
    return MAX_MS
  end
  return math.ceil(x)
end

-- Returns tokens, last_ms; nil when the state is missing or unreadable
-- (an unreadable state is treated like a missing one: the bucket starts full).
local function parse_state(state)
  if not state then
    return nil
  end
  local sep = string.find(state, ':', 1, true)
  if not sep then
    return nil
  end
  local tokens = tonumber(string.sub(state, 1, sep - 1))
  local last = tonumber(string.sub(state, sep + 1))
  if tokens == nil or last == nil or tokens ~= tokens or last ~= last then
    return nil
  end
  return tokens, last
end

-- limiter(n, states, args, now_ms, mode)
--   n       number of buckets
--   states  states[i] = "tokens:last_ms" or false when missing
--   args    flat numbers, per bucket: capacity, refill per ms (> 0), cost
--   now_ms  the backend's clock, milliseconds (may be fractional)
--   mode    "charge": all or nothing over the positive costs; negative costs
--                     (refunds) always apply, capped at capacity.
--           "adjust": apply every cost unconditionally; a level may go below
--                     zero (debt), so later charges wait until it is repaid.
-- Returns new_states, ttls, out:
--   new_states[i]  the state to write, or false to leave bucket i untouched
--   ttls[i]        expiry in ms for new_states[i]
--   out            { admitted (1/0), retry_after_ms,
--                    remaining_1, reset_ms_1, remaining_2, reset_ms_2, ... }
local function limiter(n, states, args, now_ms, mode)
  local levels, lasts = {}, {}
  for i = 1, n do
    local capacity, rate = args[3 * i - 2], args[3 * i - 1]
    local tokens, last = parse_state(states[i])
    if tokens == nil then
      tokens, last = capacity, now_ms
    end
    local at = now_ms
    if at > last then
      tokens = tokens + (at - last) * rate
    else
      -- A clock that went backwards (failover to another node) refills
      -- nothing, and the later timestamp is kept so no interval counts twice.
      at = last
    end
    -- Also clamps a level above a capacity that was lowered since.
    if tokens > capacity then
      tokens = capacity
    end
    levels[i], lasts[i] = tokens, at
  end

  local admitted = true
  local retry_after = 0
  if mode == 'charge' then
    for i = 1, n do
      local capacity, rate, cost = args[3 * i - 2], args[3 * i - 1], args[3 * i]
      if cost > 0 then
        local wait = nil
        if cost > capacity + EPSILON then
          -- Can never be paid: refuse, and suggest one full refill period.
          wait = capacity / rate
        elseif levels[i] + EPSILON < cost then
          wait = (cost - levels[i]) / rate
        end
        if wait ~= nil then
          admitted = false
          if wait > retry_after then
            retry_after = wait
          end
        end
      end
    end
  end

  local new_states, ttls = {}, {}
  local out = { admitted and 1 or 0, 0 }
  if not admitted then
    -- A refused charge always says "later", never "now".
    out[2] = math.max(1, clamp_ms(retry_after))
  end
  for i = 1, n do
    local capacity, rate, cost = args[3 * i - 2], args[3 * i - 1], args[3 * i]
    local level = levels[i]
    local changed = false
    if cost < 0 then
      level = math.min(capacity, level - cost)
      changed = true
    elseif cost > 0 and (admitted or mode == 'adjust') then
      level = level - cost
      if mode == 'charge' and level < 0 then
        -- Admitted within EPSILON: never leave rounding debt behind.
        level = 0
      end
      changed = true
    end
    local reset = 0
    if level < capacity then
      reset = clamp_ms((capacity - level) / rate)
    end
    if changed then
      new_states[i] = string.format('%.17g:%.17g', level, lasts[i])
      ttls[i] = math.min(MAX_MS, reset + TTL_MARGIN_MS)
    else
      new_states[i] = false
      ttls[i] = 0
    end
    local remaining = 0
    if level > 0 then
      remaining = math.floor(level + EPSILON)
    end
    out[2 * i + 1] = remaining
    out[2 * i + 2] = reset
  end
  return new_states, ttls, out
end
