//! Whose code is it, when the binary has no debug info: the owner's crates
//! decided from what the binary itself says.
//!
//! With line tables, a frame's source path tells the owner's code from
//! std's (`/rustc/...`) and from a dependency's (`.../registry/src/...`):
//! see [`super::origin_of_path`]. A release build without debug info (the
//! default `[profile.release]`) has symbols but no paths, so the decision is
//! made by crate name instead:
//!
//! - **dependencies** are std's crates, and every crate whose sources the
//!   binary names: rustc embeds the file of every panic location (`unwrap`,
//!   slice indexing, `expect`...) even without debug info, and a dependency's
//!   file is `.../registry/src/<index>/<crate>-<version>/src/...` (crates.io),
//!   `.../git/checkouts/...` (git) or `/rust/deps/<crate>-<version>/...`
//!   (std's own dependencies);
//! - **the owner's crates** are the executable's crate (the crate of its
//!   Rust `main`, and its file name as cargo names binaries), and the crates
//!   of the workspace, whose embedded paths are `<package>/src/...` without a
//!   version;
//! - a crate the binary says nothing about is **not** called the owner's: a
//!   wrong "your code" finding costs more than a missing one.
//!
//! The agent reads the bytes and the symbols ([`CrateFacts::from_binary`]
//! takes them as values); this module only decides.

use std::collections::{BTreeMap, BTreeSet};

use super::Origin;

/// Crates of the Rust toolchain and of std's private dependencies: never
/// the owner's, whatever the binary says.
const TOOLCHAIN_CRATES: &[&str] = &[
    "std", "core", "alloc", "proc_macro", "test", "panic_unwind", "panic_abort", "unwind", "compiler_builtins",
    "std_detect", "hashbrown", "addr2line", "gimli", "object", "miniz_oxide", "adler", "adler2", "memchr",
    "rustc_demangle", "cfg_if", "libc", "__rustc",
];

/// Common runtime and framework crates, dependencies even when the binary
/// embeds none of their paths (a crate without panic locations).
const WELL_KNOWN_DEPENDENCIES: &[&str] = &[
    "tokio", "tokio_util", "tokio_stream", "mio", "futures", "futures_util", "futures_core", "futures_channel",
    "futures_executor", "hyper", "hyper_util", "h2", "http", "http_body", "http_body_util", "axum", "axum_core", "tower",
    "tower_http", "tower_layer", "tower_service", "tonic", "prost", "bytes", "serde", "serde_json", "serde_core", "sqlx",
    "sqlx_core", "sqlx_postgres", "tracing", "tracing_core", "tracing_subscriber", "parking_lot", "parking_lot_core",
    "lock_api", "regex", "regex_automata", "regex_syntax", "aho_corasick", "itoa", "ryu", "smallvec", "indexmap",
    "crossbeam_channel", "crossbeam_utils", "crossbeam_epoch", "crossbeam_deque", "rayon", "rayon_core", "once_cell",
    "log", "anyhow", "thiserror", "rand", "rand_core", "rand_chacha", "ppv_lite86", "getrandom", "sha2", "digest",
    "md5", "base64", "url", "percent_encoding", "form_urlencoded", "idna", "socket2", "slab", "pin_project_lite",
    "pin_project", "chrono", "time", "uuid", "tikv_jemallocator", "tikv_jemalloc_sys", "mimalloc", "libmimalloc_sys",
    "console_subscriber", "hdrhistogram", "flate2", "zstd", "rustls", "ring", "openssl", "native_tls", "reqwest",
    "clap", "clap_builder", "toml", "dashmap", "argon2", "bcrypt", "blake2", "password_hash",
];

/// How the owner's code is decided, as the report states it (report.json
/// `symbols[].owner_rule`; each owner crate's evidence is in
/// `symbols[].owner_evidence`).
pub const OWNER_RULE: &str = "the owner's code is the executable's workspace. With line tables: every frame of the executable whose source file is not under /rustc/, a Cargo registry, a git checkout, vendor/ or the toolchain (so every crate whose sources sit in the workspace or a local path dependency). Without line tables (symbols only): the crate of the Rust `main`, the crate named like the executable, and every crate whose source paths the binary embeds (panic locations: `<dir>/src/...`) outside those directories and without a `-<version>` suffix; std's crates and well-known dependencies never. A crate the binary names nowhere is not the owner's";

