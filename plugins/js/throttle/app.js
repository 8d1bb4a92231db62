// sluice reference throttle policy, in JavaScript.
//
// The same decisions as the Rust reference plugin (plugins/throttle/src/
// logic.rs): every caller gets a request bucket (cost 1) and a token bucket
// (cost: the prompt estimate plus max_tokens, or completion_estimate_tokens),
// refilled over a minute. Buckets are per tenant (t:<tenant>:rpm,
// t:<tenant>:tpm) with the limits of the tenant's tier; anonymous callers are
// limited per client IP (ip:<ip>:rpm, ip:<ip>:tpm). settle refunds unused
// tokens, and the whole token charge of a cache hit.
//
// Config (all fields optional):
//   {"tiers": {"free": {"requests_per_minute": 100, "tokens_per_minute": 20000}},
//    "anonymous": {"requests_per_minute": 20}, "completion_estimate_tokens": 256}
//
// One difference from Rust: JSON numbers are doubles here, so a limit above
// 2^53 (Rust accepts up to 2^64 - 1) is refused rather than rounded.
//
// WIT in JavaScript (jco's mapping): records are objects with camelCase
// fields, variants are { tag, val }, enums are strings, u64/s64 are BigInt,
// an absent option is undefined, and init's error is a thrown string.

const ANONYMOUS = 'anonymous';
const WINDOW_MS = 60000n;
const LIMIT_FIELDS = ['requests_per_minute', 'tokens_per_minute'];
const U32_MAX = 0xffffffff;

// Maps, not objects: a tier named `constructor` or `__proto__` is a tier.
const BUILTIN_TIERS = new Map([
  ['free', { rpm: 100, tpm: 20000 }],
  ['default', { rpm: 300, tpm: 100000 }],
  ['pro', { rpm: 1000, tpm: 400000 }],
  ['enterprise', { rpm: 5000, tpm: 2000000 }],
]);
const BUILTIN_ANONYMOUS = { rpm: 20, tpm: 10000 };

// Each call runs in a fresh instance after init, so this is per call.
let config = defaults();

function defaults() {
  return { tiers: new Map(), anonymous: undefined, completionEstimateTokens: 256 };
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function count(value, field, max) {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) {
    throw `config field \`${field}\`: expected a non-negative integer of at most ${max}`;
  }
  return value;
}

// `{ rpm, tpm }`, each undefined when not enforced.
function parseLimits(value, field) {
  if (!isObject(value)) {
    throw `config field \`${field}\`: expected an object`;
  }
  const limits = { rpm: undefined, tpm: undefined };
  for (const [name, limit] of Object.entries(value)) {
    if (!LIMIT_FIELDS.includes(name)) {
      throw `config field \`${field}.${name}\`: unknown field \`${name}\`, expected one of ${LIMIT_FIELDS.map((f) => `\`${f}\``).join(', ')}`;
    }
    if (limit === null) {
      continue;
    }
    const n = count(limit, `${field}.${name}`, Number.MAX_SAFE_INTEGER);
    if (name === 'requests_per_minute') {
      limits.rpm = n;
    } else {
      limits.tpm = n;
    }
  }
  return limits;
}

function parseConfig(text) {
  const trimmed = text.trim();
  const raw = trimmed === '' || trimmed === 'null' ? {} : JSON.parse(trimmed);
  if (!isObject(raw)) {
    throw 'config: must be a JSON object';
  }
  const parsed = defaults();
  for (const [key, value] of Object.entries(raw)) {
    if (key === 'tiers') {
      if (!isObject(value)) {
        throw 'config field `tiers`: expected a map';
      }
      for (const [name, limits] of Object.entries(value)) {
        if (name === '') {
          throw 'config field `tiers`: tier names must not be empty';
        }
        if (name === ANONYMOUS) {
          throw 'config field `tiers.anonymous`: set anonymous limits with the top-level `anonymous` field';
        }
        parsed.tiers.set(name, parseLimits(limits, `tiers.${name}`));
      }
    } else if (key === 'anonymous') {
      parsed.anonymous = value === null ? undefined : parseLimits(value, 'anonymous');
    } else if (key === 'completion_estimate_tokens') {
      parsed.completionEstimateTokens = count(value, key, U32_MAX);
    } else {
      throw `config field \`${key}\`: unknown field \`${key}\`, expected one of \`tiers\`, \`anonymous\`, \`completion_estimate_tokens\``;
    }
  }
  return parsed;
}

// The limits for a tier: configured, else built in, else `default`.
function tierLimits(name) {
  return (
    config.tiers.get(name) ??
    BUILTIN_TIERS.get(name) ??
    config.tiers.get('default') ??
    BUILTIN_TIERS.get('default')
  );
}

function anonymousLimits() {
  return config.anonymous ?? BUILTIN_ANONYMOUS;
}

function limitsFor(tier) {
  return tier === ANONYMOUS ? anonymousLimits() : tierLimits(tier);
}

// Who a request is charged to: key prefix, limits, name used in messages.
function subject(req) {
  if (req.tenant === ANONYMOUS) {
    const ip = req.clientIp === '' ? 'unknown' : req.clientIp;
    const limits = req.tier === '' ? anonymousLimits() : limitsFor(req.tier);
    return { prefix: `ip:${ip}`, limits, name: 'anonymous access' };
  }
  return { prefix: `t:${req.tenant}`, limits: limitsFor(req.tier), name: `tier ${req.tier}` };
}

function completion(req) {
  return req.maxTokens ?? config.completionEstimateTokens;
}

function bucket(key, perMinute, cost, unit) {
  return {
    key,
    shape: { tag: 'window', val: { limit: BigInt(perMinute), windowMs: WINDOW_MS } },
    cost: BigInt(cost),
    unit,
  };
}

function reject(message) {
  return { tag: 'reject', val: { status: 429, message, retryAfterMs: undefined } };
}

export const lifecycle = {
  init(text) {
    try {
      config = parseConfig(text);
    } catch (e) {
      // A string is the WIT error; anything else (a SyntaxError) becomes one.
      throw typeof e === 'string' ? e : `config: ${e.message ?? e}`;
    }
  },
};

export const throttle = {
  admit(req) {
    const { prefix, limits, name } = subject(req);
    const buckets = [];
    if (limits.rpm !== undefined) {
      if (limits.rpm === 0) {
        return reject(`${name} allows no requests`);
      }
      buckets.push(bucket(`${prefix}:rpm`, limits.rpm, 1, 'requests'));
    }
    if (limits.tpm !== undefined) {
      const tokens = req.estimatedPromptTokens + completion(req);
      if (tokens > limits.tpm) {
        return reject(
          `request too large: it may use ${tokens} tokens, more than the ${limits.tpm} tokens per minute ${name} allows; send a shorter prompt or a lower max_tokens`,
        );
      }
      buckets.push(bucket(`${prefix}:tpm`, limits.tpm, tokens, 'tokens'));
    }
    return { tag: 'charge', val: buckets };
  },

  settle(req, usage) {
    const { prefix, limits } = subject(req);
    if (limits.tpm === undefined) {
      return [];
    }
    const charged = usage.estimatedPromptTokens + completion(req);
    const used = usage.cached ? 0 : usage.promptTokens + usage.completionTokens;
    const correction = used - charged;
    if (correction === 0) {
      return [];
    }
    return [bucket(`${prefix}:tpm`, limits.tpm, correction, 'tokens')];
  },
};
