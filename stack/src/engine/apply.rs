//! Applying a plan: dependency order, bounded concurrency, deletions in reverse order,
//! state saved after every single resource operation.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::EngineError;
use super::events::{Event, Events, Op, scoped};
use super::plan::{Action, Plan, Step};
use super::state::{ResourceState, State, StateStore};
use super::{Stack, resolve};
use crate::error::ProviderError;
use crate::providers::{Observed, Provider, Registry};

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Maximum concurrent resource operations.
    pub parallelism: usize,
    /// Stop cleanly after this many completed operations (fault injection for tests
    /// and drills; also settable with `STACK_FAULT_AFTER`).
    pub fault_after: Option<usize>,
    /// Where per-resource progress goes (started, waiting, done, failed).
    pub events: Events,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallelism: 8,
            fault_after: None,
            events: Events::none(),
        }
    }
}

/// What an apply did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ApplyReport {
    /// Resources created.
    pub created: usize,
    /// Resources updated in place.
    pub updated: usize,
    /// Resources replaced.
    pub replaced: usize,
    /// Resources deleted.
    pub deleted: usize,
    /// Resources created or updated in state only, because something of the target
    /// stands in for them (see [`super::events::stand_in`]).
    pub stood_in: usize,
}

struct Outcome {
    name: String,
    kind: String,
    action: Action,
    deps: Vec<String>,
    resolved: Value,
    /// The old resource is gone (replace without create-before-delete, or delete).
    removed: bool,
    result: Result<Option<Observed>, ProviderError>,
    elapsed: Duration,
    /// What stands in for the resource on this target, if the provider said so.
    stand_in: Option<String>,
}

type Task = Pin<Box<dyn Future<Output = Outcome> + Send>>;

fn launch(step: &Step, p: Arc<dyn Provider>, resolved: Value, events: &Events) -> Task {
    let op = Op::of(&step.action);
    events.emit(Event::Started {
        resource: step.name.clone(),
        kind: step.kind.clone(),
        op,
    });
    let events = events.clone();
    let name = step.name.clone();
    let kind = step.kind.clone();
    let action = step.action.clone();
    let deps = step.deps.clone();
    let id = step.id.clone();
    let observed = step.observed.clone().unwrap_or(Value::Null);
    Box::pin(async move {
        let t = Instant::now();
        let mut removed = false;
        let work = async {
            match (&action, id.as_deref()) {
                (Action::Create, _) | (Action::Replace { .. } | Action::Update, None) => {
                    p.create(&resolved).await.map(Some)
                }
                (Action::Update, Some(id)) => p.update(id, &observed, &resolved).await.map(Some),
                (Action::Replace { .. }, Some(id)) => {
                    if p.create_before_delete() {
                        match p.create(&resolved).await {
                            Ok(o) => {
                                let r = p.delete(id, &observed).await;
                                removed = r.is_ok();
                                r.map(|_| Some(o))
                            }
                            Err(e) => Err(e),
                        }
                    } else {
                        match p.delete(id, &observed).await {
                            Ok(()) => {
                                removed = true;
                                p.create(&resolved).await.map(Some)
                            }
                            Err(e) => Err(e),
                        }
                    }
                }
                (Action::Delete, Some(id)) => {
                    let r = p.delete(id, &observed).await;
                    removed = r.is_ok();
                    r.map(|_| None)
                }
                (Action::Delete | Action::NoOp, _) => Ok(None),
            }
        };
        let (result, stand_in) = scoped(&events, &name, &kind, op, work).await;
        Outcome {
            name,
            kind,
            action,
            deps,
            resolved,
            removed,
            result,
            elapsed: t.elapsed(),
            stand_in,
        }
    })
}

