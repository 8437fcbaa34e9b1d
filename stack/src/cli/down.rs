//! `stack down`: delete everything the state owns, dependents first, then stop what
//! the local target ran for it (data plane, API Gateway fronts).

use anyhow::Result;

use super::{ApplyArgs, Cli, plan_and_apply, print_outputs};
use stack::engine::events::Events;

pub async fn run(cli: &Cli, a: &ApplyArgs, events: &Events) -> Result<i32> {
    let done = plan_and_apply(cli, a, events, true).await?;
    let local = done
        .provs
        .run_local(&done.ctx.stack.name, &done.state)
        .await?;
    print_outputs(&done.ctx, &done.state, done.report.as_ref(), &local)?;
    Ok(0)
}
