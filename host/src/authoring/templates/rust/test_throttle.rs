
    #[test]
    fn admit_charges_one_request_to_the_tenant() {
        let req = Request {
            tenant: "acme".into(),
            ..request()
        };
        match Policy::admit(req) {
            Admission::Charge(buckets) => {
                assert_eq!(buckets.len(), 1);
                assert_eq!(buckets[0].key, "t:acme:rpm");
                assert_eq!(buckets[0].cost, 1);
            }
            Admission::Reject(_) => panic!("rejected"),
        }
    }

    #[test]
    fn settle_corrects_nothing() {
        let usage = Usage {
            prompt_tokens: 2,
            completion_tokens: 10,
            estimated_prompt_tokens: 2,
            cached: false,
        };
        assert!(Policy::settle(request(), usage).is_empty());
    }
}
