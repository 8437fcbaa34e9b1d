//! `stack outputs [NAME]`: the exported outputs, from state.

use anyhow::{Context, Result, bail};

use super::{Cli, load, show};
use crate::targets::LocalEndpoints;
use stack::engine::UNKNOWN;
use stack::engine::apply::exports;
use stack::engine::events::Events;
use stack::engine::state::StateStore;

pub fn run(cli: &Cli, name: Option<&str>, events: &Events) -> Result<i32> {
    let ctx = load(cli, events)?;
    let state = ctx.store.load()?;
    let local = LocalEndpoints::load(&LocalEndpoints::file(
        &cli.state_dir,
        &ctx.cfg.stack,
        cli.target,
    ));
    let outs = local.rewrite(exports(&ctx.stack, &state));
    match name {
        Some(n) => {
            let v = outs
                .get(n)
                .with_context(|| format!("no output named `{n}`"))?;
            if v == UNKNOWN {
                bail!("output `{n}` is not known yet: run `stack up` first");
            }
            println!("{}", show(v));
        }
        None if ctx.json => println!("{}", serde_json::to_string_pretty(&outs)?),
        None => {
            for (k, v) in outs {
                println!("{k} = {}", show(&v));
            }
        }
    }
    Ok(0)
}
