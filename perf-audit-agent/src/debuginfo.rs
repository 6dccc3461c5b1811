//! What an object file says about itself, for symbolization: build-id,
//! symbol table, line tables, and where its separate debug file is.
//!
//! Binaries ship in four ways: with debug info (line tables: file:line),
//! with symbols only (cargo's default release profile: function names),
//! stripped (`strip = true`: no names at all, only `.eh_frame` and
//! `.dynsym`), or stripped with a separate debug file. That file is looked
//! up the way gdb does (see [`find_debug_file`]). The owner-code decision
//! itself ([`CrateFacts`]) is pure and lives in the analysis crate; this
//! module only reads the bytes.

use std::path::{Path, PathBuf};

use crate::safe_file::map_regular;

use object::{Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _};

use crate::profile::crates::CrateFacts;

/// Directories searched for debug files after `--debug-dir`s, as gdb's
/// default `debug-file-directory`.
pub const SYSTEM_DEBUG_DIRS: &[&str] = &["/usr/lib/debug", "/lib/debug"];

/// One loadable segment: file range and virtual address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    offset: u64,
    size: u64,
    vaddr: u64,
}

/// The facts of one ELF file that symbolization needs.
#[derive(Debug, Clone, Default)]
pub struct ObjectFacts {
    pub build_id: Option<Vec<u8>>,
    /// It has a symbol table with functions (not stripped).
    pub symtab: bool,
    /// It has DWARF line tables itself.
    pub line_tables: bool,
    /// `.gnu_debuglink`: the debug file's name.
    pub debuglink: Option<String>,
    /// Why blazesym must not read this file's DWARF itself
    /// ([`crate::safe_file::dwarf_hazard`]).
    pub dwarf_hazard: Option<String>,
    segments: Vec<Segment>,
    /// Function start addresses from `.eh_frame_hdr` (sorted): what a
    /// stripped binary still says about where its functions begin.
    function_starts: Vec<u64>,
}

impl ObjectFacts {
    /// The facts of `path` (only a regular file: see [`crate::safe_file`]).
    pub fn read(path: &Path) -> Option<ObjectFacts> {
        let map = map_regular(path)?;
        Self::parse(&map[..]).map(|mut facts| {
            facts.dwarf_hazard = crate::safe_file::dwarf_hazard(path);
            facts
        })
    }

    /// The facts of an ELF image in memory (no debug-file lookups: the
    /// `.dwp` check of [`crate::safe_file::dwarf_hazard`] needs a path).
    pub fn parse(data: &[u8]) -> Option<ObjectFacts> {
        let elf = object::File::parse(data).ok()?;
        let symtab = elf.symbol_table().is_some_and(|t| {
            use object::ObjectSymbolTable as _;
            t.symbols().any(|s| s.kind() == object::SymbolKind::Text && !s.is_undefined())
        });
        let line_tables = elf
            .section_by_name(".debug_line")
            .is_some_and(|s| s.kind() != object::SectionKind::UninitializedData && s.size() > 0 && s.file_range().is_some());
        let debuglink = elf.gnu_debuglink().ok().flatten().map(|(name, _crc)| String::from_utf8_lossy(name).into_owned());
        let segments = elf
            .segments()
            .filter_map(|s| {
                let (offset, size) = s.file_range();
                (size > 0).then_some(Segment { offset, size, vaddr: s.address() })
            })
            .collect();
        let function_starts = elf
            .section_by_name(".eh_frame_hdr")
            .and_then(|s| Some((s.address(), s.data().ok()?)))
            .map(|(addr, data)| eh_frame_hdr_starts(addr, data))
            .unwrap_or_default();
        Some(ObjectFacts {
            build_id: elf.build_id().ok().flatten().map(<[u8]>::to_vec),
            symtab,
            line_tables,
            debuglink,
            dwarf_hazard: crate::safe_file::oversized_compressed_section(&elf, data.len() as u64)
                .map(|(name, size)| format!("its compressed section `{name}` claims {size} bytes uncompressed")),
            segments,
            function_starts,
        })
    }

