
const THRESHOLD = 0.95;

export const semantic = {
  prepare(req) {
    if (req.messages.length === 0) {
      return undefined;
    }
    const last = req.messages[req.messages.length - 1];
    return { text: last.text, namespace: req.model, threshold: THRESHOLD };
  },
  accept(req, candidate) {
    return candidate.score >= THRESHOLD;
  },
};
