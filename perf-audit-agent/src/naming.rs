//! One naming rule for every build: a frame's function is its full path.
//!
//! Full debug info (`debug = true`) names every function, inlined or not,
//! by its linkage name (`tokio::runtime::blocking::pool::Inner::run`,
//! `svc::login::{{closure}}`). Line-tables-only DWARF (`debug =
//! "line-tables-only"`, `debug = 1`) has no namespace DIEs and no linkage
//! names: its subprograms are short names with instantiated generics
//! (`run`, `poll<tokio::...>`, `{async_fn#0}`, `{closure#0}<...>`). Taken
//! as they are, two functions with one short name become one, closures
//! and async fns lose their owner, and nothing recognises the runtime's
//! own frames (`blocking::pool` vs `multi_thread::worker`).
//!
//! The rule, applied to the frames of one address (outermost first):
//!
//! 1. The outermost (non-inlined) function is named by the ELF symbol
//!    table, which every build keeps unless stripped: its demangled path
//!    without the hash, exactly what the full build's DWARF says.
//! 2. An inlined function with a short name is looked up among the
//!    object's own symbol names: the one path whose last segment is that
//!    name, within the module its source file says (`tokio-1.x/src/runtime/
//!    blocking/pool.rs` -> `tokio::runtime::blocking::pool`). Found once:
//!    that path. Otherwise `module::name`, the module from its file.
//! 3. A closure, async fn or async block (`{closure#N}`, `{async_fn#N}`,
//!    `{async_block#N}`) is named after its enclosing function, as the full
//!    build names it (`enclosing::{{closure}}`): for the owner's files, the
//!    owner function whose first line is the nearest before the closure's
//!    line; else the nearest outer frame from the same file; else the
//!    module of its file.
//!
//! Frames from C files (`.c`, `.S`, `.h`) keep their names: C has no
//! namespaces to lose.

use std::collections::HashMap;

/// A symbol table's Rust function paths, by their last segment.
#[derive(Debug, Default)]
pub struct SymtabIndex {
    by_last: HashMap<String, Vec<String>>,
}

/// At most this many distinct paths are kept per last segment: a name
/// shared by more (`poll`, `fmt`, `drop_in_place`) can never be decided by
/// the index alone, and the module filter only needs the candidates of one
/// module.
const MAX_CANDIDATES: usize = 4_096;

impl SymtabIndex {
    /// The index of demangled function paths (any order, duplicates
    /// allowed).
    pub fn from_paths<I: IntoIterator<Item = String>>(paths: I) -> SymtabIndex {
        let mut by_last: HashMap<String, Vec<String>> = HashMap::new();
        for path in paths {
            let Some(last) = last_segment(&path) else { continue };
            let last = strip_generics(last);
            let entry = by_last.entry(last).or_default();
            if entry.len() < MAX_CANDIDATES && !entry.contains(&path) {
                entry.push(path);
            }
        }
        SymtabIndex { by_last }
    }

    /// The Rust function symbols of an ELF file (`.symtab`, else `.dynsym`),
    /// demangled without their hash.
    pub fn from_elf(elf: &object::File<'_>) -> SymtabIndex {
        use object::{Object as _, ObjectSymbol as _};
        let names = elf
            .symbols()
            .chain(elf.dynamic_symbols())
            .filter(|s| s.kind() == object::SymbolKind::Text && !s.is_undefined())
            .filter_map(|s| s.name().ok())
            .filter_map(|n| rustc_demangle::try_demangle(n).ok().map(|d| format!("{d:#}")));
        SymtabIndex::from_paths(names)
    }

    /// The one path named `short` inside `module` (or anywhere when no
    /// module is known and the name is unique).
    fn unique_in(&self, short: &str, module: Option<&str>) -> Option<&str> {
        let candidates = self.by_last.get(short)?;
        let mut inside = candidates.iter().filter(|p| match module {
            Some(m) => in_module(p, m),
            None => true,
        });
        let first = inside.next()?;
        if inside.next().is_some() { None } else { Some(first) }
    }
}

