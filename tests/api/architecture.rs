//! The layout's promises, checked on the source: the trust core knows nothing of the
//! adapters and edges, the adapters nothing of the edges, and no two modules depend on
//! each other in a cycle (docs/architecture.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// `trust::policy`, `adapters::mint`, `config`, ...: the module a file belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [layer, module, ..] if ["trust", "adapters", "edges"].contains(&layer.as_str()) => {
            format!("{layer}::{module}")
        }
        [first, ..] => first.clone(),
        [] => "lib".to_owned(),
    }
}

/// The modules a file's `crate::` paths name.
fn dependencies(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (index, _) in text.match_indices("crate::") {
        let rest = &text[index + "crate::".len()..];
        let path: Vec<&str> = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or_default()
            .split("::")
            .collect();
        match path.as_slice() {
            [layer, module, ..] if ["trust", "adapters", "edges"].contains(layer) => {
                found.insert(format!("{layer}::{module}"));
            }
            [first, ..] if !first.is_empty() => {
                found.insert((*first).to_owned());
            }
            _ => {}
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).expect("read source");
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(dependencies(&text).into_iter().filter(|dep| *dep != module));
    }
    graph
}

#[test]
fn the_layers_depend_downwards_only() {
    for (module, deps) in graph() {
        let layer = module.split("::").next().unwrap_or_default().to_owned();
        for dep in deps {
            let forbidden = match layer.as_str() {
                "trust" => dep.starts_with("adapters::") || dep.starts_with("edges::"),
                "adapters" | "config" => dep.starts_with("edges::"),
                _ => false,
            };
            assert!(!forbidden, "{module} depends on {dep}");
        }
    }
}

#[test]
fn no_two_modules_depend_on_each_other_in_a_cycle() {
    let graph = graph();
    // Depth-first search with colours: reaching a module still on the path is a cycle.
    fn visit<'g>(
        module: &'g str,
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'g str>,
        done: &mut BTreeSet<&'g str>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(start) = path.iter().position(|m| *m == module) {
            panic!("a cycle: {} -> {module}", path[start..].join(" -> "));
        }
        path.push(module);
        for dep in graph.get(module).into_iter().flatten() {
            visit(dep, graph, path, done);
        }
        path.pop();
        done.insert(module);
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
    assert!(
        graph.contains_key("trust::exchange"),
        "the scan saw the modules"
    );
}
