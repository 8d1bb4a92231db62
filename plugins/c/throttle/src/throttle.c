// sluice reference throttle policy, in C.
//
// The same decisions as the Rust reference plugin (plugins/throttle/src/
// logic.rs): every caller gets a request bucket (cost 1) and a token bucket
// (cost: the prompt estimate plus max_tokens, or completion_estimate_tokens),
// refilled over a minute. Buckets are per tenant (t:<tenant>:rpm,
// t:<tenant>:tpm) with the limits of the tenant's tier; anonymous callers
// are limited per client IP (ip:<ip>:rpm, ip:<ip>:tpm). settle refunds
// unused tokens, and the whole token charge of a cache hit.
//
// Config (all fields optional):
//   {"tiers": {"free": {"requests_per_minute": 100, "tokens_per_minute": 20000}},
//    "anonymous": {"requests_per_minute": 20}, "completion_estimate_tokens": 256}

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "throttle_plugin.h"

#define WINDOW_MS 60000
#define MAX_TIERS 64
#define ANONYMOUS "anonymous"

typedef struct {
    bool has_rpm;
    uint64_t rpm;
    bool has_tpm;
    uint64_t tpm;
} limits_t;

typedef struct {
    const char *name;
    limits_t limits;
} tier_t;

static const tier_t BUILTIN_TIERS[] = {
    {"free", {true, 100, true, 20000}},
    {"default", {true, 300, true, 100000}},
    {"pro", {true, 1000, true, 400000}},
    {"enterprise", {true, 5000, true, 2000000}},
};
static const limits_t BUILTIN_ANONYMOUS = {true, 20, true, 10000};

// Each call runs in a fresh instance after init, so this is per call.
static struct {
    tier_t tiers[MAX_TIERS];
    size_t ntiers;
    bool has_anonymous;
    limits_t anonymous;
    uint64_t completion_estimate_tokens;
} config = {.completion_estimate_tokens = 256};

// === config ===

static bool parse_limits(json_t *j, limits_t *out, const char *field) {
    memset(out, 0, sizeof *out);
    bool first = true;
    char *key;
    while (json_next_key(j, &first, &key, field)) {
        char where[160];
        snprintf(where, sizeof where, "%s.%s", field, key);
        bool ok;
        if (strcmp(key, "requests_per_minute") == 0) {
            ok = json_null(j) || (out->has_rpm = json_uint(j, UINT64_MAX, &out->rpm, where));
        } else if (strcmp(key, "tokens_per_minute") == 0) {
            ok = json_null(j) || (out->has_tpm = json_uint(j, UINT64_MAX, &out->tpm, where));
        } else {
            char what[160];
            snprintf(what, sizeof what, "unknown field `%s`", key);
            ok = json_fail(j, field, what);
        }
        free(key);
        if (!ok) return false;
    }
    return j->error[0] == '\0';
}

static bool parse_tiers(json_t *j) {
    bool first = true;
    char *name;
    while (json_next_key(j, &first, &name, "tiers")) {
        if (name[0] == '\0') {
            free(name);
            return json_fail(j, "tiers", "tier names must not be empty");
        }
        if (strcmp(name, ANONYMOUS) == 0) {
            free(name);
            return json_fail(j, "tiers.anonymous",
                             "set anonymous limits with the top-level `anonymous` field");
        }
        if (config.ntiers == MAX_TIERS) {
            free(name);
            return json_fail(j, "tiers", "too many tiers");
        }
        char where[160];
        snprintf(where, sizeof where, "tiers.%s", name);
        tier_t *tier = &config.tiers[config.ntiers++];
        tier->name = name;
        if (!parse_limits(j, &tier->limits, where)) return false;
    }
    return j->error[0] == '\0';
}