/// Whether `path` is an item of `module` (directly, or of a type or impl
/// in it): `tokio::runtime::blocking::pool::Inner::run` and
/// `<tokio::runtime::blocking::pool::Inner>::run` are in
/// `tokio::runtime::blocking::pool`.
fn in_module(path: &str, module: &str) -> bool {
    let path = path.trim_start_matches('<');
    path.strip_prefix(module).is_some_and(|rest| rest.starts_with("::") || rest.starts_with('>') || rest.starts_with('<'))
}

/// The out-of-line owner functions of one object by source file, with the
/// lines of their first and last instructions: what encloses a closure the
/// line tables name only `{closure#0}`. A function is taken only when the
/// closure's line lies inside its span (a closure or async fn that is
/// always inlined has no entry: its line never falls in another's span).
#[derive(Debug, Default)]
pub struct OwnerLines {
    by_file: HashMap<String, Vec<(u32, u32, String)>>,
}

impl OwnerLines {
    /// From (file, first line, last line, function path) of each owner
    /// function; a last line before the first is taken as unknown (the
    /// span is then the first line only).
    pub fn new<I: IntoIterator<Item = (String, u32, u32, String)>>(functions: I) -> OwnerLines {
        let mut by_file: HashMap<String, Vec<(u32, u32, String)>> = HashMap::new();
        for (file, first, last, function) in functions {
            by_file.entry(file).or_default().push((first, last.max(first), function));
        }
        for v in by_file.values_mut() {
            v.sort();
            v.dedup();
        }
        OwnerLines { by_file }
    }

    /// Whether `function`'s span in `file` is known and leaves out `line`.
    fn excludes(&self, file: &str, function: &str, line: u32) -> bool {
        self.by_file.get(file).is_some_and(|v| {
            let mut spans = v.iter().filter(|(_, _, f)| f == function).peekable();
            spans.peek().is_some() && spans.all(|(first, last, _)| !(*first..=*last).contains(&line))
        })
    }

    /// The function with the narrowest span holding `line` in `file`.
    fn enclosing(&self, file: &str, line: u32) -> Option<&str> {
        let v = self.by_file.get(file)?;
        v.iter().filter(|(first, last, _)| (*first..=*last).contains(&line)).min_by_key(|(first, last, _)| last - first).map(|(_, _, name)| name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.by_file.is_empty()
    }
}

/// Reads a source file by path (see [`Namer::source`]).
pub type SourceReader<'a> = dyn Fn(&str) -> Option<std::rc::Rc<str>> + 'a;

/// What naming one object's frames can use.
pub struct Namer<'a> {
    pub symtab: Option<&'a SymtabIndex>,
    pub owner_lines: Option<&'a OwnerLines>,
    /// The owner's crates (of the executable), to name the crate of a
    /// source directory of the owner's.
    pub owner_crates: &'a [String],
    /// Reads a source file named by the line tables, if it is on this
    /// machine (bounded, regular files only).
    pub source: Option<&'a SourceReader<'a>>,
}

/// The function that encloses 1-based `line` in Rust source `text`: the
/// nearest `fn name` line at or above it whose body (by brace depth) is
/// still open at `line`; inside an `impl Type` block, `Type::name`.
pub fn enclosing_fn_in_source(text: &str, line: u32) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(line as usize).collect();
    if lines.len() < line as usize || line == 0 {
        return None;
    }
    // Walk up, tracking how many blocks open below the candidate close
    // before `line`: a block that closed is not around it.
    let mut depth: i64 = 0;
    let mut function: Option<String> = None;
    for l in lines.iter().rev() {
        let code = without_strings(l.split("//").next().unwrap_or(""));
        let code = code.as_str();
        let opens = code.matches('{').count() as i64;
        let closes = code.matches('}').count() as i64;
        depth += closes - opens;
        if depth < 0 {
            // This line opens a block still open at `line`.
            if function.is_none() {
                if let Some(name) = fn_name(code) {
                    function = Some(name);
                }
            } else if let Some(ty) = impl_type(code) {
                return function.map(|f| format!("{ty}::{f}"));
            }
            depth = 0;
        }
    }
    function
}

/// The line with the contents of its `"..."` and `'.'` literals removed.
fn without_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_str = false;
    let mut escaped = false;
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
                out.push(c);
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // A char literal such as '{'.
            i += 3;
            continue;
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