    /// The facts of a binary that is gone, but whose build-id is known.
    pub fn with_build_id(build_id: Option<Vec<u8>>) -> ObjectFacts {
        ObjectFacts { build_id, ..Default::default() }
    }

    /// The loadable segments, as report.json keeps them.
    pub fn load_segments(&self) -> Vec<crate::report::LoadSegment> {
        self.segments.iter().map(|s| crate::report::LoadSegment { offset: s.offset, vaddr: s.vaddr, size: s.size }).collect()
    }

    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id.as_ref().map(|b| hex(b))
    }

    /// The virtual address of a file offset (through the loadable segment
    /// that holds it).
    pub fn vaddr_of(&self, offset: u64) -> Option<u64> {
        self.segments.iter().find(|s| offset >= s.offset && offset < s.offset + s.size).map(|s| s.vaddr + (offset - s.offset))
    }

    fn offset_of(&self, vaddr: u64) -> Option<u64> {
        self.segments.iter().find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.size).map(|s| s.offset + (vaddr - s.vaddr))
    }

    /// File offset of the start of the function holding `offset` (from the
    /// unwind tables), or `offset` itself when no table covers it.
    pub fn function_start(&self, offset: u64) -> u64 {
        let Some(vaddr) = self.vaddr_of(offset) else { return offset };
        let i = self.function_starts.partition_point(|s| *s <= vaddr);
        match i.checked_sub(1).map(|i| self.function_starts[i]) {
            Some(start) => self.offset_of(start).unwrap_or(offset),
            None => offset,
        }
    }
}

/// The file offset of the function named `function` (demangled, without
/// hash) in `path`'s symbol table: what the frames of a stripped copy of
/// the same build are named by (`svc+0x1b5b0`).
pub fn function_file_offset(path: &Path, function: &str) -> Option<u64> {
    let map = map_regular(path)?;
    let elf = object::File::parse(&map[..]).ok()?;
    let sym = elf.symbols().find(|s| {
        s.kind() == object::SymbolKind::Text && s.name().is_ok_and(|n| format!("{:#}", rustc_demangle::demangle(n)) == function)
    })?;
    ObjectFacts::read(path)?.offset_of(sym.address())
}

/// The first path segment of a legacy-mangled name (`_ZN10cpu_burner8hot_spin17h...E`
/// -> `cpu_burner`), unless it is an impl (`_$LT$...`) that needs demangling.
fn legacy_crate(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("_ZN")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let len: usize = rest[..digits].parse().ok()?;
    let ident = rest.get(digits..digits + len)?;
    (!ident.contains('$')).then_some(ident)
}

