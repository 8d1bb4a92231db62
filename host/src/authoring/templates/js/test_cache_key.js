
test('derive keys on the model and the messages', () => {
  const decision = app.cacheKey.derive(request({ messages: [message({ text: 'hi' })] }));
  assert.equal(decision.tag, 'cache');
  assert.equal(decision.val.key, 'gpt-4o-mini\nuser:hi');
});

test('streaming requests bypass the cache', () => {
  assert.equal(app.cacheKey.derive(request({ streaming: true })).tag, 'bypass');
});
