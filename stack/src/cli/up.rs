//! `stack up`: plan, confirm, apply, prune undeclared Kubernetes objects, run what the
//! local target serves (data plane, API Gateway fronts), print outputs.

use anyhow::Result;

use super::{ApplyArgs, Cli, plan_and_apply};
use stack::engine::events::Events;

pub async fn run(cli: &Cli, a: &ApplyArgs, events: &Events) -> Result<i32> {
    let done = plan_and_apply(cli, a, events, false).await?;
    done.provs.prune(&done.ctx.stack).await?;
    done.run_local_and_print().await?;
    Ok(0)
}
