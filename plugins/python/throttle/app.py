"""sluice reference throttle policy, in Python.

The same decisions as the Rust reference plugin (plugins/throttle/src/logic.rs):
every caller gets a request bucket (cost 1) and a token bucket (cost: the
prompt estimate plus max_tokens, or `completion_estimate_tokens`), refilled
over a minute. Buckets are per tenant (`t:<tenant>:rpm`, `t:<tenant>:tpm`)
with the limits of the tenant's tier; anonymous callers are limited per
client IP (`ip:<ip>:rpm`, `ip:<ip>:tpm`). `settle` refunds unused tokens, and
the whole token charge of a cache hit.

Config (all fields optional):
  {"tiers": {"free": {"requests_per_minute": 100, "tokens_per_minute": 20000}},
   "anonymous": {"requests_per_minute": 20}, "completion_estimate_tokens": 256}
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.throttle import (
    Admission,
    Admission_Charge,
    Admission_Reject,
    Rejection,
    Usage,
)
from wit_world.imports.types import Bucket, Request, Shape_Window, Unit, WindowSpec

ANONYMOUS = "anonymous"
WINDOW_MS = 60_000
LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute")
BUILTIN_TIERS = {
    "free": {"requests_per_minute": 100, "tokens_per_minute": 20_000},
    "default": {"requests_per_minute": 300, "tokens_per_minute": 100_000},
    "pro": {"requests_per_minute": 1_000, "tokens_per_minute": 400_000},
    "enterprise": {"requests_per_minute": 5_000, "tokens_per_minute": 2_000_000},
}
BUILTIN_ANONYMOUS = {"requests_per_minute": 20, "tokens_per_minute": 10_000}

# Each call runs in a fresh instance after `init`, so this is per call.
CONFIG = {"tiers": {}, "anonymous": None, "completion_estimate_tokens": 256}


def _limits(value, field):
    if not isinstance(value, dict):
        raise ValueError(f"{field}: expected an object")
    for name, limit in value.items():
        if name not in LIMIT_FIELDS:
            raise ValueError(f"{field}: unknown field `{name}`")
        if limit is None:
            continue
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"{field}.{name}: expected a non-negative integer")
    return {name: value.get(name) for name in LIMIT_FIELDS}


def parse_config(text):
    raw = json.loads(text) if text.strip() else {}
    if not isinstance(raw, dict):
        raise ValueError("config: expected a JSON object")
    config = {"tiers": {}, "anonymous": None, "completion_estimate_tokens": 256}
    for key, value in raw.items():
        if key == "tiers":
            if not isinstance(value, dict):
                raise ValueError("tiers: expected an object")
            for name, limits in value.items():
                if not name:
                    raise ValueError("tiers: tier names must not be empty")
                if name == ANONYMOUS:
                    raise ValueError(
                        "tiers.anonymous: set anonymous limits with the top-level `anonymous` field"
                    )
                config["tiers"][name] = _limits(limits, f"tiers.{name}")
        elif key == "anonymous":
            config["anonymous"] = None if value is None else _limits(value, "anonymous")
        elif key == "completion_estimate_tokens":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError("completion_estimate_tokens: expected a non-negative integer")
            config["completion_estimate_tokens"] = value
        else:
            raise ValueError(f"unknown field `{key}`")
    return config


def tier_limits(name):
    for candidate in (
        CONFIG["tiers"].get(name),
        BUILTIN_TIERS.get(name),
        CONFIG["tiers"].get("default"),
        BUILTIN_TIERS["default"],
    ):
        if candidate is not None:
            return candidate
    return {}


def limits_for(tier):
    if tier == ANONYMOUS:
        return CONFIG["anonymous"] or BUILTIN_ANONYMOUS
    return tier_limits(tier)


def subject(req: Request):
    """(key prefix, limits, name used in messages) for the caller."""
    if req.tenant == ANONYMOUS:
        ip = req.client_ip or "unknown"
        limits = limits_for(req.tier) if req.tier else (CONFIG["anonymous"] or BUILTIN_ANONYMOUS)
        return f"ip:{ip}", limits, "anonymous access"
    return f"t:{req.tenant}", limits_for(req.tier), f"tier {req.tier}"


def token_charge(req: Request):
    completion = req.max_tokens if req.max_tokens is not None else CONFIG["completion_estimate_tokens"]
    return req.estimated_prompt_tokens + completion


def bucket(key, per_minute, cost, unit):
    return Bucket(key=key, shape=Shape_Window(WindowSpec(limit=per_minute, window_ms=WINDOW_MS)), cost=cost, unit=unit)


def reject(message):
    return Admission_Reject(Rejection(status=429, message=message, retry_after_ms=None))


class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        global CONFIG
        try:
            CONFIG = parse_config(config)
        except ValueError as e:
            raise Err(str(e))


class Throttle(exports.Throttle):
    def admit(self, req: Request) -> Admission:
        prefix, limits, name = subject(req)
        buckets = []
        rpm = limits.get("requests_per_minute")
        if rpm is not None:
            if rpm == 0:
                return reject(f"{name} allows no requests")
            buckets.append(bucket(f"{prefix}:rpm", rpm, 1, Unit.REQUESTS))
        tpm = limits.get("tokens_per_minute")
        if tpm is not None:
            tokens = token_charge(req)
            if tokens > tpm:
                return reject(
                    f"request too large: it may use {tokens} tokens, more than the {tpm} tokens "
                    f"per minute {name} allows; send a shorter prompt or a lower max_tokens"
                )
            buckets.append(bucket(f"{prefix}:tpm", tpm, tokens, Unit.TOKENS))
        return Admission_Charge(buckets)

    def settle(self, req: Request, usage: Usage):
        prefix, limits, _ = subject(req)
        tpm = limits.get("tokens_per_minute")
        if tpm is None:
            return []
        completion = req.max_tokens if req.max_tokens is not None else CONFIG["completion_estimate_tokens"]
        charged = usage.estimated_prompt_tokens + completion
        used = 0 if usage.cached else usage.prompt_tokens + usage.completion_tokens
        correction = used - charged
        if correction == 0:
            return []
        return [bucket(f"{prefix}:tpm", tpm, correction, Unit.TOKENS)]
