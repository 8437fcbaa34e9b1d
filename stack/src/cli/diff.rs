//! `stack diff`: the plan, never a mutation. Exit 0: no changes, 2: changes.

use anyhow::Result;

use super::{Cli, load_with, preflight, providers};
use stack::engine::events::Events;
use stack::engine::plan::plan;
use stack::engine::state::StateStore;

pub async fn run(cli: &Cli, events: &Events) -> Result<i32> {
    let ctx = load_with(cli, stack::app::BuildOptions::default(), events)?;
    let _lock = ctx.store.lock("diff")?;
    let provs = providers(cli, &ctx.cfg, false).await?;
    preflight(cli, &ctx.cfg, &provs).await?;
    let state = ctx.store.load()?;
    // The plan is the output here, not progress.
    let p = plan(&ctx.stack, &state, &provs.reg, &Events::none()).await?;
    if ctx.json {
        let mut v = serde_json::to_value(&p)?;
        v["summary"] = serde_json::to_value(p.summary())?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", p.render());
    }
    Ok(if p.has_changes() { 2 } else { 0 })
}
