
test('prepare embeds the last message', () => {
  const probe = app.semantic.prepare(request({ messages: [message({ text: 'hi' })] }));
  assert.equal(probe.text, 'hi');
});

test('accept takes close matches only', () => {
  assert.equal(app.semantic.accept(request(), { score: 0.99, prompt: 'hi', ageSeconds: 5 }), true);
  assert.equal(app.semantic.accept(request(), { score: 0.5, prompt: 'hi', ageSeconds: 5 }), false);
});
