//! `stack import <resource> <id>`: take over a resource that exists but is not this
//! stack's (made by hand, or by another tool), which `up` refuses to adopt. The
//! resource is read by id and recorded in state; the next `up` updates it to the
//! declaration (this stack's tags included), and `down` deletes it like the rest.

use anyhow::{Context, Result, bail};

use super::{Cli, load, providers};
use stack::engine::events::Events;
use stack::engine::resolve;
use stack::engine::state::{ResourceState, StateStore};

pub async fn run(cli: &Cli, resource: &str, id: &str, events: &Events) -> Result<i32> {
    let ctx = load(cli, events)?;
    let Some(decl) = ctx.stack.get(resource) else {
        let names: Vec<&str> = ctx
            .stack
            .resources
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        bail!(
            "no resource `{resource}` is declared; the stack's are: {}",
            names.join(", ")
        );
    };
    let _lock = ctx.store.lock("import")?;
    let provs = providers(cli, &ctx.cfg, false).await?;
    let mut state = ctx.store.load()?;
    if let Some(owned) = state.resources.get(resource) {
        bail!(
            "{} `{resource}` is already in state as `{}`; `stack refresh` reads it again",
            decl.kind,
            owned.id
        );
    }
    let provider = provs
        .reg
        .get(&decl.kind)
        .with_context(|| format!("no provider for {}", decl.kind))?;
    let outputs = |r: &str, k: &str| {
        state
            .resources
            .get(r)
            .and_then(|s| s.outputs.get(k).cloned())
    };
    let (desired, _) = resolve(&decl.props, &outputs);
    let found = provider
        .read(Some(id), &desired, None)
        .await
        .with_context(|| format!("{} `{resource}`: reading `{id}`", decl.kind))?;
    let Some(found) = found else {
        bail!(
            "{} `{id}` does not exist (region {}); nothing imported",
            decl.kind,
            ctx.cfg.region
        );
    };
    state.resources.insert(
        resource.to_string(),
        ResourceState {
            kind: decl.kind.clone(),
            id: found.id.clone(),
            props: found.props,
            outputs: found.outputs,
            deps: decl.deps(),
        },
    );
    ctx.store.save(&state)?;
    println!(
        "Imported {} `{resource}` as `{}`. `stack diff` shows what `up` changes on it \
         (this stack's tags at least); `down` now deletes it.",
        decl.kind, found.id
    );
    Ok(0)
}
