
#define MAX_ATTEMPTS 3

void exports_sluice_policy_retry_decide(exports_sluice_policy_retry_request_t *req,
                                        exports_sluice_policy_retry_attempt_t *attempt,
                                        exports_sluice_policy_retry_verdict_t *ret) {
    uint64_t backoff = 200 * (uint64_t)attempt->number;
    bool retry = attempt->number < MAX_ATTEMPTS;
    if (attempt->outcome.tag == EXPORTS_SLUICE_POLICY_RETRY_OUTCOME_STATUS) {
        exports_sluice_policy_retry_status_outcome_t *s = &attempt->outcome.val.status;
        retry = retry && (s->code == 429 || s->code >= 500);
        if (s->retry_after_ms.is_some) {
            backoff = s->retry_after_ms.val;
        }
    }
    if (retry) {
        ret->tag = EXPORTS_SLUICE_POLICY_RETRY_VERDICT_RETRY;
        ret->val.retry = backoff;
    } else {
        ret->tag = EXPORTS_SLUICE_POLICY_RETRY_VERDICT_STOP;
    }
    exports_sluice_policy_retry_attempt_free(attempt);
    exports_sluice_policy_retry_request_free(req);
}
