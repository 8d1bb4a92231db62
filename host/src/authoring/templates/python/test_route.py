

def candidate(provider, circuit):
    """A candidate (WIT `candidate`) with the given circuit."""
    from wit_world.exports.route import Candidate, Health

    health = Health(latency_ms=100.0, error_rate=0.0, circuit=circuit, key_headroom=1.0)
    return Candidate(provider=provider, model="gpt-4o-mini", kind="openai", health=health, price=None)


class RouteTest(unittest.TestCase):
    def test_an_open_circuit_goes_last(self):
        from wit_world.exports.route import Circuit

        order = app.Route().order(request(), [candidate("a", Circuit.OPEN), candidate("b", Circuit.CLOSED)])
        self.assertEqual([c.provider for c in order], ["b", "a"])

    def test_otherwise_the_hosts_order_holds(self):
        from wit_world.exports.route import Circuit

        order = app.Route().order(request(), [candidate("a", Circuit.HALF_OPEN), candidate("b", Circuit.CLOSED)])
        self.assertEqual([c.provider for c in order], ["a", "b"])


if __name__ == "__main__":
    unittest.main()
