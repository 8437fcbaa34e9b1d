//! The dependency graph: topological order, levels, cycle detection.

use std::collections::{BTreeMap, BTreeSet};

use super::EngineError;
use super::ResourceDecl;

/// Resources in dependency order (dependencies first); errors on unknown references
/// and on cycles, naming the resources involved.
pub fn order(decls: &[ResourceDecl]) -> Result<Vec<String>, EngineError> {
    let names: BTreeSet<&str> = decls.iter().map(|d| d.name.as_str()).collect();
    let mut deps: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for d in decls {
        let ds = d.deps();
        for to in &ds {
            if !names.contains(to.as_str()) {
                return Err(EngineError::UnknownReference {
                    from: d.name.clone(),
                    to: to.clone(),
                });
            }
        }
        deps.insert(&d.name, ds);
    }
    let edges: Vec<(String, Vec<String>)> = decls
        .iter()
        .map(|d| (d.name.clone(), deps[d.name.as_str()].clone()))
        .collect();
    topo(&edges)
}

/// Topological sort of `(node, deps)` pairs, keeping the input order among equals.
pub fn topo(nodes: &[(String, Vec<String>)]) -> Result<Vec<String>, EngineError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        None,
        Active,
        Done,
    }
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    let mut marks = vec![Mark::None; nodes.len()];
    let mut out = Vec::with_capacity(nodes.len());
    let mut stack: Vec<usize> = Vec::new();

    fn visit(
        i: usize,
        nodes: &[(String, Vec<String>)],
        index: &BTreeMap<&str, usize>,
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
        out: &mut Vec<String>,
    ) -> Result<(), EngineError> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                let start = stack.iter().position(|&j| j == i).unwrap_or(0);
                let mut cycle: Vec<String> =
                    stack[start..].iter().map(|&j| nodes[j].0.clone()).collect();
                cycle.push(nodes[i].0.clone());
                return Err(EngineError::Cycle(cycle));
            }
            Mark::None => {}
        }
        marks[i] = Mark::Active;
        stack.push(i);
        for d in &nodes[i].1 {
            if let Some(&j) = index.get(d.as_str()) {
                visit(j, nodes, index, marks, stack, out)?;
            }
        }
        stack.pop();
        marks[i] = Mark::Done;
        out.push(nodes[i].0.clone());
        Ok(())
    }

    for i in 0..nodes.len() {
        visit(i, nodes, &index, &mut marks, &mut stack, &mut out)?;
    }
    Ok(out)
}

/// Groups nodes into levels: every node's dependencies are in earlier levels.
pub fn levels(nodes: &[(String, Vec<String>)]) -> Result<Vec<Vec<String>>, EngineError> {
    let order = topo(nodes)?;
    let deps: BTreeMap<&str, &Vec<String>> = nodes.iter().map(|(n, d)| (n.as_str(), d)).collect();
    let mut depth: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<Vec<String>> = Vec::new();
    for n in order {
        let d = deps[n.as_str()]
            .iter()
            .filter_map(|d| depth.get(d))
            .map(|x| x + 1)
            .max()
            .unwrap_or(0);
        if out.len() <= d {
            out.resize(d + 1, Vec::new());
        }
        out[d].push(n.clone());
        depth.insert(n, d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, deps: &[&str]) -> (String, Vec<String>) {
        (name.into(), deps.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn orders_dependencies_first() {
        let o = topo(&[n("c", &["b"]), n("b", &["a"]), n("a", &[])]).unwrap();
        assert_eq!(o, ["a", "b", "c"]);
    }

    #[test]
    fn cycle_names_the_resources() {
        let e = topo(&[n("a", &["b"]), n("b", &["c"]), n("c", &["a"])]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("a -> b -> c -> a"), "{msg}");
    }

    #[test]
    fn levels_group_independent_nodes() {
        let l = levels(&[n("a", &[]), n("b", &[]), n("c", &["a", "b"])]).unwrap();
        assert_eq!(
            l,
            vec![vec!["a".to_string(), "b".into()], vec!["c".to_string()]]
        );
    }
}
