

class CacheKeyTest(unittest.TestCase):
    def test_derive_keys_on_the_model_and_the_messages(self):
        from wit_world.exports.cache_key import Decision_Cache

        decision = app.CacheKey().derive(request(messages=[message(text="hi")]))
        self.assertIsInstance(decision, Decision_Cache)
        self.assertEqual(decision.value.key, "gpt-4o-mini\nuser:hi")

    def test_streaming_requests_bypass_the_cache(self):
        from wit_world.exports.cache_key import Decision_Bypass

        self.assertIsInstance(app.CacheKey().derive(request(streaming=True)), Decision_Bypass)


if __name__ == "__main__":
    unittest.main()
