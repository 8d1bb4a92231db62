-- The sluice rate limiter: the one algorithm behind `State::charge` and
-- `State::adjust`, on every backend.
--
-- This file only defines a pure function, `limiter`: no redis.call, no clock,
-- no globals (Redis 7 refuses scripts that create globals). Each backend
-- appends a few lines that read the bucket states, call it with its own
-- clock, and write the new states back:
--   * Redis: inside one EVAL with the server clock (`TIME`), see redis_backend.rs;
--   * memory: the same steps in Rust (`limiter::run` in limiter.rs) under the
--     shard lock, with the process clock. A change here must be made there
--     too: limiter.rs's tests run both and require the same answers.
--
-- A bucket is a token bucket refilled continuously. Its state is one string
-- "tokens:last_ms" or "tokens:last_ms:leased:lease_until": the token level at
-- `last_ms` (fractional milliseconds on the backend's clock), and the tokens
-- nodes hold in leases that have not yet been returned, outstanding until
-- `lease_until` at the latest. A missing state means a full bucket with no
-- lease out, so a state may expire once the bucket would be full again and
-- every lease has run out.
--
-- Leases (edge nodes far from Redis): a charge may also take up to `want`
-- more tokens for the node to spend locally. Leased tokens leave the bucket
-- like spent ones. While they are out, the bucket refills as if they had
-- been spent, so a node spending them later can push a window past the
-- limit: by at most the tokens out in leases, which a grant never lets
-- exceed `max_leased`. A lease is granted only from what the charge leaves,
-- and at most half of it, so leases shrink as the bucket empties and stop
-- (exact charges) near empty. Returning a lease refunds its unused tokens and
-- retires the grant from `leased`; leases of a node that never returns them
-- are forgotten after `lease_until`.
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
-- Also returns leased, lease_until (0, 0 when the state has none).
local function parse_state(state)
  if not state then
    return nil
  end
  local fields = {}
  for field in string.gmatch(state, '[^:]+') do
    fields[#fields + 1] = tonumber(field)
  end
  local tokens, last = fields[1], fields[2]
  if tokens == nil or last == nil or tokens ~= tokens or last ~= last then
    return nil
  end
  local leased, lease_until = fields[3] or 0, fields[4] or 0
  if leased ~= leased or lease_until ~= lease_until then
    leased, lease_until = 0, 0
  end
  return tokens, last, leased, lease_until
end

-- limiter(n, states, args, now_ms, mode, lease_ms)
--   n         number of buckets
--   states    states[i] = a state string (above) or false when missing
--   args      flat numbers, per bucket: capacity, refill per ms (> 0), cost,
--             lease, max_leased, retire: in both modes `retire` leased
--             tokens are first counted back in (spent since the node last
--             said, or a returned lease's grant)
--   now_ms    the backend's clock, milliseconds (may be fractional)
--   mode      "charge": all or nothing over the positive costs; negative
--                       costs (refunds) always apply, capped at capacity.
--                       When admitted, also grants up to `lease` more tokens
--                       as a lease, keeping leased <= max_leased.
--             "adjust": apply every cost unconditionally; a level may go
--                       below zero (debt), so later charges wait until it is
--                       repaid. (A returned lease's unused tokens come back
--                       as a negative cost.)
--   lease_ms  how long a lease granted now may be spent
-- Returns new_states, ttls, out:
--   new_states[i]  the state to write, or false to leave bucket i untouched
--   ttls[i]        expiry in ms for new_states[i]
--   out            { admitted (1/0), retry_after_ms,
--                    remaining_1, reset_ms_1, remaining_2, reset_ms_2, ...,
--                    granted_1, granted_2, ... }
local function limiter(n, states, args, now_ms, mode, lease_ms)
  local levels, lasts, leaseds, untils = {}, {}, {}, {}
  for i = 1, n do
    local capacity, rate = args[6 * i - 5], args[6 * i - 4]
    local tokens, last, leased, lease_until = parse_state(states[i])
    if tokens == nil then
      tokens, last, leased, lease_until = capacity, now_ms, 0, 0
    end
    -- Leases of nodes that never returned them have run out by now.
    if lease_until <= now_ms then
      leased, lease_until = 0, 0
    end
    leaseds[i], untils[i] = leased, lease_until
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
      local capacity, rate, cost = args[6 * i - 5], args[6 * i - 4], args[6 * i - 3]
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
  local granted = {}
  for i = 1, n do
    local capacity, rate, cost = args[6 * i - 5], args[6 * i - 4], args[6 * i - 3]
    local lease, max_leased, retire = args[6 * i - 2], args[6 * i - 1], args[6 * i]
    local level = levels[i]
    local changed = false
    granted[i] = 0
    if retire > 0 and leaseds[i] > 0 then
      leaseds[i] = math.max(0, leaseds[i] - retire)
      changed = true
    end
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
    if mode == 'charge' and admitted and lease > 0 then
      local grant = math.floor(math.min(lease, level / 2, max_leased - leaseds[i]) + EPSILON)
      if grant >= 1 then
        level = level - grant
        leaseds[i] = leaseds[i] + grant
        untils[i] = math.max(untils[i], now_ms + lease_ms)
        granted[i] = grant
        changed = true
      end
    end
    local reset = 0
    if level < capacity then
      reset = clamp_ms((capacity - level) / rate)
    end
    if changed then
      local ttl = reset
      if leaseds[i] > 0 then
        new_states[i] = string.format('%.17g:%.17g:%.17g:%.17g', level, lasts[i], leaseds[i], untils[i])
        ttl = math.max(ttl, clamp_ms(untils[i] - now_ms))
      else
        new_states[i] = string.format('%.17g:%.17g', level, lasts[i])
      end
      ttls[i] = math.min(MAX_MS, ttl + TTL_MARGIN_MS)
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
  for i = 1, n do
    out[2 * n + 2 + i] = granted[i]
  end
  return new_states, ttls, out
end
