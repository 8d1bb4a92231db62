
/** A candidate (WIT `candidate`) with the given circuit. */
function candidate(provider, circuit) {
  return {
    provider,
    model: 'gpt-4o-mini',
    kind: 'openai',
    health: { latencyMs: 100, errorRate: 0, circuit, keyHeadroom: 1 },
    price: undefined,
  };
}

test('an open circuit goes last', () => {
  const order = app.route.order(request(), [candidate('a', 'open'), candidate('b', 'closed')]);
  assert.deepEqual(order.map((c) => c.provider), ['b', 'a']);
});

test("otherwise the host's order holds", () => {
  const order = app.route.order(request(), [candidate('a', 'half-open'), candidate('b', 'closed')]);
  assert.deepEqual(order.map((c) => c.provider), ['a', 'b']);
});