static bool parse_config(const char *text, size_t len, char *error, size_t error_len) {
    json_t j;
    json_init(&j, text, len);
    bool first = true;
    char *key;
    bool ok = true;
    if (json_at_end(&j)) return true;
    while (ok && json_next_key(&j, &first, &key, "")) {
        if (strcmp(key, "tiers") == 0) {
            ok = parse_tiers(&j);
        } else if (strcmp(key, "anonymous") == 0) {
            ok = json_null(&j) ||
                 (config.has_anonymous = parse_limits(&j, &config.anonymous, "anonymous"));
        } else if (strcmp(key, "completion_estimate_tokens") == 0) {
            ok = json_uint(&j, UINT32_MAX, &config.completion_estimate_tokens,
                           "completion_estimate_tokens");
        } else {
            char what[160];
            snprintf(what, sizeof what, "unknown field `%s`", key);
            ok = json_fail(&j, "", what);
        }
        free(key);
    }
    if (j.error[0] == '\0' && !json_at_end(&j)) {
        json_fail(&j, "", "trailing characters after the config object");
    }
    if (j.error[0] != '\0') {
        snprintf(error, error_len, "%s", j.error);
        return false;
    }
    return true;
}

bool exports_sluice_policy_lifecycle_init(throttle_plugin_string_t *text,
                                          throttle_plugin_string_t *err) {
    char error[256];
    bool ok = parse_config((const char *)text->ptr, text->len, error, sizeof error);
    if (!ok) {
        throttle_plugin_string_dup(err, error);
    }
    throttle_plugin_string_free(text);
    return ok;
}

// === decisions ===

static bool str_eq(const throttle_plugin_string_t *s, const char *c) {
    size_t n = strlen(c);
    return s->len == n && memcmp(s->ptr, c, n) == 0;
}

static const limits_t *configured(const throttle_plugin_string_t *name) {
    for (size_t i = 0; i < config.ntiers; i++) {
        if (str_eq(name, config.tiers[i].name)) return &config.tiers[i].limits;
    }
    return NULL;
}

static const limits_t *builtin(const throttle_plugin_string_t *name) {
    for (size_t i = 0; i < sizeof BUILTIN_TIERS / sizeof BUILTIN_TIERS[0]; i++) {
        if (str_eq(name, BUILTIN_TIERS[i].name)) return &BUILTIN_TIERS[i].limits;
    }
    return NULL;
}

static limits_t anonymous_limits(void) {
    return config.has_anonymous ? config.anonymous : BUILTIN_ANONYMOUS;
}

// Configured, else built in, else the `default` tier.
static limits_t tier_limits(const throttle_plugin_string_t *name) {
    static const throttle_plugin_string_t DEFAULT = {(uint8_t *)"default", 7};
    const limits_t *l = configured(name);
    if (!l) l = builtin(name);
    if (!l) l = configured(&DEFAULT);
    if (!l) l = builtin(&DEFAULT);
    return *l;
}

static limits_t limits_for(const throttle_plugin_string_t *tier) {
    return str_eq(tier, ANONYMOUS) ? anonymous_limits() : tier_limits(tier);
}

// malloc'ed printf.
static char *format(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(NULL, 0, fmt, args);
    va_end(args);
    char *out = malloc((size_t)n + 1);
    va_start(args, fmt);
    vsnprintf(out, (size_t)n + 1, fmt, args);
    va_end(args);
    return out;
}

// Who a request is charged to.
typedef struct {
    char *prefix;
    limits_t limits;
    char *name;
} subject_t;

static subject_t subject(const sluice_policy_types_request_t *req) {
    subject_t s;
    if (str_eq(&req->tenant, ANONYMOUS)) {
        if (req->client_ip.len == 0) {
            s.prefix = format("ip:unknown");
        } else {
            s.prefix = format("ip:%.*s", (int)req->client_ip.len, (const char *)req->client_ip.ptr);
        }
        s.limits = req->tier.len == 0 ? anonymous_limits() : limits_for(&req->tier);
        s.name = format("anonymous access");
    } else {
        s.prefix = format("t:%.*s", (int)req->tenant.len, (const char *)req->tenant.ptr);
        s.limits = limits_for(&req->tier);
        s.name = format("tier %.*s", (int)req->tier.len, (const char *)req->tier.ptr);
    }
    return s;
}

static void subject_free(subject_t *s) {
    free(s->prefix);
    free(s->name);
}

static int64_t saturating_i64(uint64_t n) {
    return n > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)n;
}

