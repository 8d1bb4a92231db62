// Tests of the {{name}} policy with node's own test runner: `node --test`.
// They call app.js directly (no component, no gateway); the builders give
// every field a default, so a test names only what it is about.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as app from '../app.js';

/** A request as the policy sees it (WIT `request`, camelCase fields). */
export function request(overrides = {}) {
  return {
    id: 'test',
    route: 'chat',
    provider: 'openai',
    model: 'gpt-4o-mini',
    streaming: false,
    maxTokens: undefined,
    estimatedPromptTokens: 2,
    temperature: undefined,
    messages: [message()],
    params: [],
    tenant: 'acme',
    tier: 'free',
    keyId: undefined,
    clientIp: '127.0.0.1',
    headers: [],
    ...overrides,
  };
}

/** One message (WIT `message`). */
export function message(overrides = {}) {
  return { role: 'user', text: 'hello', hasToolCalls: false, extraJson: undefined, ...overrides };
}

test('init accepts an empty config', () => {
  app.lifecycle.init('{}');
});
