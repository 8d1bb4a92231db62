from typing import Optional

from wit_world.exports.semantic import Candidate, Probe
from wit_world.imports.types import Request

THRESHOLD = 0.95


@checked
class Semantic(exports.Semantic):
    def prepare(self, req: Request) -> Optional[Probe]:
        if not req.messages:
            return None
        return Probe(text=req.messages[-1].text, namespace=req.model, threshold=THRESHOLD)

    def accept(self, req: Request, candidate: Candidate) -> bool:
        return candidate.score >= THRESHOLD
