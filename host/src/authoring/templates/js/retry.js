
const MAX_ATTEMPTS = 3;

export const retry = {
  decide(req, attempt) {
    if (attempt.number >= MAX_ATTEMPTS) {
      return { tag: 'stop' };
    }
    let backoff = BigInt(200 * attempt.number);
    if (attempt.outcome.tag === 'status') {
      const status = attempt.outcome.val;
      if (status.code !== 429 && status.code < 500) {
        return { tag: 'stop' };
      }
      if (status.retryAfterMs !== undefined) {
        backoff = status.retryAfterMs;
      }
    }
    return { tag: 'retry', val: backoff };
  },
};
