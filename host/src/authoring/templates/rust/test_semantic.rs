
    #[test]
    fn prepare_embeds_the_last_message() {
        let req = Request {
            messages: vec![message("hi")],
            ..request()
        };
        assert_eq!(Policy::prepare(req).map(|p| p.text), Some("hi".into()));
    }

    #[test]
    fn accept_takes_close_matches_only() {
        let candidate = |score| Candidate {
            score,
            prompt: "hi".into(),
            age_seconds: 5,
        };
        assert!(Policy::accept(request(), candidate(0.99)));
        assert!(!Policy::accept(request(), candidate(0.5)));
    }
}
