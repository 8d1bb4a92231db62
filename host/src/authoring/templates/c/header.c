// {{name}}: a sluice {{kind}} policy in C. Build with `sluice plugin build`
// (bindings are generated into build/bindings/{{world}}.h), run its tests
// (test/test_policy.c) with `make test`, try the component with
// `sluice plugin test build/{{name}}.wasm --kind {{kind}} --input samples/request.json`.
//
// Memory: an export owns its arguments (free them with the generated
// *_free functions); what it returns is malloc'ed and freed by the
// generated code after the host has read it. Each call runs in a fresh
// instance, so nothing here outlives one request.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "{{world}}.h"

// Called with the plugin's config (JSON) before every call; return false
// with *err set ({{world}}_string_dup) to reject the plugin at load time.
bool exports_sluice_policy_lifecycle_init({{world}}_string_t *config, {{world}}_string_t *err) {
    (void)err;
    {{world}}_string_free(config);
    return true;
}
