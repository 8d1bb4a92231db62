
    use exports::sluice::policy::route::Health;

    /// A candidate (WIT `candidate`) with the given circuit.
    fn candidate(provider: &str, circuit: Circuit) -> Candidate {
        Candidate {
            provider: provider.into(),
            model: "gpt-4o-mini".into(),
            kind: "openai".into(),
            health: Health {
                latency_ms: 100.0,
                error_rate: 0.0,
                circuit,
                key_headroom: 1.0,
            },
            price: None,
        }
    }

    #[test]
    fn an_open_circuit_goes_last() {
        let order = Policy::order(
            request(),
            vec![candidate("a", Circuit::Open), candidate("b", Circuit::Closed)],
        );
        let names: Vec<&str> = order.iter().map(|c| c.provider.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn otherwise_the_hosts_order_holds() {
        let order = Policy::order(
            request(),
            vec![candidate("a", Circuit::HalfOpen), candidate("b", Circuit::Closed)],
        );
        let names: Vec<&str> = order.iter().map(|c| c.provider.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
