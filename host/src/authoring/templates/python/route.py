from typing import List

from wit_world.exports.route import Candidate, Choice, Circuit
from wit_world.imports.types import Request


@checked
class Route(exports.Route):
    def order(self, req: Request, candidates: List[Candidate]) -> List[Choice]:
        """The candidates in the host's order, those whose circuit is open last."""
        ranked = sorted(candidates, key=lambda c: c.health.circuit == Circuit.OPEN)
        return [Choice(provider=c.provider, model=c.model) for c in ranked]
