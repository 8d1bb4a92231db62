
test('admit charges one request to the tenant', () => {
  const admission = app.throttle.admit(request({ tenant: 'acme' }));
  assert.equal(admission.tag, 'charge');
  assert.equal(admission.val.length, 1);
  assert.equal(admission.val[0].key, 't:acme:rpm');
  assert.equal(admission.val[0].cost, 1n);
});

test('settle corrects nothing', () => {
  const usage = { promptTokens: 2, completionTokens: 10, estimatedPromptTokens: 2, cached: false };
  assert.deepEqual(app.throttle.settle(request(), usage), []);
});
