

class ThrottleTest(unittest.TestCase):
    def test_admit_charges_one_request_to_the_tenant(self):
        from wit_world.exports.throttle import Admission_Charge

        admission = app.Throttle().admit(request(tenant="acme"))
        self.assertIsInstance(admission, Admission_Charge)
        self.assertEqual([b.key for b in admission.value], ["t:acme:rpm"])
        self.assertEqual(admission.value[0].cost, 1)

    def test_settle_corrects_nothing(self):
        from wit_world.exports.throttle import Usage

        usage = Usage(prompt_tokens=2, completion_tokens=10, estimated_prompt_tokens=2, cached=False)
        self.assertEqual(app.Throttle().settle(request(), usage), [])


if __name__ == "__main__":
    unittest.main()
