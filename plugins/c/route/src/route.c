// sluice reference route policy, in C.
//
// The same decisions as the Rust reference plugin (plugins/route/src/
// logic.rs). Candidates fall in three groups, tried in this order:
// healthy (circuit not open, error rate at most max_error_percent, some key
// headroom, latency at most max_latency_ms when set), degraded (circuit not
// open, not healthy), open (circuit open: tried last, never dropped).
// Within a group, priced candidates come first, cheapest first (prompt
// estimate x input price + max_tokens or completion_tokens x output
// price), then the lower latency, then the host's order.
//
// Config (all fields optional):
//   {"max_error_percent": 50, "max_latency_ms": 0, "completion_tokens": 256}

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "route_plugin.h"

// Each call runs in a fresh instance after init, so this is per call.
static struct {
    uint64_t max_error_percent;
    uint64_t max_latency_ms;
    uint64_t completion_tokens;
} config = {.max_error_percent = 50, .max_latency_ms = 0, .completion_tokens = 256};

// === config ===

static bool parse_config(const char *text, size_t len, char *error, size_t error_len) {
    json_t j;
    json_init(&j, text, len);
    bool first = true;
    char *key;
    bool ok = true;
    if (json_at_end(&j)) return true;
    while (ok && json_next_key(&j, &first, &key, "")) {
        if (strcmp(key, "max_error_percent") == 0) {
            ok = json_uint(&j, UINT32_MAX, &config.max_error_percent, "max_error_percent");
            if (ok && config.max_error_percent > 100) {
                char what[96];
                snprintf(what, sizeof what, "%llu is not a percentage (0 to 100)",
                         (unsigned long long)config.max_error_percent);
                ok = json_fail(&j, "max_error_percent", what);
            }
        } else if (strcmp(key, "max_latency_ms") == 0) {
            ok = json_uint(&j, UINT64_MAX, &config.max_latency_ms, "max_latency_ms");
        } else if (strcmp(key, "completion_tokens") == 0) {
            ok = json_uint(&j, UINT32_MAX, &config.completion_tokens, "completion_tokens");
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

bool exports_sluice_policy_lifecycle_init(route_plugin_string_t *text,
                                          route_plugin_string_t *err) {
    char error[256];
    bool ok = parse_config((const char *)text->ptr, text->len, error, sizeof error);
    if (!ok) {
        route_plugin_string_dup(err, error);
    }
    route_plugin_string_free(text);
    return ok;
}

// === decisions ===

typedef struct {
    int group;       // 0 healthy, 1 degraded, 2 open
    bool priced;
    double cost;
    double latency;
    size_t index;
} rank_t;

static int group(const exports_sluice_policy_route_health_t *h) {
    if (h->circuit == EXPORTS_SLUICE_POLICY_ROUTE_CIRCUIT_OPEN) return 2;
    bool healthy = h->error_rate * 100.0 <= (double)config.max_error_percent &&
                   h->key_headroom > 0.0 &&
                   (config.max_latency_ms == 0 || h->latency_ms <= (double)config.max_latency_ms);
    return healthy ? 0 : 1;
}

static int compare_double(double a, double b) { return a < b ? -1 : (a > b ? 1 : 0); }

static int compare(const void *pa, const void *pb) {
    const rank_t *a = pa, *b = pb;
    if (a->group != b->group) return a->group < b->group ? -1 : 1;
    if (a->priced != b->priced) return a->priced ? -1 : 1;
    if (a->priced) {
        int c = compare_double(a->cost, b->cost);
        if (c != 0) return c;
    }
    int c = compare_double(a->latency, b->latency);
    if (c != 0) return c;
    return a->index < b->index ? -1 : (a->index > b->index ? 1 : 0);
}

void exports_sluice_policy_route_order(exports_sluice_policy_route_request_t *req,
                                       exports_sluice_policy_route_list_candidate_t *candidates,
                                       exports_sluice_policy_route_list_choice_t *ret) {
    size_t n = candidates->len;
    rank_t *ranks = calloc(n ? n : 1, sizeof *ranks);
    uint64_t completion = req->max_tokens.is_some ? req->max_tokens.val : config.completion_tokens;
    for (size_t i = 0; i < n; i++) {
        const exports_sluice_policy_route_candidate_t *c = &candidates->ptr[i];
        ranks[i].group = group(&c->health);
        ranks[i].priced = c->price.is_some;
        if (c->price.is_some) {
            ranks[i].cost = (double)req->estimated_prompt_tokens * c->price.val.input_per_mtok +
                            (double)completion * c->price.val.output_per_mtok;
        }
        ranks[i].latency = c->health.latency_ms;
        ranks[i].index = i;
    }
    qsort(ranks, n, sizeof *ranks, compare);
    ret->ptr = calloc(n ? n : 1, sizeof *ret->ptr);
    ret->len = n;
    for (size_t i = 0; i < n; i++) {
        // Move the names into the answer; the emptied candidates are freed below.
        exports_sluice_policy_route_candidate_t *c = &candidates->ptr[ranks[i].index];
        ret->ptr[i].provider = c->provider;
        ret->ptr[i].model = c->model;
        memset(&c->provider, 0, sizeof c->provider);
        memset(&c->model, 0, sizeof c->model);
    }
    free(ranks);
    exports_sluice_policy_route_list_candidate_free(candidates);
    exports_sluice_policy_route_request_free(req);
}