/// What one executable says about the crates compiled into it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CrateFacts {
    /// The owner's crates (the executable's own, the workspace's).
    pub owner: BTreeSet<String>,
    /// Crates whose sources the binary names as dependencies.
    pub dependencies: BTreeSet<String>,
    /// Per owner crate, what in the binary made it the owner's.
    pub evidence: BTreeMap<String, String>,
}

impl CrateFacts {
    /// Reads the crates of an executable named `exe_name` from its bytes
    /// (the embedded source paths) and its demangled function names.
    pub fn from_binary<'a>(exe_name: &str, data: &[u8], functions: impl IntoIterator<Item = &'a str>) -> CrateFacts {
        let paths = SourceDirs::scan(data);
        let mut dependencies = paths.dependencies;
        dependencies.extend(TOOLCHAIN_CRATES.iter().map(|c| c.to_string()));
        let mut evidence: BTreeMap<String, String> = paths
            .local
            .into_iter()
            .map(|(krate, path)| (krate, format!("a workspace source path embedded in the binary (`{path}`: no version, outside registry, git and toolchain directories)")))
            .collect();
        // Cargo names a binary crate after its target: `my-svc` is `my_svc`.
        let exe_crate = crate_ident(exe_name);
        if !exe_crate.is_empty() {
            evidence.entry(exe_crate).or_insert_with(|| format!("the executable's own crate (its file name, `{exe_name}`)"));
        }
        // The crate of the Rust `main` (`svc::main`: a crate root function).
        let mut symbol_crates: BTreeSet<String> = BTreeSet::new();
        for f in functions {
            if let Some(krate) = f.strip_suffix("::main")
                && is_ident(krate)
            {
                evidence.insert(krate.to_string(), format!("the crate of the Rust `main` (`{f}`)"));
            }
            if let Some(krate) = crate_of(f) {
                symbol_crates.insert(krate.to_string());
            }
        }
        evidence.retain(|c, _| !dependencies.contains(c) && !WELL_KNOWN_DEPENDENCIES.contains(&c.as_str()));
        // Directory and file names that are no crate of this binary's
        // functions (a renamed executable, a `docs/src/` path) name nothing.
        if !symbol_crates.is_empty() {
            evidence.retain(|c, _| symbol_crates.contains(c));
        }
        CrateFacts { owner: evidence.keys().cloned().collect(), dependencies, evidence }
    }

    /// Origin of a function of the executable that has no source file:
    /// the owner's when its crate is one of the owner's, a dependency when
    /// its crate is any other Rust crate, native when it has no crate (C,
    /// assembly, linker-made symbols).
    pub fn origin_of_function(&self, function: &str) -> Origin {
        match crate_of(function) {
            None => Origin::Native,
            Some(krate) if self.owner.contains(krate) => Origin::Owner,
            Some(_) => Origin::Dependency,
        }
    }
}

/// The crate a demangled function belongs to: its path's first segment;
/// for a trait method `<Type as Trait>::f`, the type's crate (an impl for
/// the owner's type is the owner's code), or the trait's when the type is
/// not a path (`<[T] as core::fmt::Debug>::fmt` is core's). `None` for
/// names without a path (`main`, `memcpy`).
pub fn crate_of(function: &str) -> Option<&str> {
    let name = function.trim();
    if let Some(inner) = name.strip_prefix('<') {
        let (self_ty, trait_part) = match split_as(inner) {
            Some((ty, tr)) => (ty, Some(tr)),
            None => (inner, None),
        };
        let ty = self_ty.trim_start_matches(['&', '*', '(', '[', ' ']).trim_start_matches("mut ").trim_start_matches("const ").trim_start_matches("dyn ");
        if let Some(k) = first_segment(ty) {
            return Some(k);
        }
        return trait_part.and_then(first_segment);
    }
    first_segment(name)
}

