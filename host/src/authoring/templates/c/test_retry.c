
/// An attempt (WIT `attempt`) that got HTTP `code`, owned by the caller.
static exports_sluice_policy_retry_attempt_t attempt(uint32_t number, uint16_t code) {
    exports_sluice_policy_retry_attempt_t a = {.number = number, .elapsed_ms = 120};
    {{world}}_string_dup(&a.provider, "openai");
    {{world}}_string_dup(&a.model, "gpt-4o-mini");
    a.outcome.tag = EXPORTS_SLUICE_POLICY_RETRY_OUTCOME_STATUS;
    a.outcome.val.status.code = code;
    return a;
}

static void decide_retries_a_503(void) {
    {{world}}_request_t req = request();
    exports_sluice_policy_retry_attempt_t a = attempt(1, 503);
    exports_sluice_policy_retry_verdict_t verdict = {0};
    exports_sluice_policy_retry_decide(&req, &a, &verdict);
    CHECK(verdict.tag == EXPORTS_SLUICE_POLICY_RETRY_VERDICT_RETRY);
    exports_sluice_policy_retry_verdict_free(&verdict);
}

static void decide_stops_on_a_400_and_after_three_attempts(void) {
    const uint32_t numbers[] = {1, 3};
    const uint16_t codes[] = {400, 503};
    for (int i = 0; i < 2; i++) {
        {{world}}_request_t req = request();
        exports_sluice_policy_retry_attempt_t a = attempt(numbers[i], codes[i]);
        exports_sluice_policy_retry_verdict_t verdict = {0};
        exports_sluice_policy_retry_decide(&req, &a, &verdict);
        CHECK(verdict.tag == EXPORTS_SLUICE_POLICY_RETRY_VERDICT_STOP);
        exports_sluice_policy_retry_verdict_free(&verdict);
    }
}

int main(void) {
    RUN(init_accepts_an_empty_config);
    RUN(decide_retries_a_503);
    RUN(decide_stops_on_a_400_and_after_three_attempts);
    return summary();
}
