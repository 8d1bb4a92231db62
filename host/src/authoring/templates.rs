//! The source files of a new project, per language and kind. Each is the
//! smallest policy that does something visible, so an author sees where
//! their logic goes: a throttle charging one request per tenant against 60
//! a minute, a cache key over model and messages, a semantic probe over the
//! last message, a retry of 429s and 5xx up to three attempts.

use crate::plugin::Kind;

use super::Lang;

/// `(relative path, contents)` of the language's sources.
pub(super) fn files(name: &str, kind: Kind, lang: Lang) -> Vec<(String, String)> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml".into(), rust_manifest(name)),
            ("src/lib.rs".into(), rust_lib(name, kind)),
        ],
        Lang::Python => vec![("app.py".into(), python_app(name, kind))],
        Lang::C => vec![("src/policy.c".into(), c_source(name, kind))],
        Lang::Js => vec![
            ("app.js".into(), js_app(name, kind)),
            ("package.json".into(), js_package(name)),
        ],
    }
}

fn rust_manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
wit-bindgen = {{ version = "0.63", default-features = false, features = ["macros", "realloc", "std"] }}

# Small, fast components: a policy runs on every request.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = true
panic = "abort"

# A project of its own, not a member of any enclosing workspace.
[workspace]
"#
    )
}

fn rust_lib(name: &str, kind: Kind) -> String {
    let world = format!("{}-plugin", kind.interface());
    let body = match kind {
        Kind::Throttle => RUST_THROTTLE,
        Kind::CacheKey => RUST_CACHE_KEY,
        Kind::Semantic => RUST_SEMANTIC,
        Kind::Retry => RUST_RETRY,
    };
    format!(
        r#"//! {name}: a sluice {kind} policy. Build with `sluice plugin build`,
//! try with `sluice plugin test build/{name}.wasm --kind {kind} --input req.json`.

wit_bindgen::generate!({{ world: "{world}", path: "wit" }});

use exports::sluice::policy::lifecycle::Guest as Lifecycle;

struct Policy;

impl Lifecycle for Policy {{
    /// Called with the plugin's config (JSON) before every call; an Err
    /// rejects the plugin at load time.
    fn init(_config: String) -> Result<(), String> {{
        Ok(())
    }}
}}
{body}
export!(Policy);
"#,
        kind = kind.interface()
    )
}

const RUST_THROTTLE: &str = r#"
use exports::sluice::policy::throttle::{Admission, Guest as Throttle, Usage};
use sluice::policy::types::{Bucket, Request, Shape, Unit, WindowSpec};

const REQUESTS_PER_MINUTE: u64 = 60;

impl Throttle for Policy {
    fn admit(req: Request) -> Admission {
        Admission::Charge(vec![Bucket {
            key: format!("t:{}:rpm", req.tenant),
            shape: Shape::Window(WindowSpec {
                limit: REQUESTS_PER_MINUTE,
                window_ms: 60_000,
            }),
            cost: 1,
            unit: Unit::Requests,
        }])
    }

    fn settle(_req: Request, _usage: Usage) -> Vec<Bucket> {
        Vec::new()
    }
}
"#;

const RUST_CACHE_KEY: &str = r#"
use exports::sluice::policy::cache_key::{Decision, Entry, Guest as CacheKey, Scope};
use sluice::policy::types::Request;

impl CacheKey for Policy {
    fn derive(req: Request) -> Decision {
        if req.streaming {
            return Decision::Bypass("streaming".into());
        }
        let mut key = req.model.clone();
        for m in &req.messages {
            key.push('\n');
            key.push_str(&m.role);
            key.push(':');
            key.push_str(&m.text);
        }
        Decision::Cache(Entry {
            key,
            ttl_seconds: 300,
            scope: Scope::Tenant,
        })
    }
}
"#;

const RUST_SEMANTIC: &str = r#"
use exports::sluice::policy::semantic::{Candidate, Guest as Semantic, Probe};
use sluice::policy::types::Request;

const THRESHOLD: f32 = 0.95;

impl Semantic for Policy {
    fn prepare(req: Request) -> Option<Probe> {
        let last = req.messages.last()?;
        Some(Probe {
            text: last.text.clone(),
            namespace: req.model.clone(),
            threshold: THRESHOLD,
        })
    }

    fn accept(_req: Request, candidate: Candidate) -> bool {
        candidate.score >= THRESHOLD
    }
}
"#;

const RUST_RETRY: &str = r#"
use exports::sluice::policy::retry::{Attempt, Guest as Retry, Outcome, Verdict};
use sluice::policy::types::Request;

const MAX_ATTEMPTS: u32 = 3;

