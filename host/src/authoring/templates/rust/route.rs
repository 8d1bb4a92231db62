
use exports::sluice::policy::route::{Candidate, Choice, Circuit, Guest as RoutePolicy};
use sluice::policy::types::Request;

impl RoutePolicy for Policy {
    /// The candidates in the host's order, those whose circuit is open last.
    fn order(_req: Request, candidates: Vec<Candidate>) -> Vec<Choice> {
        let (open, rest): (Vec<Candidate>, Vec<Candidate>) = candidates
            .into_iter()
            .partition(|c| c.health.circuit == Circuit::Open);
        rest.into_iter()
            .chain(open)
            .map(|c| Choice {
                provider: c.provider,
                model: c.model,
            })
            .collect()
    }
}
