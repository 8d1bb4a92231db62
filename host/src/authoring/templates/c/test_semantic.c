
static void prepare_probes_with_the_last_message(void) {
    {{world}}_request_t req = request();
    exports_sluice_policy_semantic_probe_t probe = {0};
    CHECK(exports_sluice_policy_semantic_prepare(&req, &probe));
    CHECK_STR(probe.text, "hello");
    CHECK_STR(probe.namespace_, "gpt-4o-mini");
    exports_sluice_policy_semantic_probe_free(&probe);
}

static void accept_takes_close_candidates_only(void) {
    const float scores[] = {0.99f, 0.5f};
    for (int i = 0; i < 2; i++) {
        {{world}}_request_t req = request();
        exports_sluice_policy_semantic_candidate_t candidate = {.score = scores[i], .age_seconds = 30};
        {{world}}_string_dup(&candidate.prompt, "hello there");
        CHECK(exports_sluice_policy_semantic_accept(&req, &candidate) == (i == 0));
    }
}

int main(void) {
    RUN(init_accepts_an_empty_config);
    RUN(prepare_probes_with_the_last_message);
    RUN(accept_takes_close_candidates_only);
    return summary();
}
