
static void derive_keys_on_model_and_messages(void) {
    {{world}}_request_t req = request();
    exports_sluice_policy_cache_key_decision_t decision = {0};
    exports_sluice_policy_cache_key_derive(&req, &decision);
    CHECK(decision.tag == EXPORTS_SLUICE_POLICY_CACHE_KEY_DECISION_CACHE);
    if (decision.tag == EXPORTS_SLUICE_POLICY_CACHE_KEY_DECISION_CACHE) {
        CHECK_STR(decision.val.cache.key, "gpt-4o-mini\nuser:hello");
        CHECK(decision.val.cache.scope == EXPORTS_SLUICE_POLICY_CACHE_KEY_SCOPE_TENANT);
    }
    exports_sluice_policy_cache_key_decision_free(&decision);
}

static void derive_bypasses_streams(void) {
    {{world}}_request_t req = request();
    req.streaming = true;
    exports_sluice_policy_cache_key_decision_t decision = {0};
    exports_sluice_policy_cache_key_derive(&req, &decision);
    CHECK(decision.tag == EXPORTS_SLUICE_POLICY_CACHE_KEY_DECISION_BYPASS);
    exports_sluice_policy_cache_key_decision_free(&decision);
}

int main(void) {
    RUN(init_accepts_an_empty_config);
    RUN(derive_keys_on_model_and_messages);
    RUN(derive_bypasses_streams);
    return summary();
}
