from wit_world.exports.retry import Attempt, Outcome_Status, Verdict, Verdict_Retry, Verdict_Stop
from wit_world.imports.types import Request

MAX_ATTEMPTS = 3


@checked
class Retry(exports.Retry):
    def decide(self, req: Request, attempt: Attempt) -> Verdict:
        if attempt.number >= MAX_ATTEMPTS:
            return Verdict_Stop()
        backoff = 200 * attempt.number
        if isinstance(attempt.outcome, Outcome_Status):
            status = attempt.outcome.value
            if status.code != 429 and status.code < 500:
                return Verdict_Stop()
            if status.retry_after_ms is not None:
                backoff = status.retry_after_ms
        return Verdict_Retry(backoff)
