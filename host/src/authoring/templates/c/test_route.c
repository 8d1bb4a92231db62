
/// A candidate (WIT `candidate`) on a healthy provider unless `circuit`
/// says otherwise, owned by the list it is put in.
static exports_sluice_policy_route_candidate_t candidate(const char *provider,
                                                         exports_sluice_policy_route_circuit_t circuit) {
    exports_sluice_policy_route_candidate_t c = {0};
    {{world}}_string_dup(&c.provider, provider);
    {{world}}_string_dup(&c.model, "gpt-4o-mini");
    {{world}}_string_dup(&c.kind, "openai");
    c.health.latency_ms = 120.0;
    c.health.circuit = circuit;
    c.health.key_headroom = 1.0;
    return c;
}

static void order_puts_an_open_circuit_last(void) {
    {{world}}_request_t req = request();
    exports_sluice_policy_route_list_candidate_t candidates = {
        .ptr = calloc(2, sizeof(exports_sluice_policy_route_candidate_t)),
        .len = 2,
    };
    candidates.ptr[0] = candidate("primary", EXPORTS_SLUICE_POLICY_ROUTE_CIRCUIT_OPEN);
    candidates.ptr[1] = candidate("secondary", EXPORTS_SLUICE_POLICY_ROUTE_CIRCUIT_CLOSED);
    exports_sluice_policy_route_list_choice_t order = {0};
    exports_sluice_policy_route_order(&req, &candidates, &order);
    CHECK(order.len == 2);
    if (order.len == 2) {
        CHECK_STR(order.ptr[0].provider, "secondary");
        CHECK_STR(order.ptr[1].provider, "primary");
    }
    exports_sluice_policy_route_list_choice_free(&order);
}

static void order_keeps_the_hosts_order_when_all_are_healthy(void) {
    {{world}}_request_t req = request();
    exports_sluice_policy_route_list_candidate_t candidates = {
        .ptr = calloc(2, sizeof(exports_sluice_policy_route_candidate_t)),
        .len = 2,
    };
    candidates.ptr[0] = candidate("primary", EXPORTS_SLUICE_POLICY_ROUTE_CIRCUIT_CLOSED);
    candidates.ptr[1] = candidate("secondary", EXPORTS_SLUICE_POLICY_ROUTE_CIRCUIT_CLOSED);
    exports_sluice_policy_route_list_choice_t order = {0};
    exports_sluice_policy_route_order(&req, &candidates, &order);
    CHECK(order.len == 2);
    if (order.len == 2) {
        CHECK_STR(order.ptr[0].provider, "primary");
        CHECK_STR(order.ptr[1].provider, "secondary");
    }
    exports_sluice_policy_route_list_choice_free(&order);
}

int main(void) {
    RUN(init_accepts_an_empty_config);
    RUN(order_puts_an_open_circuit_last);
    RUN(order_keeps_the_hosts_order_when_all_are_healthy);
    return summary();
}
