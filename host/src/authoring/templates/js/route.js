
export const route = {
  // The candidates in the host's order, those whose circuit is open last.
  order(req, candidates) {
    const open = (c) => c.health.circuit === 'open';
    return [...candidates.filter((c) => !open(c)), ...candidates.filter(open)].map((c) => ({
      provider: c.provider,
      model: c.model,
    }));
  },
};