fn fn_name(code: &str) -> Option<String> {
    let at = code.find("fn ")?;
    if at > 0 && code.as_bytes()[at - 1].is_ascii_alphanumeric() {
        return None;
    }
    let name: String = code[at + 3..].trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

fn impl_type(code: &str) -> Option<String> {
    let rest = code.trim_start().strip_prefix("impl")?;
    let rest = rest.trim_start();
    // `impl<T> Trait for Type<T> {`, `impl Type {`
    let rest = if rest.starts_with('<') { rest[rest.find('>')? + 1..].trim_start() } else { rest };
    let ty = rest.rsplit(" for ").next()?.trim();
    let name: String = ty.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!name.is_empty()).then_some(name)
}

/// One frame as naming sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameInput<'a> {
    pub name: &'a str,
    pub file: Option<&'a str>,
    pub line: Option<u32>,
}

impl Namer<'_> {
    /// Full names for the frames of one address (outermost first).
    /// `symtab_outer` is the symbol table's name of the outermost function.
    /// Returns `None` when every name is already qualified (full debug
    /// info), so the caller keeps its frames untouched.
    pub fn name_frames(&self, frames: &[NameInput<'_>], symtab_outer: Option<&str>) -> Option<Vec<String>> {
        if frames.iter().all(|f| !needs_naming(f)) {
            return None;
        }
        let mut out: Vec<String> = Vec::with_capacity(frames.len());
        for (i, frame) in frames.iter().enumerate() {
            let name = if !needs_naming(frame) {
                frame.name.to_string()
            } else if i == 0 && let Some(outer) = symtab_outer {
                outer.to_string()
            } else {
                self.qualify(frame, &frames[..i], &out)
            };
            out.push(name);
        }
        Some(out)
    }

    fn qualify(&self, frame: &NameInput<'_>, outer: &[NameInput<'_>], outer_names: &[String]) -> String {
        let short = strip_generics(frame.name);
        let module = frame.file.and_then(|f| self.module_of_file(f));
        if is_closure_token(&short) {
            // The owner function that starts nearest before the closure.
            if let (Some(lines), Some(file), Some(line)) = (self.owner_lines, frame.file, frame.line)
                && let Some(enclosing) = lines.enclosing(file, line) {
                    return closure_of(enclosing);
                }
            // The function around it in its source file, when the file is
            // on this machine (a build or CI host).
            if let (Some(file), Some(line), Some(m)) = (frame.file, frame.line, module.as_deref())
                && let Some(function) = self.source.and_then(|read| read(file)).and_then(|text| enclosing_fn_in_source(&text, line)) {
                    return format!("{m}::{function}::{{{{closure}}}}");
                }
            // The nearest outer frame of the same file, unless its known
            // span leaves the closure's line out (another function of the
            // file inlined into it).
            if let Some(file) = frame.file
                && let Some(i) = outer.iter().rposition(|o| o.file == Some(file)) {
                    let outside = match (self.owner_lines, frame.line) {
                        (Some(lines), Some(line)) => lines.excludes(file, &outer_names[i], line),
                        _ => false,
                    };
                    if !outside {
                        return closure_of(&outer_names[i]);
                    }
                }
            return match module {
                Some(m) if !m.is_empty() => format!("{m}::{{{{closure}}}}"),
                _ => match outer_names.last() {
                    Some(o) => closure_of(o),
                    None => "{{closure}}".to_string(),
                },
            };
        }
        if let Some(index) = self.symtab
            && let Some(found) = index.unique_in(&short, module.as_deref().filter(|m| !m.is_empty())) {
                return found.to_string();
            }
        match module {
            Some(m) if !m.is_empty() => format!("{m}::{short}"),
            _ => match outer_names.last() {
                Some(o) => format!("{o}::{short}"),
                None => short,
            },
        }
    }

    /// The Rust module a source file is (`.../library/core/src/iter/mod.rs`
    /// -> `core::iter`; `.../tokio-1.48.0/src/runtime/task/raw.rs` ->
    /// `tokio::runtime::task::raw`; the owner's `.../svc/src/db/users.rs`
    /// -> `svc::db::users`). `None` for files that are not Rust or not in
    /// a crate's `src/`.
    pub fn module_of_file(&self, file: &str) -> Option<String> {
        if !file.ends_with(".rs") {
            return None;
        }
        let (root, rest) = file.rsplit_once("/src/")?;
        let dir = root.rsplit('/').next().unwrap_or(root);
        let krate = if let Some((_, std_crate)) = root.rsplit_once("/library/") {
            std_crate.replace('-', "_")
        } else if let Some(name) = registry_crate(dir) {
            name
        } else {
            let normal = dir.replace('-', "_");
            if self.owner_crates.contains(&normal) || self.owner_crates.len() != 1 {
                normal
            } else {
                self.owner_crates[0].clone()
            }
        };
        if krate.is_empty() {
            return None;
        }
        let stem = rest.strip_suffix(".rs")?;
        let mut parts: Vec<&str> = stem.split('/').collect();
        if parts.first() == Some(&"bin") {
            return Some(krate);
        }
        if matches!(parts.last(), Some(&"mod")) || (parts.len() == 1 && matches!(parts[0], "lib" | "main")) {
            parts.pop();
        }
        let mut module = krate;
        for p in parts {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Some(module);
            }
            module.push_str("::");
            module.push_str(p);
        }
        Some(module)
    }
}