/// Executes `plan` (as reviewed) against the providers, saving state after every
/// resource operation. Returns the final state and what was done.
pub async fn apply(
    stack: &Stack,
    plan: &Plan,
    store: &dyn StateStore,
    mut state: State,
    reg: &Registry,
    opts: &ApplyOptions,
) -> Result<(State, ApplyReport), EngineError> {
    let parallelism = opts.parallelism.max(1);
    let mut outputs = plan.outputs.clone();
    let mut report = ApplyReport::default();
    let mut failures: Vec<String> = Vec::new();
    let mut stop: Option<String> = None;
    let mut ops = 0usize;

    // Adopted resources (made by an interrupted run but not recorded) enter state now.
    for st in &plan.steps {
        if let (Some(id), Some(obs)) = (plan.adopted.get(&st.name), &st.observed) {
            state.resources.insert(
                st.name.clone(),
                ResourceState {
                    kind: st.kind.clone(),
                    id: id.clone(),
                    props: obs.clone(),
                    outputs: outputs.get(&st.name).cloned().unwrap_or_default(),
                    deps: st.deps.clone(),
                },
            );
        }
    }
    if !plan.adopted.is_empty() {
        store.save(&state)?;
    }

    let events = &opts.events;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    // Replacements that must delete first (fixed physical names) are split: their
    // deletions run before everything else, dependents first (a node group goes before
    // the cluster it lives in); their creations run with the other creates.
    let delete_first: BTreeSet<String> = plan
        .steps
        .iter()
        .filter(|s| matches!(s.action, Action::Replace { .. }) && s.id.is_some())
        .filter(|s| reg.get(&s.kind).is_some_and(|p| !p.create_before_delete()))
        .map(|s| s.name.clone())
        .collect();
    let phases: [Vec<Step>; 3] = [
        plan.steps
            .iter()
            .filter(|s| delete_first.contains(&s.name))
            .map(|s| Step {
                action: Action::Delete,
                ..s.clone()
            })
            .collect(),
        plan.steps
            .iter()
            .filter(|s| s.action != Action::NoOp && s.action != Action::Delete)
            .map(|s| {
                if delete_first.contains(&s.name) {
                    Step {
                        id: None,
                        observed: None,
                        ..s.clone()
                    }
                } else {
                    s.clone()
                }
            })
            .collect(),
        plan.steps
            .iter()
            .filter(|s| s.action == Action::Delete)
            .cloned()
            .collect(),
    ];

    for (phase_no, steps) in phases.iter().enumerate() {
        // Phase 0: deletions of replaced resources; 1: creates/updates/replaces,
        // dependencies first; 2: deletions of undeclared resources, dependents first.
        let reverse = phase_no != 1;
        let mut remaining: Vec<&Step> = steps.iter().collect();
        let mut pending: BTreeSet<String> = remaining.iter().map(|s| s.name.clone()).collect();
        let mut inflight: FuturesUnordered<Task> = FuturesUnordered::new();
        loop {
            while stop.is_none() && failures.is_empty() && inflight.len() < parallelism {
                let ready = remaining.iter().position(|s| {
                    if reverse {
                        // No other pending deletion of this phase depends on it.
                        !steps.iter().any(|o| {
                            o.name != s.name
                                && o.deps.contains(&s.name)
                                && pending.contains(&o.name)
                        })
                    } else {
                        s.deps.iter().all(|d| !pending.contains(d))
                    }
                });
                let Some(i) = ready else { break };
                let step = remaining.remove(i);
                let p = reg
                    .get(&step.kind)
                    .ok_or_else(|| EngineError::NoProvider(step.kind.clone()))?;
                let resolved = match stack.get(&step.name) {
                    Some(decl) if phase_no == 1 => {
                        let lookup =
                            |r: &str, k: &str| outputs.get(r).and_then(|o| o.get(k)).cloned();
                        resolve(&decl.props, &lookup).0
                    }
                    _ => Value::Null,
                };
                inflight.push(launch(step, p, resolved, events));
            }
            if inflight.is_empty() {
                break;
            }
            let out = tokio::select! {
                o = inflight.next() => o,
                _ = &mut ctrl_c, if stop.is_none() => {
                    events.emit(Event::Interrupted { running: inflight.len() });
                    stop = Some("Ctrl-C".into());
                    continue;
                }
            };
            let Some(o) = out else { break };
            pending.remove(&o.name);
            if o.removed {
                state.resources.remove(&o.name);
            }
            match o.result {
                Ok(Some(obs)) => {
                    outputs.insert(o.name.clone(), obs.outputs.clone());
                    state.resources.insert(
                        o.name.clone(),
                        ResourceState {
                            kind: o.kind.clone(),
                            id: obs.id,
                            props: o.resolved,
                            outputs: obs.outputs,
                            deps: o.deps,
                        },
                    );
                }
                Ok(None) => {
                    state.resources.remove(&o.name);
                }
                Err(e) => {
                    store.save(&state)?;
                    events.emit(Event::Failed {
                        resource: o.name.clone(),
                        kind: o.kind.clone(),
                        op: Op::of(&o.action),
                        error: e.to_string(),
                    });
                    let e = EngineError::Resource {
                        resource: o.name.clone(),
                        kind: o.kind.clone(),
                        error: Box::new(e),
                    };
                    failures.push(e.to_string());
                    continue;
                }
            }
            store.save(&state)?;
            ops += 1;
            match o.action {
                _ if o.stand_in.is_some() => report.stood_in += 1,
                // The deletion half of a replacement is counted with its creation.
                Action::Delete if phase_no == 0 => {}
                Action::Create => report.created += 1,
                Action::Update => report.updated += 1,
                Action::Replace { .. } => report.replaced += 1,
                Action::Delete => report.deleted += 1,
                Action::NoOp => {}
            }
            events.emit(Event::Done {
                resource: o.name.clone(),
                kind: o.kind.clone(),
                op: Op::of(&o.action),
                elapsed: o.elapsed,
                stand_in: o.stand_in.clone(),
            });
            if opts.fault_after.is_some_and(|n| ops >= n) && stop.is_none() {
                stop = Some(format!("fault injected after {ops} operations"));
            }
        }
        if !failures.is_empty() {
            return Err(EngineError::ApplyFailed(failures));
        }
        if let Some(why) = stop {
            return Err(EngineError::Interrupted(why));
        }
    }
    Ok((state, report))
}

/// The stack's exported outputs, resolved from state.
pub fn exports(stack: &Stack, state: &State) -> BTreeMap<String, Value> {
    let lookup = |r: &str, k: &str| {
        state
            .resources
            .get(r)
            .and_then(|s| s.outputs.get(k))
            .cloned()
    };
    stack
        .exports
        .iter()
        .map(|(n, v)| (n.clone(), resolve(v, &lookup).0))
        .collect()
}
