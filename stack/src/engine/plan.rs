//! Planning: read what exists (in parallel, level by level so that references resolve
//! to observed outputs), compare with the declaration field by field, and decide
//! create / update / replace / delete / no-op for every resource.

use futures::future::join_all;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::EngineError;
use super::events::{Event, Events};
use super::state::State;
use super::{ResourceDecl, Stack, TAG_STACK, UNKNOWN, graph, resolve};
use crate::providers::{FAILED_OUTPUT, Observed, Registry};

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
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// Field-level comparison of desired against observed properties.
///
/// Recurses into objects, and into arrays of equal length that hold objects or arrays
/// (a changed container image reads `spec.template.spec.containers[0].image`); a list
/// of plain values (subnet ids, instance types) is one field, shown whole. A missing
/// property and `null` are the same. `replace_fields` are dotted paths (possibly
/// nested, e.g. `spec.selector`): a change at or under one forces a replacement, and so
/// does a change of a whole object that contains one.
pub fn diff_props(desired: &Value, observed: &Value, replace_fields: &[&str]) -> Vec<FieldChange> {
    let empty = Map::new();
    let d = desired.as_object().unwrap_or(&empty);
    let o = observed.as_object().unwrap_or(&empty);
    let mut out = Vec::new();
    diff_object("", d, o, &mut out);
    for c in &mut out {
        c.forces_replace = replace_fields.iter().any(|r| path_overlaps(&c.field, r));
    }
    out
}

fn diff_object(
    path: &str,
    d: &Map<String, Value>,
    o: &Map<String, Value>,
    out: &mut Vec<FieldChange>,
) {
    let keys: BTreeSet<&String> = d.keys().chain(o.keys()).collect();
    for k in keys {
        diff_value(&join_key(path, k), d.get(k), o.get(k), out);
    }
}

fn diff_value(path: &str, d: Option<&Value>, o: Option<&Value>, out: &mut Vec<FieldChange>) {
    if d.unwrap_or(&Value::Null) == o.unwrap_or(&Value::Null) {
        return;
    }
    match (d, o) {
        (Some(Value::Object(dm)), Some(Value::Object(om))) => diff_object(path, dm, om, out),
        (Some(Value::Array(da)), Some(Value::Array(oa)))
            if da.len() == oa.len()
                && da.iter().chain(oa).any(|v| v.is_object() || v.is_array()) =>
        {
            for (i, (dv, ov)) in da.iter().zip(oa).enumerate() {
                diff_value(&format!("{path}[{i}]"), Some(dv), Some(ov), out);
            }
        }
        _ => out.push(FieldChange {
            field: path.to_string(),
            old: o.cloned(),
            new: d.cloned(),
            forces_replace: false,
        }),
    }
}

/// `parent.key`, or `parent["key"]` when the key itself holds a dot or bracket (label
/// names such as `app.kubernetes.io/name`).
fn join_key(parent: &str, key: &str) -> String {
    if key.contains(['.', '[', ']']) {
        format!("{parent}[{key:?}]")
    } else if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Whether `a` equals `b` or one lies under the other (`spec.selector` and
/// `spec.selector.matchLabels.app`, but not `spec.selectors`).
fn path_overlaps(a: &str, b: &str) -> bool {
    let under = |long: &str, short: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    under(a, b) || under(b, a)
}

/// A short display wrapper for JSON values in diffs.
pub struct Short<'a>(pub &'a serde_json::Value);

impl std::fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.as_str() == Some(UNKNOWN) {
            return f.write_str(UNKNOWN);
        }
        let s = serde_json::to_string(self.0).map_err(|_| std::fmt::Error)?;
        if s.len() > 120 {
            write!(
                f,
                "{}…",
                &s[..s.char_indices().nth(117).map_or(s.len(), |(i, _)| i)]
            )
        } else {
            f.write_str(&s)
        }
    }
}

/// Reads every declared and owned resource and computes the plan. Never mutates.
/// A resource found by name but not in state is adopted only when it carries this
/// stack's tag, as an interrupted run leaves what it made; anything else (a resource
/// of another stack, or made by hand) is an error: `down` would delete it.
/// Resources without tags (a permission, a route) belong to their tagged parent.
fn check_ownership(
    decl: &ResourceDecl,
    desired: &Value,
    id: &str,
    observed: &Value,
) -> Result<(), EngineError> {
    let Some(ours) = desired["tags"][TAG_STACK].as_str() else {
        return Ok(());
    };
    let theirs = observed["tags"][TAG_STACK].as_str();
    if theirs == Some(ours) {
        return Ok(());
    }
    Err(EngineError::NotOwned {
        resource: decl.name.clone(),
        kind: decl.kind.clone(),
        id: id.to_string(),
        found: match theirs {
            Some(other) => format!("it is tagged {TAG_STACK}={other}"),
            None => format!("it has no {TAG_STACK} tag"),
        },
    })
}

