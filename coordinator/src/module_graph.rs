//! A test that the coordinator's modules do not import each other in a
//! circle, and that the `# Layout` list in `lib.rs` stays in dependency
//! order.
//!
//! It reads `src/**/*.rs`, drops comments and string literals, and collects
//! every path with a `::` in it (`use` trees included). A path is resolved
//! like rustc does for 2018+ paths: `crate::…`, `super::…`, `self::…`, or a
//! child module of the current one; everything else (other crates, local
//! items) is ignored. A reference inside `mod tests { … }` counts for the
//! file that holds it.
//!
//! Two graphs must be acyclic:
//! - top level: one node per top-level module plus the crate root
//!   (`lib.rs` may use every module; no module may use `lib.rs`' items back);
//! - every module: one node per file, without the edges from a module to
//!   its own submodules (declaring or re-exporting a child is not a cycle),
//!   so sibling cycles like `rollout::plan` ↔ `rollout::record` are caught.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module path from the crate root: `[]` is the root, `["rollout", "runner"]`
/// is `crate::rollout::runner`.
type ModPath = Vec<String>;

/// Module → the modules it refers to.
type Graph = BTreeMap<ModPath, BTreeSet<ModPath>>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// The tokens of Rust source that matter for paths; comments, string and
/// character literals are dropped.
fn tokens(source: &str) -> Vec<Tok> {
    let chars: Vec<char> = source.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if (c == 'r' || (c == 'b' && next == Some('r'))) && raw_string_start(&chars, i).is_some() {
            let (hashes, body) = raw_string_start(&chars, i).expect("just checked");
            i = body;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
        } else if c == '\'' {
            // A character literal ('x', '\n', '\'') or a lifetime ('a).
            if next == Some('\\') {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Other);
        } else {
            toks.push(match c {
                ':' if next == Some(':') => {
                    i += 1;
                    Tok::PathSep
                }
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                _ => Tok::Other,
            });
            i += 1;
        }
    }
    toks
}

