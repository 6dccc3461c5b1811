//! The shape ARCHITECTURE.md promises, checked on the sources and the
//! dependency graph rather than trusted:
//!
//! - the pure core (`perf-audit-analysis`) depends on no probe, runtime,
//!   database or network crate, and its library code never does I/O;
//! - the agent's top-level modules import each other without cycles, so the
//!   pipeline reads one way (probe -> unwind -> symbolize -> collectors ->
//!   engine);
//! - so do the analysis crate's (findings, report, memory, profile,
//!   database...): the rules return their own types and the report schema
//!   depends on them, never the reverse. Test code may reach anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use perf_audit_tests::workspace_root;

/// Crates the pure core must never pull in, directly or transitively.
const FORBIDDEN: [&str; 9] = ["aya", "tokio", "sqlx", "hyper", "tonic", "blazesym", "framehop", "console-api", "memmap2"];

#[test]
fn the_analysis_crate_depends_on_no_probe_runtime_or_network_crate() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["tree", "-p", "perf-audit-analysis", "-e", "normal,build", "--prefix", "none", "--format", "{p}"])
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: BTreeSet<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains("perf-audit-analysis") && crates.contains("serde"), "unexpected cargo tree output:\n{tree}");
    let bad: Vec<&&str> = crates.iter().filter(|c| FORBIDDEN.contains(c)).collect();
    assert!(bad.is_empty(), "perf-audit-analysis depends on {bad:?}:\n{tree}");
}

/// Rust sources under `dir`, recursively.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A file's code without its `#[cfg(test)]` module and its comments.
fn library_code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_analysis_crate_does_no_io() {
    let src = workspace_root().join("perf-audit-agent/analysis/src");
    let io = ["std::fs", "fs::", "std::net", "std::process", "std::env", "std::io::stdin", "File::open", "Instant::now", "SystemTime::now"];
    let mut offenders = Vec::new();
    for file in sources(&src) {
        let code = library_code(&file);
        for (n, line) in code.lines().enumerate() {
            // Advice text may name std APIs ("use tokio::fs"): only code counts.
            let outside_strings: String = line.split('"').step_by(2).collect();
            if let Some(hit) = io.iter().find(|p| outside_strings.contains(*p)) {
                offenders.push(format!("{}:{}: {hit}", file.strip_prefix(&src).unwrap().display(), n + 1));
            }
        }
    }
    assert!(offenders.len() < 1000 && !sources(&src).is_empty());
    assert!(offenders.is_empty(), "I/O in the pure core:\n{}", offenders.join("\n"));
}

/// The top-level module names `code` refers to through `crate::x` paths
/// and the names inside `use crate::{x, y::z}`, among `names`.
fn crate_paths(code: &str, names: &BTreeSet<String>, uses: &mut BTreeSet<String>) {
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each item at the group's own depth.
            let group = &group[..group.find(';').unwrap_or(group.len())];
            let (mut depth, mut expect_name, mut word) = (0, true, String::new());
            for c in group.chars() {
                if c.is_alphanumeric() || c == '_' {
                    word.push(c);
                    continue;
                }
                if expect_name && !word.is_empty() {
                    if depth == 0 && names.contains(&word) {
                        uses.insert(word.clone());
                    }
                    expect_name = false;
                }
                word.clear();
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    _ => {}
                }
            }
        } else {
            let word: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if names.contains(&word) {
                uses.insert(word);
            }
        }
    }
}

/// The agent's top-level modules and, for each, the others it names.
fn agent_module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = workspace_root().join("perf-audit-agent/src");
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let list = if path.is_dir() { sources(&path) } else { vec![path] };
        files.entry(name).or_default().extend(list);
    }
    let names: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, list) in &files {
        let mut uses = BTreeSet::new();
        for file in list {
            crate_paths(&library_code(file), &names, &mut uses);
        }
        uses.remove(name);
        graph.insert(name.clone(), uses);
    }
    graph
}

