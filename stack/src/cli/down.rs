//! `stack down`: delete everything the state owns, dependents first, then stop what
//! the local target ran for it (data plane, API Gateway fronts).

use anyhow::Result;

use super::{ApplyArgs, Cli, plan_and_apply};
use stack::engine::events::Events;

pub async fn run(cli: &Cli, a: &ApplyArgs, events: &Events) -> Result<i32> {
    plan_and_apply(cli, a, events, true)
        .await?
        .run_local_and_print()
        .await?;
    Ok(0)
}
