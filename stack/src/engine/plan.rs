//! Planning: read what exists (in parallel, level by level so that references resolve
//! to observed outputs), compare with the declaration field by field, and decide
//! create / update / replace / delete / no-op for every resource.

use futures::future::join_all;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::state::State;
use super::{Stack, UNKNOWN, graph, resolve};
use crate::error::{EngineError, Short};
use crate::providers::{Observed, Registry};

/// What to do with one resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing to do.
    NoOp,
    /// Create it.
    Create,
    /// Change it in place.
    Update,
    /// Delete and create; `forced_by` names the properties that force it.
    Replace {
        /// Properties whose change forces the replacement.
        forced_by: Vec<String>,
    },
    /// Delete it (no longer declared).
    Delete,
}

impl Action {
    /// The plan symbol.
    pub fn symbol(&self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update => "~",
            Action::Replace { .. } => "-/+",
            Action::Delete => "-",
        }
    }
}

/// One changed property.
#[derive(Debug, Clone, Serialize)]
pub struct FieldChange {
    /// Property name.
    pub field: String,
    /// Observed value (None when absent).
    pub old: Option<Value>,
    /// Desired value (None when removed).
    pub new: Option<Value>,
    /// Whether the property forces replacement.
    pub forces_replace: bool,
}

/// The planned step for one resource.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Logical name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// The decision.
    pub action: Action,
    /// Changed properties (for updates and replacements; all properties for creates).
    pub changes: Vec<FieldChange>,
    /// The properties that were changed outside the stack since the last apply.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
    /// The id of the existing resource, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Observed properties of the existing resource.
    #[serde(skip)]
    pub observed: Option<Value>,
    /// Dependencies (declared for creates/updates, from state for deletes).
    #[serde(skip)]
    pub deps: Vec<String>,
}

/// A complete plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Stack name.
    pub stack: String,
    /// Steps in dependency order, deletions last (in reverse dependency order).
    pub steps: Vec<Step>,
    /// Outputs of resources that exist now, by logical name.
    #[serde(skip)]
    pub outputs: BTreeMap<String, Map<String, Value>>,
    /// Ids of resources that exist now but are not in state (adopted).
    #[serde(skip)]
    pub adopted: BTreeMap<String, String>,
}

/// Counts per action.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Creates.
    pub create: usize,
    /// In-place updates.
    pub update: usize,
    /// Replacements.
    pub replace: usize,
    /// Deletions.
    pub delete: usize,
    /// Unchanged.
    pub unchanged: usize,
}

impl Plan {
    /// Counts per action.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for st in &self.steps {
            match st.action {
                Action::NoOp => s.unchanged += 1,
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace { .. } => s.replace += 1,
                Action::Delete => s.delete += 1,
            }
        }
        s
    }

    /// Whether applying would change anything.
    pub fn has_changes(&self) -> bool {
        self.steps.iter().any(|s| s.action != Action::NoOp)
    }

    /// The human-readable plan, like `terraform plan`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in self.steps.iter().filter(|s| s.action != Action::NoOp) {
            let what = match &s.action {
                Action::Create => "create".to_string(),
                Action::Update => "update in place".to_string(),
                Action::Replace { forced_by } => {
                    format!("replace (forced by {})", forced_by.join(", "))
                }
                Action::Delete => "delete".to_string(),
                Action::NoOp => String::new(),
            };
            let _ = write!(
                out,
                "{:>3} {} `{}`: {what}",
                s.action.symbol(),
                s.kind,
                s.name
            );
            if !s.drift.is_empty() {
                let _ = write!(
                    out,
                    "  [drift: {} changed outside the stack]",
                    s.drift.join(", ")
                );
            }
            out.push('\n');
            for c in &s.changes {
                let old = c
                    .old
                    .as_ref()
                    .map_or("(none)".to_string(), |v| Short(v).to_string());
                let new = c
                    .new
                    .as_ref()
                    .map_or("(none)".to_string(), |v| Short(v).to_string());
                let force = if c.forces_replace {
                    "  # forces replacement"
                } else {
                    ""
                };
                if s.action == Action::Create {
                    let _ = writeln!(out, "      {} = {new}", c.field);
                } else {
                    let _ = writeln!(out, "      {}: {old} -> {new}{force}", c.field);
                }
            }
        }
        let s = self.summary();
        if self.has_changes() {
            let _ = writeln!(
                out,
                "Plan: {} to create, {} to update, {} to replace, {} to delete, {} unchanged.",
                s.create, s.update, s.replace, s.delete, s.unchanged
            );
        } else {
            let _ = writeln!(out, "No changes. {} resources up to date.", s.unchanged);
        }
        out
    }
}

/// Field-level comparison of desired against observed top-level properties.
pub fn diff_props(desired: &Value, observed: &Value, replace_fields: &[&str]) -> Vec<FieldChange> {
    let empty = Map::new();
    let d = desired.as_object().unwrap_or(&empty);
    let o = observed.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = d.keys().chain(o.keys()).collect();
    keys.into_iter()
        .filter(|k| d.get(*k).unwrap_or(&Value::Null) != o.get(*k).unwrap_or(&Value::Null))
        .map(|k| FieldChange {
            field: k.clone(),
            old: o.get(k).cloned(),
            new: d.get(k).cloned(),
            forces_replace: replace_fields.contains(&k.as_str()),
        })
        .collect()
}

