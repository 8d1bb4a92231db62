
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
