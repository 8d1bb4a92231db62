
use exports::sluice::policy::semantic::{Candidate, Guest as Semantic, Probe};
use sluice::policy::types::Request;

const THRESHOLD: f32 = 0.95;

impl Semantic for Policy {
    fn prepare(req: Request) -> Option<Probe> {
        let last = req.messages.last()?;
        Some(Probe {
            text: last.text.clone(),
            namespace: req.model.clone(),
            threshold: THRESHOLD,
        })
    }

    fn accept(_req: Request, candidate: Candidate) -> bool {
        candidate.score >= THRESHOLD
    }
}