/// If a raw string (`r"…"`, `r#"…"#`, `br"…"`) starts at `i`: its number of
/// `#` and where its body starts.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i + if chars[i] == 'b' { 2 } else { 1 };
    let hashes = chars[j..].iter().take_while(|c| **c == '#').count();
    j += hashes;
    (chars.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

/// Parses a path or a `use` tree starting at `toks[i]`; returns every full
/// path in it and the index after it.
fn path_tree(toks: &[Tok], mut i: usize, prefix: &[String]) -> (Vec<ModPath>, usize) {
    match toks.get(i) {
        Some(Tok::Open) => {
            i += 1;
            let mut paths = Vec::new();
            while let Some(tok) = toks.get(i) {
                match tok {
                    Tok::Close => return (paths, i + 1),
                    Tok::Ident(_) | Tok::Open => {
                        let (sub, next) = path_tree(toks, i, prefix);
                        paths.extend(sub);
                        i = next;
                    }
                    _ => i += 1,
                }
            }
            (paths, i)
        }
        Some(Tok::Ident(segment)) => {
            let mut path = prefix.to_vec();
            path.push(segment.clone());
            if toks.get(i + 1) == Some(&Tok::PathSep)
                && matches!(toks.get(i + 2), Some(Tok::Ident(_) | Tok::Open))
            {
                path_tree(toks, i + 2, &path)
            } else {
                let next = if toks.get(i + 1) == Some(&Tok::PathSep) { i + 2 } else { i + 1 };
                (vec![path], next)
            }
        }
        _ => (Vec::new(), i + 1),
    }
}

/// Every path with at least one `::` in `source`, each with the module
/// path (relative to the file's module) of the inline `mod` it sits in.
fn paths_in(source: &str) -> Vec<(ModPath, ModPath)> {
    let toks = tokens(source);
    let mut found = Vec::new();
    let mut depth = 0usize;
    let mut inline_mods: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(keyword) if keyword == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Open)) = (toks.get(i + 1), toks.get(i + 2)) {
                    depth += 1;
                    inline_mods.push((name.clone(), depth));
                    i += 3;
                    continue;
                }
            }
            Tok::Open => depth += 1,
            Tok::Close => {
                if inline_mods.last().is_some_and(|(_, d)| *d == depth) {
                    inline_mods.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(_) if i == 0 || toks[i - 1] != Tok::PathSep => {
                let (paths, next) = path_tree(&toks, i, &[]);
                if toks[i + 1..next].contains(&Tok::PathSep) {
                    let inside: ModPath = inline_mods.iter().map(|(name, _)| name.clone()).collect();
                    found.extend(paths.into_iter().map(|p| (inside.clone(), p)));
                    i = next;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The module a file defines: `lib.rs` → root, `a.rs` and `a/mod.rs` →
/// `a`, `a/b.rs` → `a::b`. `None` for files outside the library.
fn module_of(relative: &Path) -> Option<ModPath> {
    let mut parts: Vec<String> =
        relative.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>();
    let file = parts.pop()?;
    let stem = file.strip_suffix(".rs")?;
    match (parts.is_empty(), stem) {
        (true, "lib") => Some(Vec::new()),
        (true, "main") => None,
        (_, "mod") => Some(parts),
        _ => {
            parts.push(stem.to_owned());
            Some(parts)
        }
    }
}

/// The module `path`, written in module `here`, refers to: the longest
/// known module it starts with. `None` when it is not a path into this crate.
fn resolve(here: &[String], path: &[String], known: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut absolute: ModPath;
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            absolute = Vec::new();
            rest = &path[1..];
        }
        Some("self") => {
            absolute = here.to_vec();
            rest = &path[1..];
        }
        Some("super") => {
            absolute = here.to_vec();
            while rest.first().map(String::as_str) == Some("super") {
                absolute.pop()?;
                rest = &rest[1..];
            }
        }
        Some(first) => {
            let mut child = here.to_vec();
            child.push(first.to_owned());
            if !known.contains(&child) {
                return None;
            }
            absolute = here.to_vec();
        }
        None => return None,
    }
    absolute.extend(rest.iter().cloned());
    (0..=absolute.len()).rev().map(|n| absolute[..n].to_vec()).find(|m| known.contains(m))
}

/// The module graph of a crate given as (path under `src/`, source) pairs.
fn graph(files: &[(String, String)]) -> Graph {
    let modules: Vec<(ModPath, &str)> = files
        .iter()
        .filter_map(|(path, source)| module_of(Path::new(path)).map(|m| (m, source.as_str())))
        .collect();
    let known: BTreeSet<ModPath> = modules.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, source) in &modules {
        let edges = graph.entry(module.clone()).or_default();
        for (inside, path) in paths_in(source) {
            let here: ModPath = module.iter().chain(&inside).cloned().collect();
            if let Some(target) = resolve(&here, &path, &known)
                && target != *module
            {
                edges.insert(target);
            }
        }
    }
    graph
}

/// Collapses `graph` to top-level modules (`[]` stays the root).
fn top_level(graph: &Graph) -> Graph {
    let top = |m: &ModPath| m.iter().take(1).cloned().collect::<ModPath>();
    let mut collapsed = Graph::new();
    for (from, targets) in graph {
        let entry = collapsed.entry(top(from)).or_default();
        entry.extend(targets.iter().map(top).filter(|t| *t != top(from)));
    }
    collapsed
}

/// Drops edges from a module to its own submodules.
fn without_edges_to_children(graph: &Graph) -> Graph {
    graph
        .iter()
        .map(|(from, targets)| {
            let kept = targets.iter().filter(|t| !t.starts_with(from)).cloned().collect();
            (from.clone(), kept)
        })
        .collect()
}

/// A cycle in `graph`, if there is one, as `a -> b -> a`.
fn find_cycle(graph: &Graph) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &ModPath,
        graph: &Graph,
        marks: &mut BTreeMap<ModPath, Mark>,
        stack: &mut Vec<ModPath>,
    ) -> bool {
        match marks.get(node) {
            Some(Mark::Done) => return false,
            Some(Mark::Open) => {
                stack.push(node.clone());
                return true;
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if visit(next, graph, marks, stack) {
                return true;
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        false
    }
    let name = |m: &ModPath| if m.is_empty() { "crate".to_owned() } else { m.join("::") };
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        let mut stack = Vec::new();
        if visit(node, graph, &mut marks, &mut stack) {
            let last = stack.last().expect("a cycle has a node").clone();
            let start = stack.iter().position(|m| *m == last).expect("the cycle closes on the stack");
            return Some(stack[start..].iter().map(name).collect::<Vec<_>>().join(" -> "));
        }
    }
    None
}

/// Every `.rs` file under `src/` with its path relative to `src/`.
fn crate_sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).expect("under src/").to_string_lossy().into_owned();
                out.push((relative, std::fs::read_to_string(&path).expect("a source file is readable")));
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    files
}

