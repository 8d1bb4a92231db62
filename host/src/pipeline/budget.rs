//! Budget phase: just before the upstream call, reserve the request's
//! worst-case cost from every budget it is charged to (the tenant's from
//! the config, the run-time virtual key's, and any pushed onto
//! `ctx.spend.subjects` during authentication). A refusal is a 429 `insufficient_quota`. Settling to
//! the actual cost happens with the throttle's settle, after the answer
//! (`respond::settle_later`).

use super::RequestCtx;
use crate::api::ParsedRequest;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::policy::Route;
use crate::spend::{BudgetError, Nano, Price, Spend, TokenUse};

/// Most choices (`n`) a worst case counts.
const MAX_CHOICES: u64 = 128;

/// Reserves the worst case, or refuses the request.
pub async fn reserve(gw: &Gateway, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    let mut subjects = std::mem::take(&mut ctx.spend.subjects);
    subjects.extend(Spend::tenant_budget(&gw.config, &ctx.caller.tenant));
    if let Some(key) = &ctx.caller.key
        && let Some(budget) = &key.record.budget_usd
    {
        subjects.extend(Spend::key_budget(&key.record.id, budget));
    }
    if subjects.is_empty() {
        return Ok(());
    }
    // A model without a price costs nothing (docs/budgets.md: add a
    // `[[prices]]` entry, `model = "*"` for a catch-all).
    let Some(price) = gw.spend.prices.price(&ctx.provider, &ctx.model) else {
        return Ok(());
    };
    let worst = worst_case(&price, ctx.parsed());
    match gw
        .spend
        .budgets
        .reserve(&subjects, worst, &ctx.caller.tenant)
        .await
    {
        Ok(reservation) => {
            ctx.spend.reservation = Some(reservation);
            Ok(())
        }
        Err(e @ BudgetError::Exhausted { retry_after, .. }) => {
            Err(GatewayError::budget_exhausted(e.message(), retry_after))
        }
        Err(e @ BudgetError::State(_)) => Err(GatewayError::unavailable(e.message())),
    }
}

/// The most `request` can cost at `price`: every byte of its body an input
/// token (a byte-level BPE token is at least one byte of text), plus
/// `max_tokens` (else the model's longest answer) per choice.
pub fn worst_case(price: &Price, request: &ParsedRequest) -> Nano {
    let output = if request.route == Route::Embeddings {
        0
    } else {
        let choices = request
            .field("n")
            .and_then(|n| n.as_u64())
            .map_or(1, |n| n.clamp(1, MAX_CHOICES));
        u64::from(request.max_tokens.unwrap_or(price.max_output_tokens)) * choices
    };
    price.cost(TokenUse {
        input: request.body.len() as u64,
        cached_input: 0,
        output,
    })
}