/// Reads every declared and owned resource and computes the plan. Never mutates.
pub async fn plan(stack: &Stack, state: &State, reg: &Registry) -> Result<Plan, EngineError> {
    stack.validate()?;
    let nodes: Vec<(String, Vec<String>)> = stack
        .resources
        .iter()
        .map(|d| (d.name.clone(), d.deps()))
        .collect();
    let levels = graph::levels(&nodes)?;

    let mut outputs: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut pending: BTreeSet<String> = BTreeSet::new(); // created or replaced: outputs unknown
    let mut steps: BTreeMap<String, Step> = BTreeMap::new();
    let mut adopted = BTreeMap::new();

    for level in levels {
        let reads = level.iter().map(|name| {
            let decl = stack.get(name).expect("levels come from declarations");
            let lookup = |r: &str, k: &str| {
                if pending.contains(r) {
                    None
                } else {
                    outputs.get(r).and_then(|o| o.get(k)).cloned()
                }
            };
            let (desired, known) = resolve(&decl.props, &lookup);
            let owned = state.resources.get(name).filter(|r| r.kind == decl.kind);
            async move {
                let p = reg
                    .get(&decl.kind)
                    .ok_or_else(|| EngineError::NoProvider(decl.kind.clone()))?;
                let id = owned.map(|r| r.id.as_str());
                let observed = if id.is_none() && !known {
                    None
                } else {
                    p.read(id, &desired, owned.map(|r| &r.props))
                        .await
                        .map_err(|e| EngineError::Resource {
                            resource: decl.name.clone(),
                            kind: decl.kind.clone(),
                            error: Box::new(e),
                        })?
                };
                Ok::<_, EngineError>((decl, desired, observed, p, owned))
            }
        });
        for r in join_all(reads).await {
            let (decl, desired, observed, p, owned) = r?;
            let deps = decl.deps();
            let step = match observed {
                None => {
                    pending.insert(decl.name.clone());
                    let changes = diff_props(&desired, &Value::Object(Map::new()), &[])
                        .into_iter()
                        .map(|mut c| {
                            c.old = None;
                            c
                        })
                        .collect();
                    Step {
                        name: decl.name.clone(),
                        kind: decl.kind.clone(),
                        action: Action::Create,
                        changes,
                        drift: vec![],
                        id: None,
                        observed: None,
                        deps,
                    }
                }
                Some(Observed {
                    id,
                    props,
                    outputs: outs,
                }) => {
                    if owned.is_none() {
                        adopted.insert(decl.name.clone(), id.clone());
                    }
                    let changes = diff_props(&desired, &props, p.replace_fields());
                    let forced: Vec<String> = changes
                        .iter()
                        .filter(|c| c.forces_replace)
                        .map(|c| c.field.clone())
                        .collect();
                    let drift = owned
                        .map(|o| {
                            diff_props(&o.props, &props, &[])
                                .into_iter()
                                .filter(|c| {
                                    c.old.is_some() && c.new.as_ref().is_some_and(|v| v != UNKNOWN)
                                })
                                .map(|c| c.field)
                                .collect()
                        })
                        .unwrap_or_default();
                    let action = if !forced.is_empty() {
                        pending.insert(decl.name.clone());
                        Action::Replace { forced_by: forced }
                    } else if !changes.is_empty() {
                        if p.update_changes_outputs() {
                            pending.insert(decl.name.clone());
                        }
                        Action::Update
                    } else {
                        Action::NoOp
                    };
                    outputs.insert(decl.name.clone(), outs);
                    Step {
                        name: decl.name.clone(),
                        kind: decl.kind.clone(),
                        action,
                        changes,
                        drift,
                        id: Some(id),
                        observed: Some(props),
                        deps,
                    }
                }
            };
            steps.insert(step.name.clone(), step);
        }
    }

    // Declared order for creates/updates, then deletions of what is no longer declared,
    // dependents first.
    let order = graph::order(&stack.resources)?;
    let mut ordered: Vec<Step> = order.iter().filter_map(|n| steps.remove(n)).collect();
    let gone: Vec<(String, Vec<String>)> = state
        .resources
        .iter()
        .filter(|(n, _)| stack.get(n).is_none())
        .map(|(n, r)| {
            (
                n.clone(),
                r.deps
                    .iter()
                    .filter(|d| state.resources.contains_key(*d))
                    .cloned()
                    .collect(),
            )
        })
        .collect();
    let del_order = graph::topo(&gone)?;
    for n in del_order.iter().rev() {
        let r = &state.resources[n];
        ordered.push(Step {
            name: n.clone(),
            kind: r.kind.clone(),
            action: Action::Delete,
            changes: vec![],
            drift: vec![],
            id: Some(r.id.clone()),
            observed: Some(r.props.clone()),
            deps: r.deps.clone(),
        });
    }
    Ok(Plan {
        stack: stack.name.clone(),
        steps: ordered,
        outputs,
        adopted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_names_forcing_field() {
        let c = diff_props(&json!({"a": 1, "b": 2}), &json!({"a": 1, "b": 3}), &["b"]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, "b");
        assert!(c[0].forces_replace);
    }

    #[test]
    fn equal_props_have_no_diff() {
        assert!(diff_props(&json!({"a": [1, 2]}), &json!({"a": [1, 2]}), &[]).is_empty());
    }
}
