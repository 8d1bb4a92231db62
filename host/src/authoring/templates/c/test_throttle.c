
static void admit_charges_one_request_to_the_tenant(void) {
    {{world}}_request_t req = request();
    set(&req.tenant, "globex");
    exports_sluice_policy_throttle_admission_t admission = {0};
    exports_sluice_policy_throttle_admit(&req, &admission);
    CHECK(admission.tag == EXPORTS_SLUICE_POLICY_THROTTLE_ADMISSION_CHARGE);
    CHECK(admission.val.charge.len == 1);
    if (admission.val.charge.len == 1) {
        CHECK_STR(admission.val.charge.ptr[0].key, "t:globex:rpm");
        CHECK(admission.val.charge.ptr[0].cost == 1);
    }
    exports_sluice_policy_throttle_admission_free(&admission);
}

static void settle_corrects_nothing(void) {
    {{world}}_request_t req = request();
    exports_sluice_policy_throttle_usage_t usage = {
        .prompt_tokens = 2,
        .completion_tokens = 10,
        .estimated_prompt_tokens = 2,
        .cached = false,
    };
    exports_sluice_policy_throttle_list_bucket_t corrections = {0};
    exports_sluice_policy_throttle_settle(&req, &usage, &corrections);
    CHECK(corrections.len == 0);
    exports_sluice_policy_throttle_list_bucket_free(&corrections);
}

int main(void) {
    RUN(init_accepts_an_empty_config);
    RUN(admit_charges_one_request_to_the_tenant);
    RUN(settle_corrects_nothing);
    return summary();
}
