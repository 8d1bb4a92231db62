
const REQUESTS_PER_MINUTE = 60n;

export const throttle = {
  admit(req) {
    return {
      tag: 'charge',
      val: [{
        key: `t:${req.tenant}:rpm`,
        shape: { tag: 'window', val: { limit: REQUESTS_PER_MINUTE, windowMs: 60000n } },
        cost: 1n,
        unit: 'requests',
      }],
    };
  },
  settle(req, usage) {
    return [];
  },
};
