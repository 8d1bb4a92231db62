
use exports::sluice::policy::throttle::{Admission, Guest as Throttle, Usage};
use sluice::policy::types::{Bucket, Request, Shape, Unit, WindowSpec};

const REQUESTS_PER_MINUTE: u64 = 60;

impl Throttle for Policy {
    fn admit(req: Request) -> Admission {
        Admission::Charge(vec![Bucket {
            key: format!("t:{}:rpm", req.tenant),
            shape: Shape::Window(WindowSpec {
                limit: REQUESTS_PER_MINUTE,
                window_ms: 60_000,
            }),
            cost: 1,
            unit: Unit::Requests,
        }])
    }

    fn settle(_req: Request, _usage: Usage) -> Vec<Bucket> {
        Vec::new()
    }
}
