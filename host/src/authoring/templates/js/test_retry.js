
/** A failed attempt (WIT `attempt`): by default the first, answered 503. */
function attempt(overrides = {}) {
  return {
    number: 1,
    elapsedMs: 100n,
    provider: 'openai',
    model: 'gpt-4o-mini',
    outcome: { tag: 'status', val: { code: 503, retryAfterMs: undefined } },
    ...overrides,
  };
}

test('a 503 is retried', () => {
  assert.equal(app.retry.decide(request(), attempt()).tag, 'retry');
});

test('a 400 is not', () => {
  const outcome = { tag: 'status', val: { code: 400, retryAfterMs: undefined } };
  assert.equal(app.retry.decide(request(), attempt({ outcome })).tag, 'stop');
});