/// Source files larger than this are not read for names.
const MAX_SOURCE_BYTES: u64 = 4 << 20;

/// Reads a Rust source file named by the target's line tables: the path is
/// the target's word, so only a regular file, opened without blocking (a
/// FIFO would hang the read), at most [`MAX_SOURCE_BYTES`], UTF-8.
pub fn read_source_file(path: &std::path::Path) -> Option<String> {
    use std::io::Read as _;
    if path.extension().is_none_or(|e| e != "rs") {
        return None;
    }
    let file = crate::safe_file::open_regular(path).ok()?;
    if file.metadata().ok()?.len() > MAX_SOURCE_BYTES {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_SOURCE_BYTES).read_to_string(&mut text).ok()?;
    Some(text)
}

/// `name-1.2.3` (a registry or git checkout) -> `name` (as a crate: `_`).
fn registry_crate(dir: &str) -> Option<String> {
    let (name, version) = dir.rsplit_once('-')?;
    let numeric = version.split('.').next().is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()));
    // `name-1.2.3-alpha.1`: the version's own dash.
    if !numeric {
        let (name2, _) = name.rsplit_once('-')?;
        let (n, v) = dir.split_at(name2.len() + 1);
        let _ = n;
        if v.split('.').next().is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit())) {
            return Some(name2.replace('-', "_"));
        }
        return None;
    }
    (version.contains('.')).then(|| name.replace('-', "_"))
}

fn closure_of(enclosing: &str) -> String {
    if enclosing.ends_with("{{closure}}") { enclosing.to_string() } else { format!("{enclosing}::{{{{closure}}}}") }
}

/// A frame whose name lacks its path: a short Rust name from line tables.
fn needs_naming(frame: &NameInput<'_>) -> bool {
    if frame.file.is_some_and(|f| !f.ends_with(".rs")) {
        return false;
    }
    let short = strip_generics(frame.name);
    if is_closure_token(&short) {
        return true;
    }
    // A short name from line tables always comes with a Rust file; a
    // symbol-table name without a file (C functions: `malloc`, `clone3`)
    // has nothing to qualify.
    frame.file.is_some() && !short.contains("::") && !frame.name.starts_with('<')
}

/// `{closure#0}`, `{async_fn#1}`, `{async_block#0}`, `{closure_env#0}`.
pub fn is_closure_token(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else { return false };
    let Some((kind, n)) = inner.split_once('#') else { return false };
    matches!(kind, "closure" | "async_fn" | "async_block" | "closure_env" | "async_fn_env" | "coroutine")
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
}

