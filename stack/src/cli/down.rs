//! `stack down`: delete everything the state owns, dependents first, then let the
//! local data plane stop what no longer exists.

use anyhow::Result;

use super::{ApplyArgs, Cli, plan_and_apply};
use stack::engine::events::Events;

pub async fn run(cli: &Cli, a: &ApplyArgs, events: &Events) -> Result<i32> {
    let (ctx, provs, _lock) = plan_and_apply(cli, a, events, true).await?;
    provs.run_dataplane(&ctx.stack.name).await?;
    Ok(0)
}
