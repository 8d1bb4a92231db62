
#define REQUESTS_PER_MINUTE 60

void exports_sluice_policy_throttle_admit(exports_sluice_policy_throttle_request_t *req,
                                          exports_sluice_policy_throttle_admission_t *ret) {
    exports_sluice_policy_throttle_bucket_t *bucket = calloc(1, sizeof *bucket);
    size_t cap = req->tenant.len + 8;
    char *key = malloc(cap);
    snprintf(key, cap, "t:%.*s:rpm", (int)req->tenant.len, (const char *)req->tenant.ptr);
    {{world}}_string_set(&bucket->key, key); // the bucket now owns `key`
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