/// The name without its generic arguments at depth 0 (`poll<T, S>` ->
/// `poll`, `{closure#0}<...>` -> `{closure#0}`).
pub fn strip_generics(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// The last `::` segment at depth 0 (outside `<...>`).
fn last_segment(path: &str) -> Option<&str> {
    let bytes = path.as_bytes();
    let mut depth = 0usize;
    let mut start = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => depth += 1,
            b'>' if depth > 0 => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                start = i + 2;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    let last = &path[start..];
    (!last.is_empty()).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(name: &'a str, file: &'a str, line: u32) -> NameInput<'a> {
        NameInput { name, file: Some(file), line: Some(line) }
    }

    const TOKIO_POOL: &str = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.48.0/src/runtime/blocking/pool.rs";
    const WORKER: &str = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.48.0/src/runtime/scheduler/multi_thread/worker.rs";
    const MAIN: &str = "/work/svc/src/main.rs";

    #[test]
    fn modules_from_files() {
        let owner = vec!["svc".to_string()];
        let n = Namer { symtab: None, owner_lines: None, owner_crates: &owner, source: None };
        assert_eq!(n.module_of_file(TOKIO_POOL).as_deref(), Some("tokio::runtime::blocking::pool"));
        assert_eq!(n.module_of_file("/rustc/5980/library/core/src/iter/adapters/mod.rs").as_deref(), Some("core::iter::adapters"));
        assert_eq!(n.module_of_file("/rustc/5980/library/std/src/sys/pal/unix/futex.rs").as_deref(), Some("std::sys::pal::unix::futex"));
        assert_eq!(n.module_of_file(MAIN).as_deref(), Some("svc"));
        assert_eq!(n.module_of_file("/work/svc/src/db/users.rs").as_deref(), Some("svc::db::users"));
        assert_eq!(n.module_of_file("/work/svc/src/bin/tool.rs").as_deref(), Some("svc"));
        assert_eq!(n.module_of_file("/x/parking_lot_core-0.9.10/src/parking_lot.rs").as_deref(), Some("parking_lot_core::parking_lot"));
        assert_eq!(n.module_of_file("/x/foo-bar-1.0.0-alpha.1/src/lib.rs").as_deref(), Some("foo_bar"));
        assert_eq!(n.module_of_file("/glibc/malloc/malloc.c"), None);
        assert_eq!(n.module_of_file("src/map.rs"), None);
    }

    #[test]
    fn the_source_file_names_an_always_inlined_async_fn() {
        let src = "use x;\n\npub async fn latest(pool: &P) -> R {\n    q(\"SELECT\").await\n}\n\npub async fn one_by_one(pool: &P) -> R {\n    for p in ps {\n        let a = q(\"{\").await?; // }\n    }\n}\n\nimpl Repo {\n    async fn find(&self) {\n        let f = |x| { x + 1 };\n        f(1);\n    }\n}\n";
        assert_eq!(enclosing_fn_in_source(src, 9).as_deref(), Some("one_by_one"));
        assert_eq!(enclosing_fn_in_source(src, 4).as_deref(), Some("latest"));
        assert_eq!(enclosing_fn_in_source(src, 16).as_deref(), Some("Repo::find"));
        assert_eq!(enclosing_fn_in_source(src, 15).as_deref(), Some("Repo::find"));
        assert_eq!(enclosing_fn_in_source(src, 1), None);
        assert_eq!(enclosing_fn_in_source(src, 99), None);
        let read = |_: &str| Some(std::rc::Rc::<str>::from(src));
        let owner = vec!["svc".to_string()];
        let n = Namer { symtab: None, owner_lines: None, owner_crates: &owner, source: Some(&read) };
        let names = n.name_frames(&[input("{async_fn#0}", "/work/svc/src/db.rs", 9)], None).unwrap();
        assert_eq!(names, vec!["svc::db::one_by_one::{{closure}}".to_string()]);
    }

    #[test]
    fn generics_and_segments() {
        assert_eq!(strip_generics("poll<tokio::runtime::blocking::task::BlockingTask<x::{closure_env#0}>, S>"), "poll");
        assert_eq!(strip_generics("{closure#0}<a::b, ()>"), "{closure#0}");
        assert_eq!(last_segment("tokio::runtime::blocking::pool::Inner::run"), Some("run"));
        assert_eq!(last_segment("<T as core::future::Future>::poll"), Some("poll"));
        assert_eq!(last_segment("tokio::runtime::task::harness::Harness<T,S>::complete::{{closure}}"), Some("{{closure}}"));
        assert!(is_closure_token("{async_fn#0}") && is_closure_token("{async_block#12}") && !is_closure_token("{impl#0}"));
    }

    #[test]
    fn outermost_takes_the_symbol_table_name() {
        let owner = vec!["svc".to_string()];
        let n = Namer { symtab: None, owner_lines: None, owner_crates: &owner, source: None };
        let frames = [input("{async_fn#0}", MAIN, 40)];
        assert_eq!(n.name_frames(&frames, Some("svc::login::{{closure}}")), Some(vec!["svc::login::{{closure}}".to_string()]));
        // Full debug info: nothing to do.
        let full = [input("svc::login::{{closure}}", MAIN, 40), input("svc::verify", MAIN, 12)];
        assert_eq!(n.name_frames(&full, Some("svc::login::{{closure}}")), None);
        // C frames keep their names.
        let c = [NameInput { name: "malloc", file: Some("/glibc/malloc/malloc.c"), line: Some(3) }];
        assert_eq!(n.name_frames(&c, Some("malloc")), None);
    }

    #[test]
    fn inlined_short_names_resolve_within_their_module() {
        let index = SymtabIndex::from_paths(
            [
                "tokio::runtime::blocking::pool::Inner::run",
                "tokio::runtime::scheduler::multi_thread::worker::run",
                "tokio::runtime::scheduler::multi_thread::worker::Context::run",
                "svc::auth::verify_password_hash",
                "other::verify_password_hash",
            ]
            .map(String::from),
        );
        let owner = vec!["svc".to_string()];
        let n = Namer { symtab: Some(&index), owner_lines: None, owner_crates: &owner, source: None };
        let frames = [
            input("run", TOKIO_POOL, 500),
            input("run", WORKER, 500),
            input("verify_password_hash", "/work/svc/src/auth.rs", 9),
            input("hash_once<u8>", "/work/svc/src/auth.rs", 20),
        ];
        let names = n.name_frames(&frames, Some("tokio::runtime::blocking::pool::Inner::run")).unwrap();
        assert_eq!(names[0], "tokio::runtime::blocking::pool::Inner::run");
        // Two `run`s in worker.rs: the module's, not a guess between them.
        assert_eq!(names[1], "tokio::runtime::scheduler::multi_thread::worker::run");
        assert_eq!(names[2], "svc::auth::verify_password_hash");
        // Not in the symbol table at all (always inlined): module from its file.
        assert_eq!(names[3], "svc::auth::hash_once");
    }

    #[test]
    fn closures_are_named_after_their_enclosing_function() {
        let lines = OwnerLines::new([
            (MAIN.to_string(), 100, 128, "svc::serve::{{closure}}".to_string()),
            (MAIN.to_string(), 130, 145, "svc::read_settings_async".to_string()),
            (MAIN.to_string(), 150, 160, "svc::other".to_string()),
            // Line 170 is in an always-inlined async fn: no span holds it.
            (MAIN.to_string(), 165, 168, "svc::before".to_string()),
        ]);
        let owner = vec!["svc".to_string()];
        let n = Namer { symtab: None, owner_lines: Some(&lines), owner_crates: &owner, source: None };
        let frames = [
            input("poll<x>", "/x/tokio-1.48.0/src/runtime/blocking/task.rs", 42),
            input("{closure#0}<y>", MAIN, 140),
            input("{async_fn#0}", MAIN, 120),
            input("{closure#1}", "/x/tokio-1.48.0/src/runtime/blocking/task.rs", 44),
            input("{async_fn#0}", MAIN, 170),
        ];
        let names = n.name_frames(&frames, Some("<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll")).unwrap();
        assert_eq!(names[1], "svc::read_settings_async::{{closure}}");
        assert_eq!(names[2], "svc::serve::{{closure}}");
        // A dependency's closure: after the outer frame of its own file.
        assert_eq!(names[3], "<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll::{{closure}}");
        // Not after the function that starts before it: the module's.
        assert_eq!(names[4], "svc::{{closure}}");
        assert!(names.iter().all(|n| !n.contains('#')), "{names:?}");
    }
}
