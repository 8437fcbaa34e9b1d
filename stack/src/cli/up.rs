//! `stack up`: plan, confirm, apply, prune undeclared Kubernetes objects, run what the
//! local target serves (data plane, API Gateway fronts), print outputs.

use anyhow::Result;

use super::{ApplyArgs, Cli, plan_and_apply, print_outputs};
use stack::engine::events::Events;

pub async fn run(cli: &Cli, a: &ApplyArgs, events: &Events) -> Result<i32> {
    let done = plan_and_apply(cli, a, events, false).await?;
    done.provs.prune(&done.ctx.stack).await?;
    let local = done
        .provs
        .run_local(&done.ctx.stack.name, &done.state)
        .await?;
    print_outputs(&done.ctx, &done.state, done.report.as_ref(), &local)?;
    Ok(0)
}
