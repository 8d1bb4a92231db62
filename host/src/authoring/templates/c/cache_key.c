
void exports_sluice_policy_cache_key_derive(exports_sluice_policy_cache_key_request_t *req,
                                            exports_sluice_policy_cache_key_decision_t *ret) {
    if (req->streaming) {
        ret->tag = EXPORTS_SLUICE_POLICY_CACHE_KEY_DECISION_BYPASS;
        {{world}}_string_dup(&ret->val.bypass, "streaming");
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
