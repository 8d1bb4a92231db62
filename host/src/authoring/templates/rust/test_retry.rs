
    use exports::sluice::policy::retry::StatusOutcome;

    /// A failed attempt (WIT `attempt`): by default the first, answered 503.
    fn attempt(code: u16) -> Attempt {
        Attempt {
            number: 1,
            elapsed_ms: 100,
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            outcome: Outcome::Status(StatusOutcome {
                code,
                retry_after_ms: None,
            }),
        }
    }

    #[test]
    fn a_503_is_retried() {
        assert!(matches!(
            Policy::decide(request(), attempt(503)),
            Verdict::Retry(_)
        ));
    }

    #[test]
    fn a_400_is_not() {
        assert!(matches!(
            Policy::decide(request(), attempt(400)),
            Verdict::Stop
        ));
    }
}
