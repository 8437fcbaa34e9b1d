//! `stack up`: plan, confirm, apply, prune undeclared Kubernetes objects, run the
//! local data plane, print outputs.

use anyhow::Result;

use super::{ApplyArgs, Cli, plan_and_apply};
use stack::engine::events::Events;

pub async fn run(cli: &Cli, a: &ApplyArgs, events: &Events) -> Result<i32> {
    let (ctx, provs, _lock) = plan_and_apply(cli, a, events, false).await?;
    provs.prune(&ctx.stack).await?;
    provs.run_dataplane(&ctx.stack.name).await?;
    Ok(0)
}
