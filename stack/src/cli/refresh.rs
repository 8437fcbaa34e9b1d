//! `stack refresh`: read everything, report drift, record what exists in state.

use anyhow::Result;
use serde_json::{Value, json};

use super::{Cli, Ctx, load, providers};
use stack::engine::events::Events;
use stack::engine::plan::{Plan, Short, diff_props, plan};
use stack::engine::state::{State, StateStore};

pub async fn run(cli: &Cli, events: &Events) -> Result<i32> {
    let ctx = load(cli, events)?;
    let _lock = ctx.store.lock("refresh")?;
    let provs = providers(cli, &ctx.cfg, false).await?;
    let mut state = ctx.store.load()?;
    let p = plan(&ctx.stack, &state, &provs.reg, &Events::none()).await?;
    // The diff's exit codes: 2 when something changed outside the stack.
    let drifted = refresh(&ctx, &p, &mut state)?;
    Ok(if drifted { 2 } else { 0 })
}

/// Records what exists in state and reports the drift; whether there was any.
fn refresh(ctx: &Ctx, p: &Plan, state: &mut State) -> Result<bool> {
    let mut drift: Vec<Value> = Vec::new();
    for st in &p.steps {
        let Some(owned) = state.resources.get_mut(&st.name) else {
            continue;
        };
        match &st.observed {
            None => {
                drift.push(json!({ "resource": st.name, "kind": st.kind, "deleted": true }));
                state.resources.remove(&st.name);
            }
            Some(obs) => {
                let changes = diff_props(obs, &owned.props, &[]);
                if !changes.is_empty() {
                    drift.push(json!({ "resource": st.name, "kind": st.kind, "changes": changes }));
                }
                owned.props = obs.clone();
                if let Some(o) = p.outputs.get(&st.name) {
                    owned.outputs = o.clone();
                }
            }
        }
    }
    ctx.store.save(state)?;
    if ctx.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "drift": drift }))?
        );
        return Ok(!drift.is_empty());
    }
    if drift.is_empty() {
        println!(
            "No drift: {} resources match the state.",
            state.resources.len()
        );
        return Ok(false);
    }
    for d in &drift {
        let name = d["resource"].as_str().unwrap_or_default();
        let kind = d["kind"].as_str().unwrap_or_default();
        if d.get("deleted").is_some() {
            println!("  ! {kind} `{name}`: deleted outside the stack");
            continue;
        }
        println!("  ! {kind} `{name}`: changed outside the stack");
        for c in d["changes"].as_array().into_iter().flatten() {
            let old = c
                .get("old")
                .filter(|v| !v.is_null())
                .map_or("(none)".into(), |v| Short(v).to_string());
            let new = c
                .get("new")
                .filter(|v| !v.is_null())
                .map_or("(none)".into(), |v| Short(v).to_string());
            println!(
                "      {}: {old} -> {new}",
                c["field"].as_str().unwrap_or_default()
            );
        }
    }
    println!(
        "Drift: {} resource(s) changed outside the stack; state now records what exists. `stack up` restores the declaration.",
        drift.len()
    );
    Ok(true)
}
