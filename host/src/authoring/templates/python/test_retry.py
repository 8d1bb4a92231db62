

def attempt(**overrides):
    """A failed attempt (WIT `attempt`): by default the first, answered 503."""
    from wit_world.exports.retry import Attempt, Outcome_Status, StatusOutcome

    fields = dict(
        number=1,
        elapsed_ms=100,
        provider="openai",
        model="gpt-4o-mini",
        outcome=Outcome_Status(StatusOutcome(code=503, retry_after_ms=None)),
    )
    fields.update(overrides)
    return Attempt(**fields)


class RetryTest(unittest.TestCase):
    def test_a_503_is_retried(self):
        from wit_world.exports.retry import Verdict_Retry

        self.assertIsInstance(app.Retry().decide(request(), attempt()), Verdict_Retry)

    def test_a_400_is_not(self):
        from wit_world.exports.retry import Outcome_Status, StatusOutcome, Verdict_Stop

        outcome = Outcome_Status(StatusOutcome(code=400, retry_after_ms=None))
        self.assertIsInstance(app.Retry().decide(request(), attempt(outcome=outcome)), Verdict_Stop)


if __name__ == "__main__":
    unittest.main()
