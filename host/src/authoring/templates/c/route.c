
// The candidates in the host's order, those whose circuit is open last.
void exports_sluice_policy_route_order(exports_sluice_policy_route_request_t *req,
                                       exports_sluice_policy_route_list_candidate_t *candidates,
                                       exports_sluice_policy_route_list_choice_t *ret) {
    size_t n = candidates->len;
    ret->ptr = calloc(n ? n : 1, sizeof *ret->ptr);
    ret->len = 0;
    for (int open = 0; open <= 1; open++) {
        for (size_t i = 0; i < n; i++) {
            exports_sluice_policy_route_candidate_t *c = &candidates->ptr[i];
            bool is_open = c->health.circuit == EXPORTS_SLUICE_POLICY_ROUTE_CIRCUIT_OPEN;
            if (is_open != (open == 1)) continue;
            // Move the names into the answer; the emptied candidate is freed below.
            exports_sluice_policy_route_choice_t *choice = &ret->ptr[ret->len++];
            choice->provider = c->provider;
            choice->model = c->model;
            c->provider.ptr = NULL;
            c->provider.len = 0;
            c->model.ptr = NULL;
            c->model.len = 0;
        }
    }
    exports_sluice_policy_route_list_candidate_free(candidates);
    exports_sluice_policy_route_request_free(req);
}