static void set_bucket(sluice_policy_types_bucket_t *b, const char *prefix, const char *suffix,
                       uint64_t per_minute, int64_t cost, sluice_policy_types_unit_t unit) {
    throttle_plugin_string_set(&b->key, format("%s:%s", prefix, suffix));
    b->shape.tag = SLUICE_POLICY_TYPES_SHAPE_WINDOW;
    b->shape.val.window.limit = per_minute;
    b->shape.val.window.window_ms = WINDOW_MS;
    b->cost = cost;
    b->unit = unit;
}

static void reject(exports_sluice_policy_throttle_admission_t *ret, char *message) {
    ret->tag = EXPORTS_SLUICE_POLICY_THROTTLE_ADMISSION_REJECT;
    ret->val.reject.status = 429;
    throttle_plugin_string_set(&ret->val.reject.message, message);
    ret->val.reject.retry_after_ms.is_some = false;
}

static uint64_t completion_tokens(const sluice_policy_types_request_t *req) {
    return req->max_tokens.is_some ? req->max_tokens.val : config.completion_estimate_tokens;
}

void exports_sluice_policy_throttle_admit(exports_sluice_policy_throttle_request_t *req,
                                          exports_sluice_policy_throttle_admission_t *ret) {
    subject_t s = subject(req);
    sluice_policy_types_bucket_t *buckets = calloc(2, sizeof *buckets);
    size_t n = 0;
    bool rejected = false;
    if (s.limits.has_rpm) {
        if (s.limits.rpm == 0) {
            reject(ret, format("%s allows no requests", s.name));
            rejected = true;
        } else {
            set_bucket(&buckets[n++], s.prefix, "rpm", s.limits.rpm, 1,
                       SLUICE_POLICY_TYPES_UNIT_REQUESTS);
        }
    }
    if (!rejected && s.limits.has_tpm) {
        uint64_t tokens = (uint64_t)req->estimated_prompt_tokens + completion_tokens(req);
        if (tokens > s.limits.tpm) {
            reject(ret, format("request too large: it may use %llu tokens, more than the %llu "
                               "tokens per minute %s allows; send a shorter prompt or a lower "
                               "max_tokens",
                               (unsigned long long)tokens, (unsigned long long)s.limits.tpm,
                               s.name));
            rejected = true;
        } else {
            set_bucket(&buckets[n++], s.prefix, "tpm", s.limits.tpm, saturating_i64(tokens),
                       SLUICE_POLICY_TYPES_UNIT_TOKENS);
        }
    }
    if (rejected) {
        for (size_t i = 0; i < n; i++) sluice_policy_types_bucket_free(&buckets[i]);
        free(buckets);
    } else {
        ret->tag = EXPORTS_SLUICE_POLICY_THROTTLE_ADMISSION_CHARGE;
        ret->val.charge.ptr = buckets;
        ret->val.charge.len = n;
    }
    subject_free(&s);
    exports_sluice_policy_throttle_request_free(req);
}

void exports_sluice_policy_throttle_settle(exports_sluice_policy_throttle_request_t *req,
                                           exports_sluice_policy_throttle_usage_t *usage,
                                           exports_sluice_policy_throttle_list_bucket_t *ret) {
    subject_t s = subject(req);
    ret->ptr = NULL;
    ret->len = 0;
    if (s.limits.has_tpm) {
        uint64_t charged = (uint64_t)usage->estimated_prompt_tokens + completion_tokens(req);
        uint64_t used = usage->cached
                            ? 0
                            : (uint64_t)usage->prompt_tokens + (uint64_t)usage->completion_tokens;
        int64_t correction = saturating_i64(used) - saturating_i64(charged);
        if (correction != 0) {
            ret->ptr = calloc(1, sizeof *ret->ptr);
            ret->len = 1;
            set_bucket(&ret->ptr[0], s.prefix, "tpm", s.limits.tpm, correction,
                       SLUICE_POLICY_TYPES_UNIT_TOKENS);
        }
    }
    subject_free(&s);
    exports_sluice_policy_throttle_request_free(req);
}
