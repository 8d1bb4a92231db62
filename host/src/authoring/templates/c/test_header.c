// Tests of the {{name}} policy: `make test` builds them with src/*.c by the
// host's C compiler (with AddressSanitizer) and runs the binary; no
// component, no gateway. They use the generated header and its helpers
// (`sluice plugin bindings .` writes them to build/bindings/; the Makefile
// runs it). The builders give every field a default, so a test sets only
// what it is about:
//
//     {{world}}_request_t req = request();
//     set(&req.tenant, "globex");
//
// A policy that calls host imports (log, state, clock...) gets them from
// the gateway; here, define the ones it calls in this file (the header
// declares them), e.g. `uint64_t sluice_policy_clock_now_ms(void) { return 0; }`.

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "{{world}}.h"

typedef sluice_policy_types_request_t {{world}}_request_t;

static bool failed;

/// Fails the running test (and goes on with it) when `cond` is false.
#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            failed = true;                                                     \
        }                                                                      \
    } while (0)

/// Fails the running test unless the WIT string `s` is `want`.
#define CHECK_STR(s, want)                                                     \
    do {                                                                       \
        if (!equals((s), (want))) {                                            \
            fprintf(stderr, "%s:%d: check failed: %s is \"%.*s\", not \"%s\"\n", \
                    __FILE__, __LINE__, #s, (int)(s).len,                      \
                    (const char *)(s).ptr, (want));                            \
            failed = true;                                                     \
        }                                                                      \
    } while (0)

static int passed_count, failed_count;

/// Runs one test function and prints TAP: `ok - name` or `not ok - name`.
#define RUN(test)                                                              \
    do {                                                                       \
        failed = false;                                                        \
        test();                                                                \
        printf("%s - %s\n", failed ? "not ok" : "ok", #test);                  \
        *(failed ? &failed_count : &passed_count) += 1;                        \
    } while (0)

/// The summary line and the exit status: 0 when every test passed.
static int summary(void) {
    printf("# pass %d\n# fail %d\n", passed_count, failed_count);
    return failed_count == 0 ? 0 : 1;
}

/// Whether the WIT string `s` holds `want`.
static bool equals({{world}}_string_t s, const char *want) {
    return s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

/// Replaces the WIT string `s` (freeing the old one) with a copy of `text`.
static void set({{world}}_string_t *s, const char *text) {
    {{world}}_string_free(s);
    {{world}}_string_dup(s, text);
}

/// One message (WIT `message`), owned by the caller.
static sluice_policy_types_message_t message(const char *role, const char *text) {
    sluice_policy_types_message_t m = {0};
    {{world}}_string_dup(&m.role, role);
    {{world}}_string_dup(&m.text, text);
    return m;
}

/// A request as the policy sees it (WIT `request`): one user message
/// "hello" to gpt-4o-mini from tenant acme, tier free. The export it is
/// passed to owns (and frees) it.
static {{world}}_request_t request(void) {
    {{world}}_request_t req = {0};
    {{world}}_string_dup(&req.id, "test");
    req.route = SLUICE_POLICY_TYPES_ROUTE_CHAT;
    {{world}}_string_dup(&req.provider, "openai");
    {{world}}_string_dup(&req.model, "gpt-4o-mini");
    req.estimated_prompt_tokens = 2;
    req.messages.len = 1;
    req.messages.ptr = calloc(1, sizeof *req.messages.ptr);
    req.messages.ptr[0] = message("user", "hello");
    {{world}}_string_dup(&req.tenant, "acme");
    {{world}}_string_dup(&req.tier, "free");
    {{world}}_string_dup(&req.client_ip, "127.0.0.1");
    return req;
}

static void init_accepts_an_empty_config(void) {
    {{world}}_string_t config = {0};
    {{world}}_string_t err = {0};
    {{world}}_string_dup(&config, "{}");
    CHECK(exports_sluice_policy_lifecycle_init(&config, &err));
    {{world}}_string_free(&err);
}
