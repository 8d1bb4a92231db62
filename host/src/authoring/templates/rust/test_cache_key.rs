
    #[test]
    fn derive_keys_on_the_model_and_the_messages() {
        let req = Request {
            messages: vec![message("hi")],
            ..request()
        };
        match Policy::derive(req) {
            Decision::Cache(entry) => assert_eq!(entry.key, "gpt-4o-mini\nuser:hi"),
            Decision::Bypass(why) => panic!("bypassed: {why}"),
        }
    }

    #[test]
    fn streaming_requests_bypass_the_cache() {
        let req = Request {
            streaming: true,
            ..request()
        };
        assert!(matches!(Policy::derive(req), Decision::Bypass(_)));
    }
}
