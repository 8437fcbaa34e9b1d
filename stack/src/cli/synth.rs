//! `stack synth`: the declared desired state as JSON, or the Kubernetes objects as
//! YAML (`--k8s`); no API calls.

use anyhow::{Context, Result};

use super::{Cli, load_with};
use stack::engine::Stack;
use stack::engine::events::Events;
use stack::engine::state::{State, StateStore};

pub fn run(cli: &Cli, k8s: bool, events: &Events) -> Result<i32> {
    // The Kubernetes objects need no Lambda artifact.
    let opts = stack::app::BuildOptions { artifacts: !k8s };
    let ctx = load_with(cli, opts, events)?;
    if k8s {
        let state = ctx.store.load()?;
        print!("{}", k8s_yaml(&ctx.stack, &state)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&ctx.stack)?);
    }
    Ok(0)
}

/// The Kubernetes objects of the declaration, references resolved from state.
fn k8s_yaml(stack: &Stack, state: &State) -> Result<String> {
    let outputs = |r: &str, k: &str| {
        state
            .resources
            .get(r)
            .and_then(|s| s.outputs.get(k).cloned())
    };
    let mut docs = Vec::new();
    for d in stack
        .resources
        .iter()
        .filter(|d| d.kind.starts_with("k8s:"))
    {
        let (v, _) = stack::engine::resolve(&d.props, &outputs);
        docs.push(serde_saphyr::to_string(&v).context("YAML")?);
    }
    Ok(docs
        .iter()
        .map(|d| format!("---\n{}", d.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}