impl Retry for Policy {
    fn decide(_req: Request, attempt: Attempt) -> Verdict {
        if attempt.number >= MAX_ATTEMPTS {
            return Verdict::Stop;
        }
        match attempt.outcome {
            Outcome::Status(s) if s.code == 429 || s.code >= 500 => {
                Verdict::Retry(s.retry_after_ms.unwrap_or(200 * u64::from(attempt.number)))
            }
            Outcome::Status(_) => Verdict::Stop,
            Outcome::Timeout | Outcome::ConnectError(_) => {
                Verdict::Retry(200 * u64::from(attempt.number))
            }
        }
    }
}
"#;

fn python_app(name: &str, kind: Kind) -> String {
    let body = match kind {
        Kind::Throttle => PY_THROTTLE,
        Kind::CacheKey => PY_CACHE_KEY,
        Kind::Semantic => PY_SEMANTIC,
        Kind::Retry => PY_RETRY,
    };
    format!(
        r#""""{name}: a sluice {kind} policy.

Build with `sluice plugin build`, try with
`sluice plugin test build/{name}.wasm --kind {kind} --input req.json --deadline-ms 500`
(CPython starts in every fresh instance: more than the default 50 ms).
"""

from wit_world import exports
{body}

class Lifecycle(exports.Lifecycle):
    def init(self, config: str) -> None:
        """Called with the plugin's config (JSON) before every call; raising
        componentize_py_types.Err(reason) rejects the plugin at load time."""
        pass
"#,
        kind = kind.interface()
    )
}

const PY_THROTTLE: &str = r#"from wit_world.exports.throttle import Admission, Admission_Charge, Usage
from wit_world.imports.types import Bucket, Request, Shape_Window, Unit, WindowSpec

REQUESTS_PER_MINUTE = 60


class Throttle(exports.Throttle):
    def admit(self, req: Request) -> Admission:
        return Admission_Charge([
            Bucket(
                key=f"t:{req.tenant}:rpm",
                shape=Shape_Window(WindowSpec(limit=REQUESTS_PER_MINUTE, window_ms=60_000)),
                cost=1,
                unit=Unit.REQUESTS,
            )
        ])

    def settle(self, req: Request, usage: Usage):
        return []
"#;

const PY_CACHE_KEY: &str = r#"from wit_world.exports.cache_key import Decision, Decision_Bypass, Decision_Cache, Entry, Scope
from wit_world.imports.types import Request


class CacheKey(exports.CacheKey):
    def derive(self, req: Request) -> Decision:
        if req.streaming:
            return Decision_Bypass("streaming")
        key = req.model + "".join(f"\n{m.role}:{m.text}" for m in req.messages)
        return Decision_Cache(Entry(key=key, ttl_seconds=300, scope=Scope.TENANT))
"#;

const PY_SEMANTIC: &str = r#"from typing import Optional

from wit_world.exports.semantic import Candidate, Probe
from wit_world.imports.types import Request

THRESHOLD = 0.95


class Semantic(exports.Semantic):
    def prepare(self, req: Request) -> Optional[Probe]:
        if not req.messages:
            return None
        return Probe(text=req.messages[-1].text, namespace=req.model, threshold=THRESHOLD)

    def accept(self, req: Request, candidate: Candidate) -> bool:
        return candidate.score >= THRESHOLD
"#;

const PY_RETRY: &str = r#"from wit_world.exports.retry import Attempt, Outcome_Status, Verdict, Verdict_Retry, Verdict_Stop
from wit_world.imports.types import Request

MAX_ATTEMPTS = 3


class Retry(exports.Retry):
    def decide(self, req: Request, attempt: Attempt) -> Verdict:
        if attempt.number >= MAX_ATTEMPTS:
            return Verdict_Stop()
        backoff = 200 * attempt.number
        if isinstance(attempt.outcome, Outcome_Status):
            status = attempt.outcome.value
            if status.code != 429 and status.code < 500:
                return Verdict_Stop()
            if status.retry_after_ms is not None:
                backoff = status.retry_after_ms
        return Verdict_Retry(backoff)
"#;

fn c_source(name: &str, kind: Kind) -> String {
    let world = format!("{}_plugin", kind.slot());
    let body = match kind {
        Kind::Throttle => C_THROTTLE,
        Kind::CacheKey => C_CACHE_KEY,
        Kind::Semantic => C_SEMANTIC,
        Kind::Retry => C_RETRY,
    };
    C_HEADER
        .replace("NAME", name)
        .replace("KIND", kind.interface())
        .replace("WORLD", &world)
        + &body.replace("WORLD", &world)
}

const C_HEADER: &str = r#"// NAME: a sluice KIND policy in C. Build with `sluice plugin build`
// (bindings are generated into build/bindings/WORLD.h), try with
// `sluice plugin test build/NAME.wasm --kind KIND --input req.json`.
//
// Memory: an export owns its arguments (free them with the generated
// *_free functions); what it returns is malloc'ed and freed by the
// generated code after the host has read it. Each call runs in a fresh
// instance, so nothing here outlives one request.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "WORLD.h"

// Called with the plugin's config (JSON) before every call; return false
// with *err set (WORLD_string_dup) to reject the plugin at load time.
bool exports_sluice_policy_lifecycle_init(WORLD_string_t *config, WORLD_string_t *err) {
    (void)err;
    WORLD_string_free(config);
    return true;
}
"#;

const C_THROTTLE: &str = r#"
#define REQUESTS_PER_MINUTE 60

void exports_sluice_policy_throttle_admit(exports_sluice_policy_throttle_request_t *req,
                                          exports_sluice_policy_throttle_admission_t *ret) {
    exports_sluice_policy_throttle_bucket_t *bucket = calloc(1, sizeof *bucket);
    size_t cap = req->tenant.len + 8;
    char *key = malloc(cap);
    snprintf(key, cap, "t:%.*s:rpm", (int)req->tenant.len, (const char *)req->tenant.ptr);
    WORLD_string_set(&bucket->key, key); // the bucket now owns `key`
    bucket->shape.tag = SLUICE_POLICY_TYPES_SHAPE_WINDOW;
    bucket->shape.val.window.limit = REQUESTS_PER_MINUTE;
    bucket->shape.val.window.window_ms = 60000;
    bucket->cost = 1;
    bucket->unit = SLUICE_POLICY_TYPES_UNIT_REQUESTS;
    ret->tag = EXPORTS_SLUICE_POLICY_THROTTLE_ADMISSION_CHARGE;
    ret->val.charge.ptr = bucket;
    ret->val.charge.len = 1;
    exports_sluice_policy_throttle_request_free(req);
}

void exports_sluice_policy_throttle_settle(exports_sluice_policy_throttle_request_t *req,
                                           exports_sluice_policy_throttle_usage_t *usage,
                                           exports_sluice_policy_throttle_list_bucket_t *ret) {
    (void)usage;
    ret->ptr = NULL;
    ret->len = 0;
    exports_sluice_policy_throttle_request_free(req);
}
"#;

const C_CACHE_KEY: &str = r#"
void exports_sluice_policy_cache_key_derive(exports_sluice_policy_cache_key_request_t *req,
                                            exports_sluice_policy_cache_key_decision_t *ret) {
    if (req->streaming) {
        ret->tag = EXPORTS_SLUICE_POLICY_CACHE_KEY_DECISION_BYPASS;
        WORLD_string_dup(&ret->val.bypass, "streaming");
        exports_sluice_policy_cache_key_request_free(req);
        return;
    }
    // The key: model, then "\n<role>:<text>" per message.
    size_t cap = req->model.len + 1;
    for (size_t i = 0; i < req->messages.len; i++) {
        cap += req->messages.ptr[i].role.len + req->messages.ptr[i].text.len + 2;
    }
    uint8_t *key = malloc(cap);
    size_t len = 0;
    memcpy(key, req->model.ptr, req->model.len);
    len += req->model.len;
    for (size_t i = 0; i < req->messages.len; i++) {
        sluice_policy_types_message_t *m = &req->messages.ptr[i];
        key[len++] = '\n';
        memcpy(key + len, m->role.ptr, m->role.len);
        len += m->role.len;
        key[len++] = ':';
        memcpy(key + len, m->text.ptr, m->text.len);
        len += m->text.len;
    }
    ret->tag = EXPORTS_SLUICE_POLICY_CACHE_KEY_DECISION_CACHE;
    ret->val.cache.key.ptr = key;
    ret->val.cache.key.len = len;
    ret->val.cache.ttl_seconds = 300;
    ret->val.cache.scope = EXPORTS_SLUICE_POLICY_CACHE_KEY_SCOPE_TENANT;
    exports_sluice_policy_cache_key_request_free(req);
}
"#;

const C_SEMANTIC: &str = r#"
#define THRESHOLD 0.95f

bool exports_sluice_policy_semantic_prepare(exports_sluice_policy_semantic_request_t *req,
                                            exports_sluice_policy_semantic_probe_t *ret) {
    bool some = req->messages.len > 0;
    if (some) {
        sluice_policy_types_message_t *last = &req->messages.ptr[req->messages.len - 1];
        // Move the strings into the result instead of copying them.
        ret->text = last->text;
        last->text.ptr = NULL;
        last->text.len = 0;
        ret->namespace_ = req->model;
        req->model.ptr = NULL;
        req->model.len = 0;
        ret->threshold = THRESHOLD;
    }
    exports_sluice_policy_semantic_request_free(req);
    return some;
}

bool exports_sluice_policy_semantic_accept(exports_sluice_policy_semantic_request_t *req,
                                           exports_sluice_policy_semantic_candidate_t *candidate) {
    bool accept = candidate->score >= THRESHOLD;
    exports_sluice_policy_semantic_candidate_free(candidate);
    exports_sluice_policy_semantic_request_free(req);
    return accept;
}
"#;

const C_RETRY: &str = r#"
#define MAX_ATTEMPTS 3

void exports_sluice_policy_retry_decide(exports_sluice_policy_retry_request_t *req,
                                        exports_sluice_policy_retry_attempt_t *attempt,
                                        exports_sluice_policy_retry_verdict_t *ret) {
    uint64_t backoff = 200 * (uint64_t)attempt->number;
    bool retry = attempt->number < MAX_ATTEMPTS;
    if (attempt->outcome.tag == EXPORTS_SLUICE_POLICY_RETRY_OUTCOME_STATUS) {
        exports_sluice_policy_retry_status_outcome_t *s = &attempt->outcome.val.status;
        retry = retry && (s->code == 429 || s->code >= 500);
        if (s->retry_after_ms.is_some) {
            backoff = s->retry_after_ms.val;
        }
    }
    if (retry) {
        ret->tag = EXPORTS_SLUICE_POLICY_RETRY_VERDICT_RETRY;
        ret->val.retry = backoff;
    } else {
        ret->tag = EXPORTS_SLUICE_POLICY_RETRY_VERDICT_STOP;
    }
    exports_sluice_policy_retry_attempt_free(attempt);
    exports_sluice_policy_retry_request_free(req);
}
"#;

fn js_app(name: &str, kind: Kind) -> String {
    let body = match kind {
        Kind::Throttle => JS_THROTTLE,
        Kind::CacheKey => JS_CACHE_KEY,
        Kind::Semantic => JS_SEMANTIC,
        Kind::Retry => JS_RETRY,
    };
    JS_HEADER
        .replace("NAME", name)
        .replace("KIND", kind.interface())
        + body
}

fn js_package(name: &str) -> String {
    format!(
        r#"{{
  "name": "{name}",
  "private": true,
  "type": "module",
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "0.23.0"
  }}
}}
"#
    )
}

// WIT in JavaScript (jco's mapping): records are objects with camelCase
// fields, variants are `{ tag, val }`, enums are kebab-case strings, u64/s64
// are BigInt, an absent option is `undefined`, and an Err is a thrown value.
const JS_HEADER: &str = r#"// NAME: a sluice KIND policy in JavaScript. Build with `sluice plugin build`
// (componentize-js), try with
// `sluice plugin test build/NAME.wasm --kind KIND --input req.json --deadline-ms 500`
// (the JS engine starts in every fresh instance: more than the default 50 ms).
//
// WIT types in JavaScript: records are objects with camelCase fields,
// variants are { tag, val }, enums are strings, u64/s64 are BigInt, an
// absent option is undefined.

export const lifecycle = {
  // Called with the plugin's config (JSON) before every call; throwing a
  // string rejects the plugin at load time.
  init(config) {},
};
"#;

const JS_THROTTLE: &str = r#"
const REQUESTS_PER_MINUTE = 60n;

export const throttle = {
  admit(req) {
    return {
      tag: 'charge',
      val: [{
        key: `t:${req.tenant}:rpm`,
        shape: { tag: 'window', val: { limit: REQUESTS_PER_MINUTE, windowMs: 60000n } },
        cost: 1n,
        unit: 'requests',
      }],
    };
  },
  settle(req, usage) {
    return [];
  },
};
"#;

const JS_CACHE_KEY: &str = r#"
export const cacheKey = {
  derive(req) {
    if (req.streaming) {
      return { tag: 'bypass', val: 'streaming' };
    }
    const key = req.model + req.messages.map((m) => `\n${m.role}:${m.text}`).join('');
    return { tag: 'cache', val: { key, ttlSeconds: 300, scope: 'tenant' } };
  },
};
"#;

const JS_SEMANTIC: &str = r#"
const THRESHOLD = 0.95;

export const semantic = {
  prepare(req) {
    if (req.messages.length === 0) {
      return undefined;
    }
    const last = req.messages[req.messages.length - 1];
    return { text: last.text, namespace: req.model, threshold: THRESHOLD };
  },
  accept(req, candidate) {
    return candidate.score >= THRESHOLD;
  },
};
"#;

const JS_RETRY: &str = r#"
const MAX_ATTEMPTS = 3;

export const retry = {
  decide(req, attempt) {
    if (attempt.number >= MAX_ATTEMPTS) {
      return { tag: 'stop' };
    }
    let backoff = BigInt(200 * attempt.number);
    if (attempt.outcome.tag === 'status') {
      const status = attempt.outcome.val;
      if (status.code !== 429 && status.code < 500) {
        return { tag: 'stop' };
      }
      if (status.retryAfterMs !== undefined) {
        backoff = status.retryAfterMs;
      }
    }
    return { tag: 'retry', val: backoff };
  },
};
"#;
