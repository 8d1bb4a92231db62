from wit_world.exports.throttle import Admission, Admission_Charge, Usage
from wit_world.imports.types import Bucket, Request, Shape_Window, Unit, WindowSpec

REQUESTS_PER_MINUTE = 60


@checked
class Throttle(exports.Throttle):
    def admit(self, req: Request) -> Admission:
        return Admission_Charge([
            Bucket(
                key=f"t:{req.tenant}:rpm",
                shape=Shape_Window(WindowSpec(limit=REQUESTS_PER_MINUTE, window_ms=60_000)),
                cost=1,
                unit=Unit.REQUESTS,
            )
        ])

    def settle(self, req: Request, usage: Usage):
        return []