/// What lives inside a replaced resource (its `lives_in`) goes with it: replaced too,
/// in dependency order so that residents of residents follow.
fn replace_residents(stack: &Stack, order: &[String], steps: &mut BTreeMap<String, Step>) {
    for name in order {
        let Some(container) = stack.get(name).and_then(|d| d.lives_in.clone()) else {
            continue;
        };
        let container_replaced = steps
            .get(&container)
            .is_some_and(|s| matches!(s.action, Action::Replace { .. }));
        if let Some(step) = steps.get_mut(name)
            && container_replaced
            && step.id.is_some()
        {
            let why = format!("`{container}`, which it lives in");
            match &mut step.action {
                Action::Replace { forced_by } => forced_by.push(why),
                _ => {
                    step.action = Action::Replace {
                        forced_by: vec![why],
                    }
                }
            }
        }
    }
}

/// Every step that changes something is also reported as [`Event::Planned`].
pub async fn plan(
    stack: &Stack,
    state: &State,
    reg: &Registry,
    events: &Events,
) -> Result<Plan, EngineError> {
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
                        check_ownership(decl, &desired, &id, &props)?;
                        adopted.insert(decl.name.clone(), id.clone());
                    }
                    let changes = diff_props(&desired, &props, p.replace_fields());
                    let mut forced: Vec<String> = changes
                        .iter()
                        .filter(|c| c.forces_replace)
                        .map(|c| c.field.clone())
                        .collect();
                    if let Some(reason) = outs.get(FAILED_OUTPUT).and_then(Value::as_str) {
                        forced.insert(0, format!("its failed state: {reason}"));
                    }
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
    replace_residents(stack, &order, &mut steps);
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
    for s in ordered.iter().filter(|s| s.action != Action::NoOp) {
        events.emit(Event::Planned {
            resource: s.name.clone(),
            kind: s.kind.clone(),
            action: s.action.clone(),
            changes: s.changes.clone(),
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

    mod failed {
        use crate::engine::Resource;
        use crate::providers::{
            Applied, Created, FAILED_OUTPUT, Found, Lookup, Read, ResourceProvider,
        };
        use async_trait::async_trait;
        use serde::{Deserialize, Serialize};

        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        pub struct Thing {
            pub name: String,
        }
        impl Resource for Thing {
            const KIND: &'static str = "test:Thing";
            const TAGGABLE: bool = false;
        }

        /// Reads back what was declared, failed for the given reason.
        pub struct Reader(pub Option<&'static str>);

        #[async_trait]
        impl ResourceProvider for Reader {
            type Resource = Thing;
            const REPLACE_PATHS: &'static [&'static str] = &["name"];
            async fn read(&self, at: Lookup<'_, Thing>) -> Found<Thing> {
                let mut outputs = serde_json::Map::new();
                if let Some(reason) = self.0 {
                    outputs.insert(FAILED_OUTPUT.into(), reason.into());
                }
                Ok(Some(Read {
                    id: at.desired.name.clone(),
                    props: at.desired.clone(),
                    outputs,
                }))
            }
            async fn create(&self, d: &Thing) -> Result<Created, crate::error::ProviderError> {
                Ok(Created {
                    id: d.name.clone(),
                    outputs: Applied::Outputs(Default::default()),
                })
            }
            async fn update(
                &self,
                _: &str,
                _: &Thing,
                _: &Thing,
            ) -> Result<Applied, crate::error::ProviderError> {
                Ok(Applied::Outputs(Default::default()))
            }
            async fn delete(&self, _: &str, _: &Thing) -> Result<(), crate::error::ProviderError> {
                Ok(())
            }
        }
    }

    /// A resource that exists but failed (a node group in CREATE_FAILED) is replaced,
    /// the plan showing why; a healthy one with the same properties is left alone.
    #[tokio::test]
    async fn a_failed_resource_is_planned_as_a_replacement() {
        for (reason, want) in [
            (
                Some("CREATE_FAILED: NodeCreationFailure: instances failed to join"),
                true,
            ),
            (None, false),
        ] {
            let mut stack = Stack::new("s");
            stack.add("thing", failed::Thing { name: "t".into() });
            let mut reg = Registry::default();
            reg.add(failed::Reader(reason));
            let p = plan(&stack, &State::default(), &reg, &Events::none())
                .await
                .unwrap();
            let step = &p.steps[0];
            if want {
                assert_eq!(
                    step.action,
                    Action::Replace {
                        forced_by: vec![
                            "its failed state: CREATE_FAILED: NodeCreationFailure: instances failed to join".into()
                        ]
                    }
                );
                assert!(
                    p.render()
                        .contains("replace (forced by its failed state: CREATE_FAILED"),
                    "{}",
                    p.render()
                );
            } else {
                assert_eq!(step.action, Action::NoOp);
            }
        }
    }

    #[test]
    fn diff_names_forcing_field() {
        let c = diff_props(&json!({"a": 1, "b": 2}), &json!({"a": 1, "b": 3}), &["b"]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].field, "b");
        assert!(c[0].forces_replace);
    }

    #[test]
    fn nested_image_change_renders_its_full_path() {
        let dep = |image: &str| {
            json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "server", "image": image, "ports": [{"containerPort": 8080}]}
            ]}}}})
        };
        let c = diff_props(&dep("b"), &dep("a"), &["spec.selector"]);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].field, "spec.template.spec.containers[0].image");
        assert_eq!(c[0].old, Some(json!("a")));
        assert_eq!(c[0].new, Some(json!("b")));
        assert!(!c[0].forces_replace);
        let plan = Plan {
            stack: "s".into(),
            steps: vec![Step {
                name: "deployment".into(),
                kind: "k8s:apps/v1:Deployment".into(),
                action: Action::Update,
                changes: c,
                drift: vec![],
                id: Some("x".into()),
                observed: None,
                deps: vec![],
            }],
            outputs: BTreeMap::new(),
            adopted: BTreeMap::new(),
        };
        let text = plan.render();
        assert!(
            text.contains(r#"      spec.template.spec.containers[0].image: "a" -> "b""#),
            "{text}"
        );
        let v = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            v["steps"][0]["changes"][0]["field"],
            "spec.template.spec.containers[0].image"
        );
    }

    #[test]
    fn nested_change_under_a_replace_path_forces_replacement() {
        let dep =
            |app: &str| json!({"spec": {"selector": {"matchLabels": {"app": app}}, "replicas": 1}});
        let c = diff_props(
            &dep("new"),
            &dep("old"),
            &["metadata.name", "spec.selector"],
        );
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].field, "spec.selector.matchLabels.app");
        assert!(c[0].forces_replace);
        // A sibling whose name merely starts like the path does not force it.
        let c = diff_props(
            &json!({"spec": {"selectors": 1}}),
            &json!({"spec": {"selectors": 2}}),
            &["spec.selector"],
        );
        assert!(!c[0].forces_replace);
        // A whole object that holds the path, changed from absent, forces it too.
        let c = diff_props(
            &json!({"spec": {"selector": {}}}),
            &json!({}),
            &["spec.selector.matchLabels"],
        );
        assert!(c[0].forces_replace, "{c:?}");
    }

    #[test]
    fn lists_of_plain_values_and_odd_keys() {
        let c = diff_props(
            &json!({"ids": ["a", "b"]}),
            &json!({"ids": ["b", "a"]}),
            &[],
        );
        assert_eq!(c[0].field, "ids");
        let c = diff_props(
            &json!({"metadata": {"labels": {"app.kubernetes.io/name": "x"}}}),
            &json!({"metadata": {"labels": {}}}),
            &[],
        );
        assert_eq!(c[0].field, r#"metadata.labels["app.kubernetes.io/name"]"#);
        assert_eq!(c[0].old, None);
        // Arrays of objects of different lengths are one change.
        let c = diff_props(
            &json!({"c": [{"a": 1}]}),
            &json!({"c": [{"a": 1}, {"a": 2}]}),
            &[],
        );
        assert_eq!(c[0].field, "c");
        // Missing and null are the same.
        assert!(diff_props(&json!({"a": null}), &json!({}), &[]).is_empty());
    }

    #[test]
    fn equal_props_have_no_diff() {
        assert!(diff_props(&json!({"a": [1, 2]}), &json!({"a": [1, 2]}), &[]).is_empty());
    }
}