/// A file's code without its comments and without each `#[cfg(test)]`
/// item (an inline test module, a `use`), wherever it stands; the
/// `#[cfg(test)] mod x;` declarations are returned: their files are test
/// code.
fn non_test_code(path: &Path) -> (String, Vec<String>) {
    let text = fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (mut code, mut test_files, mut i) = (Vec::new(), Vec::new(), 0);
    while i < lines.len() {
        let line = lines[i];
        if line.trim() == "#[cfg(test)]" {
            // Skip further attributes, then the item.
            i += 1;
            while i < lines.len() && lines[i].trim_start().starts_with("#[") {
                i += 1;
            }
            let Some(item) = lines.get(i) else { break };
            let indent = &item[..item.len() - item.trim_start().len()];
            let decl = item.trim_start().trim_start_matches("pub(crate) ").trim_start_matches("pub ");
            if let Some(file) = decl.strip_prefix("mod ").and_then(|m| m.strip_suffix(';')) {
                test_files.push(file.trim().to_string());
            } else if item.trim_end().ends_with('{') {
                let close = format!("{indent}}}");
                while i < lines.len() && lines[i].trim_end() != close {
                    i += 1;
                }
            } else {
                while i < lines.len() && !lines[i].trim_end().ends_with(';') {
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        if !line.trim_start().starts_with("//") {
            code.push(line);
        }
        i += 1;
    }
    (code.join("\n"), test_files)
}

/// The analysis crate's top-level modules (files and folders of src/,
/// test-only ones left out) and, for each, the others its library code
/// names. Files declared `#[cfg(test)] mod x;` are test code and left out.
fn analysis_module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = workspace_root().join("perf-audit-agent/analysis/src");
    let (_, test_modules) = non_test_code(&src.join("lib.rs"));
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || test_modules.contains(&name) {
            continue;
        }
        let list = if path.is_dir() { sources(&path) } else { vec![path] };
        files.entry(name).or_default().extend(list);
    }
    // Files that are test modules of their parent.
    let mut test_files = BTreeSet::new();
    for file in files.values().flatten() {
        let (_, tests) = non_test_code(file);
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = if stem == "mod" { file.parent().unwrap().to_path_buf() } else { file.with_extension("") };
        for t in tests {
            test_files.insert(dir.join(format!("{t}.rs")));
            test_files.insert(dir.join(&t).join("mod.rs"));
        }
    }
    let names: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, list) in &files {
        let mut uses = BTreeSet::new();
        for file in list.iter().filter(|f| !test_files.contains(*f)) {
            crate_paths(&non_test_code(file).0, &names, &mut uses);
        }
        uses.remove(name);
        graph.insert(name.clone(), uses);
    }
    graph
}

/// The first import cycle of `graph`, as `a -> b -> a`.
fn first_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for next in &graph[node] {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done)).map(|c| c.join(" -> "))
}

#[test]
fn the_analysis_crates_top_level_modules_have_no_import_cycles() {
    let graph = analysis_module_graph();
    // The graph was read: the report depends on the rules and the models.
    for (from, to) in [("report", "findings"), ("report", "memory"), ("report", "database"), ("findings", "profile"), ("audit", "report")] {
        assert!(graph.get(from).is_some_and(|u| u.contains(to)), "{from} -> {to} not seen: {graph:?}");
    }
    assert!(!graph.contains_key("test_evidence"), "test-only modules are not part of the graph");
    // The checker finds a cycle when there is one.
    let mut planted = graph.clone();
    planted.get_mut("findings").unwrap().insert("report".into());
    assert!(first_cycle(&planted).is_some_and(|c| c.contains("report") && c.contains("findings")), "a planted cycle is found");
    // Each layer below the report, spelled out: none names the report.
    for lower in ["findings", "memory", "database", "profile", "health", "bench", "evidence", "load"] {
        assert!(!graph[lower].contains("report"), "{lower} imports the report: {:?}", graph[lower]);
    }
    if let Some(cycle) = first_cycle(&graph) {
        panic!("import cycle between the analysis crate's top-level modules: {cycle} (graph: {graph:?})");
    }
}

#[test]
fn the_agents_top_level_modules_have_no_import_cycles() {
    let graph = agent_module_graph();
    assert!(graph.contains_key("engine") && graph["engine"].contains("kernel"), "the module graph was not read: {graph:?}");
    if let Some(cycle) = first_cycle(&graph) {
        panic!("import cycle between the agent's top-level modules: {cycle}");
    }
}