/// The sorted function start addresses of `.eh_frame_hdr`'s binary search
/// table (the layout every linker writes: `eh_frame_ptr` pc-relative sdata4,
/// count udata4, table datarel sdata4 pairs).
pub(crate) fn eh_frame_hdr_starts(section_addr: u64, data: &[u8]) -> Vec<u64> {
    const PCREL_SDATA4: u8 = 0x1b;
    const UDATA4: u8 = 0x03;
    const DATAREL_SDATA4: u8 = 0x3b;
    if data.len() < 12 || data[0] != 1 || data[1] != PCREL_SDATA4 || data[2] != UDATA4 || data[3] != DATAREL_SDATA4 {
        return Vec::new();
    }
    let count = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes")) as usize;
    let table = &data[12..];
    let mut starts: Vec<u64> = table
        .chunks_exact(8)
        .take(count)
        .map(|pair| section_addr.wrapping_add_signed(i32::from_le_bytes(pair[..4].try_into().expect("4 bytes")) as i64))
        .collect();
    starts.sort_unstable();
    starts
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The separate debug file of `object`, searched as gdb does: by build-id
/// (`DIR/.build-id/ab/cdef....debug` in each debug directory), then by
/// `.gnu_debuglink` name next to the binary, in its `.debug/`, and under
/// each debug directory (`DIR/<binary's dir>/NAME`, and `DIR/NAME`). A
/// candidate with another build-id than the binary's is not its debug file.
/// `debug_dirs` are the user's `--debug-dir`s then [`SYSTEM_DEBUG_DIRS`].
pub fn find_debug_file(object: &Path, facts: &ObjectFacts, debug_dirs: &[PathBuf]) -> Option<(PathBuf, ObjectFacts)> {
    let candidates = debug_file_candidates(object, facts, debug_dirs);
    let usable = |path: &Path| -> Option<ObjectFacts> {
        // Only regular files (a FIFO named by the debug link is refused
        // without blocking: `ObjectFacts::read` opens with O_NONBLOCK).
        if same_file(path, object) {
            return None;
        }
        let debug = ObjectFacts::read(path)?;
        (build_ids_match(facts, &debug) == BuildIdMatch::Same || facts.build_id.is_none())
            .then_some(())
            .filter(|_| debug.line_tables || debug.symtab)
            .map(|_| debug)
    };
    for path in candidates {
        if let Some(debug) = usable(&path) {
            return Some((path, debug));
        }
    }
    let id = facts.build_id.as_deref()?;
    let path = debuginfod::fetch(&hex(id))?;
    usable(&path).map(|debug| (path, debug))
}

/// Where the debug file of `object` may be, in the order
/// [`find_debug_file`] tries them (debuginfod aside).
pub fn debug_file_candidates(object: &Path, facts: &ObjectFacts, debug_dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(id) = facts.build_id.as_deref().filter(|id| id.len() >= 2) {
        for dir in debug_dirs {
            candidates.push(dir.join(".build-id").join(hex(&id[..1])).join(format!("{}.debug", hex(&id[1..]))));
        }
    }
    let bin_dir = object.parent().unwrap_or(Path::new("/"));
    let canonical_dir = bin_dir.canonicalize().unwrap_or_else(|_| bin_dir.to_path_buf());
    // The debug link is the target's text: a plain file name only (no
    // `../`, no absolute path, no NUL), as gdb reads it.
    let mut names: Vec<String> = facts
        .debuglink
        .iter()
        .filter(|n| !n.is_empty() && !n.contains('/') && !n.contains('\0') && *n != "." && *n != "..")
        .cloned()
        .collect();
    if let Some(name) = object.file_name() {
        // Without a debug link, `--debug-dir` may still hold `NAME.debug`.
        names.push(format!("{}.debug", name.to_string_lossy()));
    }
    for name in &names {
        candidates.push(bin_dir.join(name));
        candidates.push(bin_dir.join(".debug").join(name));
        for dir in debug_dirs {
            candidates.push(dir.join(canonical_dir.strip_prefix("/").unwrap_or(&canonical_dir)).join(name));
            candidates.push(dir.join(name));
        }
    }
    candidates
}

/// A debuginfod client for `DEBUGINFOD_URLS` (plain `http://` servers: the
/// agent has no TLS stack), with the standard client's cache layout
/// (`$DEBUGINFOD_CACHE_PATH`, else `$XDG_CACHE_HOME/debuginfod_client`, else
/// `~/.cache/debuginfod_client`; `<build-id>/debuginfo`).
pub mod debuginfod {
    use std::{
        io::{Read as _, Write as _},
        net::TcpStream,
        path::PathBuf,
        time::Duration,
    };

    fn cache_dir() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("DEBUGINFOD_CACHE_PATH") {
            return Some(PathBuf::from(p));
        }
        if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(p).join("debuginfod_client"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/debuginfod_client"))
    }

    /// The debug file of build-id `id` (hex): from the cache, else
    /// downloaded from the first server of `DEBUGINFOD_URLS` that has it.
    pub fn fetch(id: &str) -> Option<PathBuf> {
        let urls = std::env::var("DEBUGINFOD_URLS").ok()?;
        let cached = cache_dir()?.join(id).join("debuginfo");
        if cached.is_file() {
            return Some(cached);
        }
        for url in urls.split_whitespace() {
            let Some(rest) = url.strip_prefix("http://") else {
                eprintln!("perf-audit: debuginfod server {url} skipped: only http:// servers are supported");
                continue;
            };
            match get(rest.trim_end_matches('/'), &format!("/buildid/{id}/debuginfo")) {
                Ok(body) => {
                    std::fs::create_dir_all(cached.parent()?).ok()?;
                    let tmp = cached.with_extension("part");
                    std::fs::write(&tmp, body).ok()?;
                    std::fs::rename(&tmp, &cached).ok()?;
                    return Some(cached);
                }
                Err(e) => eprintln!("perf-audit: debuginfod {url}: build-id {id}: {e}"),
            }
        }
        None
    }

    /// `GET path` from `host[:port][/prefix]` over HTTP/1.1; the body of a
    /// 200 answer (plain or chunked).
    fn get(authority_and_prefix: &str, path: &str) -> Result<Vec<u8>, String> {
        let (authority, prefix) = match authority_and_prefix.split_once('/') {
            Some((a, p)) => (a, format!("/{p}")),
            None => (authority_and_prefix, String::new()),
        };
        let addr = if authority.contains(':') { authority.to_string() } else { format!("{authority}:80") };
        let mut stream = TcpStream::connect(&addr).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
        write!(stream, "GET {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: perf-audit\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(|e| e.to_string())?;
        parse_response(&response)
    }

    pub(super) fn parse_response(response: &[u8]) -> Result<Vec<u8>, String> {
        let end = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP header")?;
        let head = String::from_utf8_lossy(&response[..end]);
        let body = &response[end + 4..];
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(format!("the server answered `{status}`"));
        }
        let chunked = head.lines().any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("transfer-encoding:") && l.contains("chunked")
        });
        if !chunked {
            return Ok(body.to_vec());
        }
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
            let size_text = String::from_utf8_lossy(&rest[..line_end]);
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16).map_err(|e| e.to_string())?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                return Ok(out);
            }
            out.extend_from_slice(rest.get(..size).ok_or("short chunk")?);
            rest = rest.get(size + 2..).ok_or("short chunk")?;
        }
    }
}

