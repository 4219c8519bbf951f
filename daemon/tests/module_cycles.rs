//! No import cycles between the modules of `serve/`: each file's `super::…` and `crate::serve::…`
//! paths are read from the source, resolved to the top-level module of `serve/` they name, and
//! the graph of those references must have no cycle (see ARCHITECTURE.md, rules).
//!
//! A module's submodules (`NAME/*.rs`) count as that module; `serve/mod.rs` is the
//! node `serve`, so a module naming an item re-exported there depends on everything `serve`
//! imports. Glob imports (`use super::*`, the test modules' idiom) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The node of `serve/` a path inside it names, for files `depth` directories below `serve/`.
const ROOT: &str = "serve";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read serve/")
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to, and the module path `super` starts from.
fn placement(rel: &Path) -> (String, Vec<String>) {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    let node = if parts.len() == 1 && parts[0] == "mod" {
        ROOT.to_string()
    } else {
        parts[0].clone()
    };
    // The module a file is: its path without a trailing `mod`.
    let mut module = parts;
    if module.last().is_some_and(|p| p == "mod") {
        module.pop();
    }
    (node, module)
}

fn identifier(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segments a path continues with: `a::…` gives `a`, `{a, b::c}` gives `a`, `b`.
fn first_segments(rest: &str) -> Vec<String> {
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut names = Vec::new();
        let mut start = true;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && !c.is_whitespace() => {
                    start = false;
                    let name = identifier(&inner[i..]);
                    if !name.is_empty() {
                        names.push(name.to_string());
                    }
                }
                _ => {}
            }
        }
        names
    } else {
        let name = identifier(rest);
        if name.is_empty() {
            Vec::new()
        } else {
            vec![name.to_string()]
        }
    }
}

/// The top-level modules of `serve/` (or `serve` itself) that one line refers to.
fn references(line: &str, module: &[String], children: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    let next = |s: &str| match (s.find("super::"), s.find("crate::serve::")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    while let Some(at) = next(rest) {
        let start_crate = rest[at..].starts_with("crate::serve::");
        let preceded = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        let mut tail = &rest[at..];
        // The module path the reference resolves to, below `serve/`.
        let mut target: Vec<String> = if start_crate {
            tail = &tail["crate::serve::".len()..];
            Vec::new()
        } else {
            let mut target = module.to_vec();
            while let Some(t) = tail.strip_prefix("super::") {
                target.pop();
                tail = t;
            }
            target
        };
        rest = tail;
        if preceded && !start_crate {
            continue;
        }
        if target.is_empty() {
            for name in first_segments(tail) {
                if children.contains(&name) {
                    target = vec![name];
                } else {
                    target = vec![ROOT.to_string()];
                }
                found.push(target[0].clone());
            }
        } else {
            found.push(target[0].clone());
        }
    }
    found
}

/// The child modules `serve/mod.rs` names by their bare name (`daemon::Daemon`).
fn root_references(line: &str, children: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        let starts = (c.is_alphabetic() || c == '_')
            && !(prev.is_alphanumeric() || prev == '_' || prev == ':');
        prev = c;
        if !starts {
            continue;
        }
        let name = identifier(&line[i..]);
        if children.contains(name) && line[i + name.len()..].starts_with("::") {
            found.push(name.to_string());
        }
    }
    found
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

fn serve_graph(serve: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(serve, &mut files);
    let placed: Vec<(PathBuf, String, Vec<String>)> = files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(serve).expect("under serve/").to_path_buf();
            let (node, module) = placement(&rel);
            (f, node, module)
        })
        .collect();
    let children: BTreeSet<String> = placed
        .iter()
        .map(|(_, node, _)| node.clone())
        .filter(|n| n != ROOT)
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, node, module) in &placed {
        let text = std::fs::read_to_string(file).expect("read a source file");
        let edges = graph.entry(node.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            let mut targets = references(code, module, &children);
            if node == ROOT {
                targets.extend(root_references(code, &children));
            }
            for target in targets {
                if &target != node {
                    edges.insert(target);
                }
            }
        }
    }
    graph
}

#[test]
fn serve_modules_import_each_other_without_cycles() {
    let serve = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/serve");
    let graph = serve_graph(&serve);
    assert!(graph.len() > 5, "too few modules read: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between modules of serve/: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn a_cycle_is_found() {
    let children: BTreeSet<String> = ["daemon", "engine_iface"].map(String::from).into();
    let daemon = vec!["daemon".to_string()];
    let iface = vec!["engine_iface".to_string()];
    let mut graph = BTreeMap::new();
    let edges = |line: &str, module: &[String]| -> BTreeSet<String> {
        references(line, module, &children).into_iter().collect()
    };
    graph.insert(
        "daemon".to_string(),
        edges("use super::{engine_iface::EngineIface, auth};", &daemon),
    );
    graph.insert(
        "engine_iface".to_string(),
        edges("use crate::serve::daemon::Daemon;", &iface),
    );
    let cycle = find_cycle(&graph).expect("the cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert!(cycle.contains(&"daemon".to_string()) && cycle.contains(&"engine_iface".to_string()));
    // `auth` is no module here, so it names an item of `serve`.
    assert!(graph["daemon"].contains(ROOT));
}

#[test]
fn nested_super_paths_resolve_to_their_module() {
    let children: BTreeSet<String> = ["plugin_manager", "daemon"].map(String::from).into();
    let module = ["plugin_manager".to_string(), "install".to_string()];
    assert_eq!(
        references("use super::{Entry, Inner};", &module, &children),
        ["plugin_manager"]
    );
    assert_eq!(
        references("x: super::super::daemon::unix_now(),", &module, &children),
        ["daemon"]
    );
    assert!(references("use super::*;", &module[..1], &children).is_empty());
}
