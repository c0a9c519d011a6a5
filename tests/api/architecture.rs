//! The shape of the code, checked: no module imports a module that imports it back, the
//! stores never reach up into the actors or handlers, and no source file grows past what
//! one person holds in mind without a stated reason.
//!
//! Modules are read from the source: a module `A` depends on `B` when a file of `A` names
//! `crate::B` (or, between the files of one folder, `super::B`) outside a comment. Two
//! levels are checked: the top-level modules of each crate, and the files of each folder
//! module among themselves (a folder's files use their parent freely; that is one module).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest source file, in lines, unless [`LONG_FILES`] gives a reason.
const MAX_LINES: usize = 600;

/// Files allowed past [`MAX_LINES`], and why.
const LONG_FILES: &[(&str, &str)] = &[(
    "src/static/index.html",
    "the demo page: one self-contained page with its script and styles, no build step",
)];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The module path of a file relative to its crate's `src`: `room_broker/room.rs` →
/// `["room_broker", "room"]`, `room_broker/mod.rs` → `["room_broker"]`, `lib.rs` → `[]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without its comments (line comments and doc comments).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            // A `//` inside a string (a URL) is rare in these files; the check only needs
            // the paths outside comments.
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers named right after `prefix` (`crate::`, `super::`), with `{a, b}` groups
/// opened one level.
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices(prefix) {
        // `$crate::` in macros and paths like `foo::crate::` do not count.
        if code[..i].ends_with('$') || code[..i].ends_with("::") {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            for part in inner.split(',') {
                let name = ident(part.trim());
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// One crate's module dependency graphs: top-level modules, and each folder's files.
struct Graphs {
    top: BTreeMap<String, BTreeSet<String>>,
    folders: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

fn graphs(src: &Path) -> Graphs {
    let files = rust_files(src);
    let paths: Vec<Vec<String>> = files.iter().map(|f| module_path(src, f)).collect();
    let top_modules: BTreeSet<String> = paths.iter().filter_map(|p| p.first().cloned()).collect();
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut folders: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (file, path) in files.iter().zip(&paths) {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let Some(first) = path.first() else { continue };
        let uses = top.entry(first.clone()).or_default();
        for name in names_after(&code, "crate::") {
            if top_modules.contains(&name) && &name != first {
                uses.insert(name);
            }
        }
        // Between the files of one folder: `super::sibling` from a file in it, or
        // `crate::folder::sibling` anywhere in it.
        if path.len() >= 2 {
            let folder = path[..path.len() - 1].join("::");
            let me = path.last().unwrap().clone();
            let siblings: BTreeSet<String> = paths
                .iter()
                .filter(|p| p.len() == path.len() && p[..p.len() - 1] == path[..path.len() - 1])
                .map(|p| p.last().unwrap().clone())
                .collect();
            let mut named = names_after(&code, "super::");
            named.extend(names_after(&code, &format!("crate::{folder}::")));
            let edges = folders
                .entry(folder)
                .or_default()
                .entry(me.clone())
                .or_default();
            for name in named {
                if siblings.contains(&name) && name != me {
                    edges.insert(name);
                }
            }
        }
    }
    Graphs { top, folders }
}

/// Every cycle in `graph`, each as the path that closes it.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_owned());
            found.push(cycle);
            return;
        }
        if done.contains(node) {
            return;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, found);
        }
        stack.pop();
        done.insert(node.to_owned());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn crates() -> [(&'static str, PathBuf); 2] {
    [
        ("courier", root().join("src")),
        ("courier-actors", root().join("actors/src")),
    ]
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let mut problems = Vec::new();
    for (name, src) in crates() {
        let g = graphs(&src);
        for cycle in cycles(&g.top) {
            problems.push(format!("{name}: {}", cycle.join(" → ")));
        }
        for (folder, graph) in &g.folders {
            for cycle in cycles(graph) {
                problems.push(format!("{name}::{folder}: {}", cycle.join(" → ")));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "import cycles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c", "a"]]);
    let code = code_of("use crate::{room_broker::Join, metrics};\n// crate::ignored\n");
    assert_eq!(
        names_after(&code, "crate::"),
        BTreeSet::from(["metrics".to_owned(), "room_broker".to_owned()])
    );
}

#[test]
fn stores_do_not_reach_up_into_actors() {
    let g = graphs(&root().join("actors/src"));
    // The storage layer and the leaf modules everything else builds on.
    let lower = ["db", "stores", "metrics", "clock", "protocol", "mailbox"];
    for module in lower {
        for used in g.top.get(module).into_iter().flatten() {
            assert!(
                lower.contains(&used.as_str()),
                "courier-actors::{module} uses {used}, which is above it"
            );
        }
    }
    // In the server, only start-up knows the routes.
    let g = graphs(&root().join("src"));
    for (module, uses) in &g.top {
        if uses.contains("routes") {
            assert_eq!(module, "startup", "{module} imports the routes");
        }
        assert!(!uses.contains("startup"), "{module} imports startup");
    }
}

#[test]
fn source_files_stay_short_or_say_why() {
    let mut long = Vec::new();
    for dir in ["src", "actors/src"] {
        let mut files = rust_files(&root().join(dir));
        files.push(root().join("src/static/index.html"));
        for file in files {
            let rel = file
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            if lines > MAX_LINES && !LONG_FILES.iter().any(|(f, _)| *f == rel) {
                long.push(format!("{rel}: {lines} lines"));
            }
        }
    }
    long.dedup();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines without a stated reason (LONG_FILES):\n{}",
        long.join("\n")
    );
}