/// How a debug file's build-id compares with its object's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildIdMatch {
    Same,
    /// Both have one, and they differ: another build's debug file.
    Different,
    /// The object has one and the debug file none (or the other way round,
    /// or neither has one): nothing says they belong together.
    Unknown,
}

pub fn build_ids_match(object: &ObjectFacts, debug: &ObjectFacts) -> BuildIdMatch {
    match (&object.build_id, &debug.build_id) {
        (Some(a), Some(b)) if a == b => BuildIdMatch::Same,
        (Some(_), Some(_)) => BuildIdMatch::Different,
        _ => BuildIdMatch::Unknown,
    }
}

/// Whether two paths name the same file (same path, or same device and
/// inode: the maps may show it through /proc/PID/root).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The crates an executable names (see [`CrateFacts`]): its read-only data
/// (panic locations' file names) and its function symbols, from `object`
/// or, when it is stripped, from its debug file.
pub fn crate_facts(object: &Path, debug_file: Option<&Path>) -> CrateFacts {
    let exe_name = crate::target::mapped_file_base_name(object);
    let read = |path: &Path| -> Option<memmap2::Mmap> { map_regular(path) };
    let Some(map) = read(object) else { return CrateFacts::from_binary(&exe_name, &[], []) };
    let Ok(elf) = object::File::parse(&map[..]) else { return CrateFacts::from_binary(&exe_name, &[], []) };
    let mut data: Vec<u8> = Vec::new();
    for section in elf.sections() {
        let name = section.name().unwrap_or_default();
        if name.starts_with(".rodata") || name.starts_with(".data.rel.ro") {
            data.extend_from_slice(section.data().unwrap_or_default());
            data.push(0);
        }
    }
    let debug_map = debug_file.and_then(read);
    let debug_elf = debug_map.as_ref().and_then(|m| object::File::parse(&m[..]).ok());
    let symbols_from = if elf.symbol_table().is_some() { Some(&elf) } else { debug_elf.as_ref() };
    let mut functions: Vec<String> = Vec::new();
    if let Some(file) = symbols_from {
        for sym in file.symbols() {
            let Ok(name) = sym.name() else { continue };
            if sym.kind() != object::SymbolKind::Text {
                continue;
            }
            // Only a crate root `main` and each function's crate matter:
            // most legacy names give their crate without demangling.
            match legacy_crate(name) {
                Some(krate) if !name.contains("4main") => functions.push(format!("{krate}::")),
                _ if name.starts_with("_ZN") || name.starts_with("_R") => {
                    functions.push(format!("{:#}", rustc_demangle::demangle(name)))
                }
                _ => {}
            }
        }
    }
    CrateFacts::from_binary(&exe_name, &data, functions.iter().map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Origin;

    /// A real, large binary (this test executable: the agent and its ~300
    /// dependencies): the registry crates its panic locations name are
    /// dependencies, and none of them is taken for the owner's. Not every
    /// dependency leaves a path (blazesym leaves none in this binary): a
    /// crate the binary says nothing about is not the owner's either.
    #[test]
    fn our_own_test_binary_names_its_dependencies() {
        let exe = std::env::current_exe().unwrap();
        let start = std::time::Instant::now();
        let facts = crate_facts(&exe, None);
        eprintln!("crate_facts of {} ({} MB): {:?}, owner {:?}", exe.display(), exe.metadata().unwrap().len() >> 20, start.elapsed(), facts.owner);
        for dep in ["tokio", "framehop", "object", "serde_json", "hyper", "clap_builder"] {
            assert!(facts.dependencies.contains(dep), "{dep} in {:?}", facts.dependencies);
        }
        assert!(facts.owner.contains("perf_audit_agent"), "{:?}", facts.owner);
        assert!(facts.owner.iter().all(|c| !facts.dependencies.contains(c)));
        assert_eq!(facts.origin_of_function("perf_audit_agent::debuginfo::crate_facts"), Origin::Owner);
        assert_eq!(facts.origin_of_function("blazesym::symbolize::Symbolizer::symbolize"), Origin::Dependency);
    }

    #[test]
    fn legacy_names_give_their_crate_without_demangling() {
        assert_eq!(legacy_crate("_ZN10cpu_burner8hot_spin17hc2dfc1ab07034994E"), Some("cpu_burner"));
        assert_eq!(legacy_crate("_ZN67_$LT$cpu_burner..Foo$u20$as$u20$core..fmt..Debug$GT$3fmt17h0123456789abcdefE"), None);
        assert_eq!(legacy_crate("_RNvCs1234_10cpu_burner8hot_spin"), None);
        assert_eq!(legacy_crate("memcpy"), None);
    }

    #[test]
    fn debuginfod_answers_are_read_plain_or_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nELF";
        assert_eq!(debuginfod::parse_response(plain).unwrap(), b"ELF");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nEL\r\n1\r\nF\r\n0\r\n\r\n";
        assert_eq!(debuginfod::parse_response(chunked).unwrap(), b"ELF");
        assert!(debuginfod::parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap_err().contains("404"));
    }

    #[test]
    fn eh_frame_hdr_table_gives_sorted_function_starts() {
        let mut hdr = vec![1, 0x1b, 0x03, 0x3b];
        hdr.extend_from_slice(&100i32.to_le_bytes());
        hdr.extend_from_slice(&2u32.to_le_bytes());
        for (start, fde) in [(-0x200i32, 0x40i32), (-0x400, 0x80)] {
            hdr.extend_from_slice(&start.to_le_bytes());
            hdr.extend_from_slice(&fde.to_le_bytes());
        }
        assert_eq!(eh_frame_hdr_starts(0x1000, &hdr), vec![0xc00, 0xe00]);
        assert!(eh_frame_hdr_starts(0x1000, &hdr[..6]).is_empty());
    }

    #[test]
    fn our_own_test_binary_has_a_build_id_and_its_functions_start_where_they_are() {
        let exe = std::env::current_exe().unwrap();
        let facts = ObjectFacts::read(&exe).expect("an ELF file");
        assert!(facts.symtab);
        let starts = &facts.function_starts;
        assert!(!starts.is_empty(), "test binaries keep .eh_frame_hdr");
        let start = facts.offset_of(starts[starts.len() / 2]).unwrap();
        assert_eq!(facts.function_start(start), start);
        assert_eq!(facts.function_start(start + 1), start);
    }
}
