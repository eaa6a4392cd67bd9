//! The house's shape, checked: no import circles between the modules of any crate of the workspace.
//! A module may use its children and its parents' items, but two modules that need each other are one
//! concern split in the wrong place (or two concerns tangled), and make each harder to change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The source folders of the workspace's crates.
const CRATES: [&str; 4] = ["src", "actors/src", "schema/src", "load-tests/src"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `restaurant/orders.rs` → `restaurant::orders`; `restaurant/mod.rs` → `restaurant`.
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    let name = parts.join("::");
    (!name.is_empty() && name != "lib" && name != "main").then_some(name)
}

/// The code a module's other modules can see: comments and `#[cfg(test)]` parts left out.
fn code(text: &str) -> String {
    let before_tests = text.split("#[cfg(test)]").next().unwrap_or("");
    before_tests
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b…` path in the code, as its segments; `use crate::{a, b::c}` counts too.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.push(segments(item.trim()));
            }
        } else {
            out.push(segments(rest));
        }
    }
    out
}

fn segments(s: &str) -> Vec<String> {
    let path: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    path.split("::")
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Module → the modules (outside its own ancestry) whose items it uses.
fn graph(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let sources: BTreeMap<String, String> = files
        .iter()
        .filter_map(|f| Some((module_of(root, f)?, std::fs::read_to_string(f).ok()?)))
        .collect();
    let mut edges = BTreeMap::new();
    for (module, text) in &sources {
        let mut uses = BTreeSet::new();
        for path in crate_paths(&code(text)) {
            // The longest prefix of the path that is a module of this crate.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| sources.contains_key(m));
            if let Some(t) = target {
                let ancestor = module.starts_with(&format!("{t}::"));
                if &t != module && !ancestor {
                    uses.insert(t);
                }
            }
        }
        edges.insert(module.clone(), uses);
    }
    edges
}

/// A circle through `start`, if there is one.
fn circle_from(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in edges.get(&node).into_iter().flatten() {
            if next == start {
                return Some(path);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn no_module_of_any_crate_imports_one_that_imports_it_back() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut circles = Vec::new();
    for krate in CRATES {
        let edges = graph(&workspace.join(krate));
        assert!(edges.len() > 3, "{krate}: its modules were found");
        for module in edges.keys() {
            if let Some(circle) = circle_from(module, &edges) {
                circles.push(format!("{krate}: {}", circle.join(" → ")));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_circle_check_sees_a_circle() {
    let dir = std::env::temp_dir().join(format!("s2o-circle-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("b")).expect("dir");
    std::fs::write(dir.join("lib.rs"), "mod a; mod b;").expect("lib");
    std::fs::write(dir.join("a.rs"), "use crate::b::c::Thing; // crate::z").expect("a");
    std::fs::write(dir.join("b/mod.rs"), "pub mod c;").expect("b");
    std::fs::write(dir.join("b/c.rs"), "use crate::{a::f, b};").expect("c");
    let edges = graph(&dir);
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(
        circle_from("a", &edges),
        Some(vec!["a".to_string(), "b::c".to_string()])
    );
    assert!(!edges["b::c"].contains("b"), "a module may use its parents");
}