fn module(path: &str) -> ModPath {
    path.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[test]
fn coordinator_modules_import_each_other_in_no_circle() {
    let graph = graph(&crate_sources());
    // The parser must see real edges, or an empty graph would pass.
    for (from, to) in [("rollout::runner", "store"), ("store::memory", "fencing"), ("api", "repo")] {
        let edges = &graph[&module(from)];
        assert!(edges.contains(&module(to)), "expected {from} -> {to}; found {edges:?}");
    }
    let top = top_level(&graph);
    assert_eq!(find_cycle(&top), None, "top-level modules import each other in a circle");
    assert_eq!(find_cycle(&without_edges_to_children(&graph)), None, "modules import each other in a circle");
    // The model depends on nothing else in the crate.
    assert_eq!(top[&module("model")], BTreeSet::new());
}

#[test]
fn the_layout_in_lib_rs_lists_every_module_below_the_ones_it_uses() {
    let files = crate_sources();
    let lib = &files.iter().find(|(path, _)| path == "lib.rs").expect("lib.rs").1;
    let declared: BTreeSet<ModPath> =
        lib.lines().filter_map(|line| line.strip_prefix("pub mod ")?.strip_suffix(';').map(module)).collect();
    let listed: Vec<ModPath> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("//! - [`")?.split_once("`]").map(|(name, _)| module(name)))
        .collect();
    let top = top_level(&graph(&files));
    assert_eq!(
        listed.iter().cloned().collect::<BTreeSet<_>>(),
        declared,
        "# Layout must list every `pub mod`"
    );
    assert_eq!(listed.len(), declared.len(), "# Layout lists a module twice");
    let position = |m: &ModPath| listed.iter().position(|l| l == m).expect("listed");
    for (from, targets) in top.iter().filter(|(m, _)| declared.contains(*m)) {
        for to in targets {
            assert!(
                !to.is_empty() && position(to) < position(from),
                "{} uses {}, which lib.rs' # Layout lists below it (or is the crate root)",
                from.join("::"),
                to.join("::")
            );
        }
    }
}

#[test]
fn the_old_circle_between_store_and_rollout_is_found() {
    let files = [
        ("lib.rs", "pub mod rollout;\npub mod store;\n"),
        ("store.rs", "use crate::rollout::record::RolloutRecord;\n"),
        ("rollout/mod.rs", "pub mod plan;\npub mod record;\n"),
        ("rollout/record.rs", "use super::plan::StepKind;\nuse crate::store::StoreError;\n"),
        ("rollout/plan.rs", "use super::record::{StepRecord, StepState};\n"),
    ]
    .map(|(path, source)| (path.to_owned(), source.to_owned()));
    let graph = graph(&files);
    let top = find_cycle(&top_level(&graph)).expect("store <-> rollout");
    assert!(top.contains("store") && top.contains("rollout"), "{top}");
    let fine = find_cycle(&without_edges_to_children(&graph)).expect("a cycle");
    assert!(fine.contains("rollout::"), "{fine}");

    // Without store's import, the sibling circle plan <-> record remains.
    let mut files = files.to_vec();
    files[1].1 = String::new();
    let graph = self::graph(&files);
    assert_eq!(find_cycle(&top_level(&graph)), None);
    let fine = find_cycle(&without_edges_to_children(&graph)).expect("plan <-> record");
    assert!(fine.contains("rollout::plan") && fine.contains("rollout::record"), "{fine}");
}

#[test]
fn paths_in_use_trees_count_and_comments_and_strings_do_not() {
    let source = r##"
        use crate::{alpha::A, beta::{self, B}};
        // use crate::gamma::G;
        /* crate::gamma::G */
        const S: &str = "crate::gamma::G";
        const R: &str = r#"crate::gamma::"G""#;
        const C: char = '{';
        fn f<'a>(x: &'a str) -> delta::D { super::epsilon::E }
        mod tests {
            use super::*;
            fn g() { super::super::zeta::Z; }
        }
    "##;
    let paths: Vec<ModPath> = paths_in(source).into_iter().map(|(_, p)| p).collect();
    let expected = [
        "crate::alpha::A",
        "crate::beta::self",
        "crate::beta::B",
        "delta::D",
        "super::epsilon::E",
        "super", // super::*
        "super::super::zeta::Z",
    ];
    assert_eq!(paths, expected.map(module).to_vec());
    let inside: Vec<ModPath> = paths_in(source).into_iter().map(|(inside, _)| inside).collect();
    assert_eq!(inside.last(), Some(&module("tests")));
}
