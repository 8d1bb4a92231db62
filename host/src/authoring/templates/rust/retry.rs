
use exports::sluice::policy::retry::{Attempt, Guest as Retry, Outcome, Verdict};
use sluice::policy::types::Request;

const MAX_ATTEMPTS: u32 = 3;

impl Retry for Policy {
    fn decide(_req: Request, attempt: Attempt) -> Verdict {
        if attempt.number >= MAX_ATTEMPTS {
            return Verdict::Stop;
        }
        match attempt.outcome {
            Outcome::Status(s) if s.code == 429 || s.code >= 500 => {
                Verdict::Retry(s.retry_after_ms.unwrap_or(200 * u64::from(attempt.number)))
            }
            Outcome::Status(_) => Verdict::Stop,
            Outcome::Timeout | Outcome::ConnectError(_) => {
                Verdict::Retry(200 * u64::from(attempt.number))
            }
        }
    }
}
