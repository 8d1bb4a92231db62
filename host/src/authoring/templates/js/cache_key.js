
export const cacheKey = {
  derive(req) {
    if (req.streaming) {
      return { tag: 'bypass', val: 'streaming' };
    }
    const key = req.model + req.messages.map((m) => `\n${m.role}:${m.text}`).join('');
    return { tag: 'cache', val: { key, ttlSeconds: 300, scope: 'tenant' } };
  },
};