/// `Type as Trait>::f` -> (`Type`, `Trait>::f`), at the top nesting level.
fn split_as(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    let bytes = s.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'<' => depth += 1,
            b'>' if depth == 0 => return None,
            b'>' => depth -= 1,
            b' ' if depth == 0 && s[i..].starts_with(" as ") => return Some((&s[..i], &s[i + 4..])),
            _ => {}
        }
    }
    None
}

/// `krate::rest` -> `krate`, when `krate` is an identifier and followed by `::`.
fn first_segment(s: &str) -> Option<&str> {
    let (head, _) = s.split_once("::")?;
    is_ident(head).then_some(head)
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && !s.starts_with(|c: char| c.is_ascii_digit()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `my-svc` -> `my_svc`: a package or binary name as its crate is named.
fn crate_ident(name: &str) -> String {
    let name: String = name.chars().map(|c| if c == '-' { '_' } else { c }).collect();
    if is_ident(&name) { name } else { String::new() }
}

/// Crate directories named by the source paths embedded in a binary.
#[derive(Debug, Default)]
struct SourceDirs {
    /// `<crate>-<version>` directories and anything under a registry, git
    /// checkout, vendor or toolchain path.
    dependencies: BTreeSet<String>,
    /// `<package>/src/...` without a version, outside those paths: each
    /// crate with the first such path seen.
    local: BTreeMap<String, String>,
}

impl SourceDirs {
    /// Every `<dir>/src/` in `data`: the directory name before `src` is a
    /// package's (the root package's own files are plain `src/...`, which
    /// names nothing: its crate comes from `main` and the file name).
    /// Panic-location file names are packed back to back without
    /// separators, so a path is taken to start after the previous `.rs`.
    fn scan(data: &[u8]) -> SourceDirs {
        const MARKER: &[u8] = b"/src/";
        const DEPENDENCY_PATHS: &[&[u8]] = &[
            b"/registry/", b"/git/checkouts/", b"/rust/deps/", b"/rustc/", b"/vendor/", b"/lib/rustlib/", b"/.rustup/",
            b"/.cargo/",
        ];
        let mut dirs = SourceDirs::default();
        let mut i = 0;
        while let Some(found) = find(&data[i..], MARKER) {
            let at = i + found;
            i = at + MARKER.len();
            // Only the innermost `src/` of a path names a crate (not a
            // `/home/me/src/` above the checkout): the rest of this path, up
            // to its `.rs`, has no other.
            let after = &data[i..data.len().min(i + 512)];
            let after = &after[..after.iter().position(|b| !is_path_byte(*b)).unwrap_or(after.len())];
            let after = &after[..find(after, b".rs").unwrap_or(after.len())];
            if find(after, MARKER).is_some() {
                continue;
            }
            let window = &data[at.saturating_sub(512)..at];
            let mut start = window.iter().rposition(|b| !is_path_byte(*b)).map_or(0, |p| p + 1);
            if let Some(end_of_previous) = rfind(&window[start..], b".rs") {
                start += end_of_previous + 3;
            }
            let run = &window[start..];
            let mut components = run.rsplit(|b| *b == b'/');
            let Ok(dir) = std::str::from_utf8(components.next().unwrap_or_default()) else { continue };
            let dependency_path = DEPENDENCY_PATHS.iter().any(|p| find(run, p).is_some());
            // `.../registry/src/<index>/...` and `/home/me/src/...` name no crate.
            if dir.is_empty() || dir == "registry" || dir == "." || dir == ".." {
                continue;
            }
            let (name, versioned) = match split_version(dir) {
                Some(name) => (name.to_string(), true),
                None if dependency_path && find(run, b"/git/checkouts/").is_some() && is_hex(dir) => {
                    // A git dependency at its checkout's root:
                    // `.../git/checkouts/<repo>-<hash>/<rev>/src/`.
                    let repo = std::str::from_utf8(components.next().unwrap_or_default()).unwrap_or_default();
                    (repo.rsplit_once('-').map_or(repo, |(name, _)| name).to_string(), true)
                }
                None => (dir.to_string(), false),
            };
            let krate = crate_ident(&name);
            if krate.is_empty() {
                continue;
            }
            if versioned || dependency_path {
                dirs.dependencies.insert(krate);
            } else {
                let path = String::from_utf8_lossy(run).into_owned() + "/src/" + &String::from_utf8_lossy(after) + ".rs";
                dirs.local.entry(krate).or_insert(path);
            }
        }
        dirs.local.retain(|c, _| !dirs.dependencies.contains(c));
        dirs
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b'+' | b'~')
}

/// `tokio-1.54.1` -> `tokio`; `serde_json-1.0.140` -> `serde_json`;
/// `foo-0.1.0-alpha.2` -> `foo`. `None` without a `-<major>.<minor>` suffix.
fn split_version(dir: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(dash) = dir[from..].find('-') {
        let at = from + dash;
        let rest = &dir[at + 1..];
        let mut parts = rest.splitn(3, '.');
        let major = parts.next().unwrap_or_default();
        let minor = parts.next().unwrap_or_default();
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if numeric(major) && minor.bytes().take_while(|b| b.is_ascii_digit()).count() > 0 {
            return Some(&dir[..at]);
        }
        from = at + 1;
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        match haystack[i..].iter().position(|b| *b == first) {
            Some(p) => i += p,
            None => return None,
        }
        if haystack[i..].starts_with(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rodata as rustc leaves it: panic-location file names packed back to
    /// back, mixed with other strings.
    fn rodata() -> Vec<u8> {
        let mut d = Vec::new();
        for s in [
            "called `Option::unwrap()` on a `None` value",
            "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src/runtime/task/mod.rs",
            "index out of bounds/home/ci/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde_json-1.0.140/src/de.rs",
            "\0/rust/deps/hashbrown-0.15.5/src/raw/mod.rs\0",
            "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/num/mod.rs",
            "/root/.cargo/git/checkouts/twin-9f8e7d6c5b4a3f2e/1a2b3c4/twin-codec/src/lib.rs",
            "\x01newsletter-core/src/delivery.rs\x02",
            "src/main.rs",
            "/opt/src/thing/vendor/rand_xoshiro/src/lib.rs",
            // Packed back to back, as rustc leaves them.
            "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/blazesym-0.2.7/src/elf/parser.rs",
            "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/gimli-0.32.3/src/read/line.rs",
            "/root/.cargo/git/checkouts/rootcrate-0123456789abcdef/abc1234/src/lib.rs",
        ] {
            d.extend_from_slice(s.as_bytes());
        }
        d
    }

    fn facts() -> CrateFacts {
        CrateFacts::from_binary(
            "newsletter",
            &rodata(),
            [
                "newsletter::main",
                "newsletter_core::delivery::render",
                "std::rt::lang_start::{{closure}}",
                "tokio::runtime::task::raw::poll",
                "twin_codec::main",
                "opt::unrelated",
            ],
        )
    }

    #[test]
    fn dependencies_come_from_embedded_registry_git_and_toolchain_paths() {
        let f = facts();
        for dep in ["tokio", "serde_json", "hashbrown", "twin_codec", "rand_xoshiro", "std", "core", "blazesym", "gimli", "rootcrate"] {
            assert!(f.dependencies.contains(dep), "{dep} in {:?}", f.dependencies);
        }
        assert!(!f.dependencies.contains("newsletter_core"));
    }

    #[test]
    fn the_owner_is_the_executable_crate_and_the_workspace() {
        let f = facts();
        assert_eq!(f.owner, ["newsletter", "newsletter_core"].into_iter().map(String::from).collect());
    }

    #[test]
    fn functions_without_files_get_the_origin_of_their_crate() {
        let f = facts();
        assert_eq!(f.origin_of_function("newsletter::delivery::send_all"), Origin::Owner);
        assert_eq!(f.origin_of_function("newsletter_core::delivery::render::{{closure}}"), Origin::Owner);
        assert_eq!(f.origin_of_function("<newsletter::Digest as core::fmt::Display>::fmt"), Origin::Owner);
        assert_eq!(f.origin_of_function("<&mut newsletter::Digest as core::fmt::Display>::fmt"), Origin::Owner);
        assert_eq!(f.origin_of_function("main"), Origin::Native);
        assert_eq!(f.origin_of_function("__libc_start_call_main"), Origin::Native);
        assert_eq!(f.origin_of_function("<[T] as core::fmt::Debug>::fmt"), Origin::Dependency);
        assert_eq!(f.origin_of_function("core::ptr::drop_in_place<newsletter::Digest>"), Origin::Dependency);
    }

    /// The well-behaved twin: a dependency doing the same work as the
    /// owner's code, under a name that looks like it (a `main`, a crate
    /// with the owner's prefix), is never called the owner's.
    #[test]
    fn a_dependency_function_is_never_the_owners() {
        let f = facts();
        assert_eq!(f.origin_of_function("twin_codec::encode::hot_spin"), Origin::Dependency, "a git dependency with a `main`");
        assert_eq!(f.origin_of_function("serde_json::de::from_slice"), Origin::Dependency);
        assert_eq!(f.origin_of_function("<tokio::runtime::task::Task as core::ops::Drop>::drop"), Origin::Dependency);
        assert_eq!(f.origin_of_function("hashbrown::raw::RawTable<T>::reserve_rehash"), Origin::Dependency);
        assert_eq!(f.origin_of_function("newsletter_twin::hot_spin"), Origin::Dependency, "a crate the binary says nothing about");
        assert_eq!(f.origin_of_function("ryu::pretty::format64"), Origin::Dependency, "no panic location, well known");
    }

    #[test]
    fn a_binary_named_like_a_dependency_does_not_own_it() {
        let f = CrateFacts::from_binary("tokio", &rodata(), ["tokio::main"]);
        assert!(!f.owner.contains("tokio"));
    }

    #[test]
    fn crate_of_reads_paths_and_trait_impls() {
        assert_eq!(crate_of("svc::a::b"), Some("svc"));
        assert_eq!(crate_of("<svc::T as core::fmt::Debug>::fmt"), Some("svc"));
        assert_eq!(crate_of("<alloc::vec::Vec<svc::T> as core::ops::Drop>::drop"), Some("alloc"));
        assert_eq!(crate_of("<(A, B) as svc::Tr>::f"), Some("svc"));
        assert_eq!(crate_of("memcpy"), None);
        assert_eq!(split_version("tokio-1.54.1"), Some("tokio"));
        assert_eq!(split_version("foo-bar-0.1.0-alpha.2"), Some("foo-bar"));
        assert_eq!(split_version("cpu-burner"), None);
    }

    /// A service split into workspace crates (`svc`, `svc_auth`, `svc_sql`
    /// under `crates/`): every crate whose sources sit in the workspace is
    /// the owner's, each with the path that says so; a registry crate with
    /// the service's prefix is not.
    #[test]
    fn the_owner_is_the_whole_workspace_with_the_evidence_for_each_crate() {
        let mut d = Vec::new();
        for s in [
            "src/main.rs",
            "crates/svc-auth/src/hash.rs",
            "crates/svc-sql/src/lib.rs/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/svc-metrics-0.3.1/src/lib.rs",
            "\0/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/fmt/mod.rs",
        ] {
            d.extend_from_slice(s.as_bytes());
        }
        let f = CrateFacts::from_binary("svc", &d, ["svc::main", "svc_auth::hash::stretch", "svc_sql::run", "svc_metrics::record", "svc_twin::spin"]);
        assert_eq!(f.owner, ["svc", "svc_auth", "svc_sql"].into_iter().map(String::from).collect());
        assert!(f.evidence["svc_auth"].contains("`crates/svc-auth/src/hash.rs`"), "{:?}", f.evidence);
        assert!(f.evidence["svc_sql"].contains("`crates/svc-sql/src/lib.rs`"), "{:?}", f.evidence);
        assert!(f.evidence["svc"].contains("`svc::main`"), "{:?}", f.evidence);
        assert_eq!(f.origin_of_function("svc_auth::hash::stretch"), Origin::Owner);
        assert_eq!(f.origin_of_function("svc_metrics::record"), Origin::Dependency, "a registry crate with the service's prefix");
        assert_eq!(f.origin_of_function("svc_twin::spin"), Origin::Dependency, "named nowhere in the binary");
        assert!(OWNER_RULE.contains("workspace"));
    }

}
