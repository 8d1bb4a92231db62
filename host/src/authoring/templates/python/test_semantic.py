

class SemanticTest(unittest.TestCase):
    def test_prepare_embeds_the_last_message(self):
        probe = app.Semantic().prepare(request(messages=[message(text="hi")]))
        self.assertEqual(probe.text, "hi")

    def test_accept_takes_close_matches_only(self):
        from wit_world.exports.semantic import Candidate

        close = Candidate(score=0.99, prompt="hi", age_seconds=5)
        far = Candidate(score=0.5, prompt="hi", age_seconds=5)
        self.assertTrue(app.Semantic().accept(request(), close))
        self.assertFalse(app.Semantic().accept(request(), far))


if __name__ == "__main__":
    unittest.main()
