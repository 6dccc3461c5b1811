//! Which allocator the target really uses, and where on each allocator
//! function a uprobe costs least: read from the target's binary and mapped
//! libraries (ELF symbols, Rust's allocator shims and where they forward),
//! and from each function's first instructions (x86-64 prologue analysis:
//! a probe on an instruction the kernel emulates, such as `push`, costs a
//! trap; one it must single-step costs two). No kernel code here: the
//! memory profile's kernel side (`kernel::memory`) attaches what this plans.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use perf_audit_common::memory::{mem_cookie, mem_names};

use crate::error::{Error, ErrorKind, Result};

/// How the probe reads its arguments (one eBPF program per shape; the
/// Rust shapes' argument positions travel in the attach cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallShape {
    /// `malloc(size)`.
    SizeArg0,
    /// `aligned_alloc(align, size)`.
    SizeArg1,
    /// `calloc(n, size)`.
    Calloc,
    /// `realloc(ptr, size)`.
    Realloc,
    /// `posix_memalign(&ptr, align, size)`.
    PosixMemalign,
    /// `free(ptr)`.
    Free,
    /// `__rust_alloc(size, align)`, or the `GlobalAlloc::alloc` it forwards
    /// to: the size in argument `size_arg`.
    RustAlloc { size_arg: u8 },
    /// `__rust_realloc(ptr, old_size, align, new_size)` or its target.
    RustRealloc { ptr_arg: u8, size_arg: u8 },
    /// `__rust_dealloc(ptr, size, align)` or its target.
    RustDealloc { ptr_arg: u8 },
}

impl CallShape {
    pub(crate) fn program(self) -> &'static str {
        match self {
            CallShape::SizeArg0 => mem_names::ALLOC_SIZE_ARG0,
            CallShape::SizeArg1 => mem_names::ALLOC_SIZE_ARG1,
            CallShape::Calloc => mem_names::CALLOC,
            CallShape::Realloc => mem_names::REALLOC,
            CallShape::PosixMemalign => mem_names::POSIX_MEMALIGN,
            CallShape::Free => mem_names::FREE,
            CallShape::RustAlloc { .. } => mem_names::ALLOC_SIZE_AT,
            CallShape::RustRealloc { .. } => mem_names::REALLOC_AT,
            CallShape::RustDealloc { .. } => mem_names::FREE_AT,
        }
    }

    /// The attach cookie of the `*_AT` programs.
    pub(crate) fn cookie(self) -> Option<u64> {
        match self {
            CallShape::RustAlloc { size_arg } => Some(mem_cookie::encode(0, size_arg)),
            CallShape::RustRealloc { ptr_arg, size_arg } => Some(mem_cookie::encode(ptr_arg, size_arg)),
            CallShape::RustDealloc { ptr_arg } => Some(mem_cookie::encode(ptr_arg, 0)),
            _ => None,
        }
    }

    /// Frees only: no pointer is returned.
    pub fn is_free(self) -> bool {
        matches!(self, CallShape::Free | CallShape::RustDealloc { .. })
    }

    /// Allocating calls need the returned pointer (a uretprobe).
    pub(crate) fn returns_pointer(self) -> bool {
        !self.is_free()
    }

    /// The argument register that holds the freed pointer.
    fn freed_pointer_arg(self) -> u8 {
        match self {
            CallShape::RustDealloc { ptr_arg } => ptr_arg,
            _ => 0,
        }
    }
}

/// Register numbers (as in ModRM, REX-extended) of the System V integer
/// argument registers, in argument order: rdi, rsi, rdx, rcx, r8, r9.
const ARG_REGS: [u8; 6] = [7, 6, 2, 1, 8, 9];

/// The allocator families recognised, and their entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocatorFamily {
    Glibc,
    /// jemalloc with tikv-jemallocator's `_rjem_` prefix.
    Jemalloc,
    Mimalloc,
    /// A `malloc` defined by the executable itself (static libc, unprefixed
    /// jemalloc): probed in the executable.
    StaticMalloc,
    /// A `#[global_allocator]` that reaches none of the above (written in
    /// Rust, over `mmap` or an arena): Rust's allocator shims, or the
    /// `GlobalAlloc` methods they forward to, are probed.
    RustGlobalAllocator,
}

impl AllocatorFamily {
    /// Entry points by symbol name (the Rust family's are found by
    /// decoding its shims, see [`rust_allocator_probes`]). Hottest first
    /// for what Rust code calls: links are closed in this order (after the
    /// frees').
    fn entry_points(self) -> &'static [(&'static str, CallShape)] {
        use CallShape::*;
        match self {
            AllocatorFamily::Glibc | AllocatorFamily::StaticMalloc => &[
                ("malloc", SizeArg0),
                ("realloc", Realloc),
                ("calloc", Calloc),
                ("free", Free),
                ("posix_memalign", PosixMemalign),
                ("aligned_alloc", SizeArg1),
                ("memalign", SizeArg1),
            ],
            // tikv-jemallocator calls malloc(size) or mallocx(size, flags)
            // for alignments above 16, calloc(1, size) or mallocx with
            // MALLOCX_ZERO, realloc(ptr, size) or rallocx(ptr, size, flags),
            // and sdallocx(ptr, size, flags) for every free; the rest is
            // there for C code linked to the prefixed API.
            AllocatorFamily::Jemalloc => &[
                ("_rjem_malloc", SizeArg0),
                ("_rjem_sdallocx", Free),
                ("_rjem_realloc", Realloc),
                ("_rjem_calloc", Calloc),
                ("_rjem_mallocx", SizeArg0),
                ("_rjem_rallocx", Realloc),
                ("_rjem_free", Free),
                ("_rjem_posix_memalign", PosixMemalign),
                ("_rjem_aligned_alloc", SizeArg1),
            ],
            // The mimalloc crate calls mi_malloc_aligned(size, align),
            // mi_zalloc_aligned(size, align), mi_realloc_aligned(p, size,
            // align) and mi_free(p).
            AllocatorFamily::Mimalloc => &[
                ("mi_malloc_aligned", SizeArg0),
                ("mi_free", Free),
                ("mi_realloc_aligned", Realloc),
                ("mi_zalloc_aligned", SizeArg0),
                ("mi_malloc", SizeArg0),
                ("mi_zalloc", SizeArg0),
                ("mi_calloc", Calloc),
                ("mi_realloc", Realloc),
            ],
            AllocatorFamily::RustGlobalAllocator => &[],
        }
    }

    /// Symbols whose presence says the family is linked in (the linker
    /// drops what Rust does not call, so any one of them).
    fn markers(self) -> &'static [&'static str] {
        match self {
            AllocatorFamily::Jemalloc => &["_rjem_malloc", "_rjem_mallocx", "_rjem_sdallocx"],
            AllocatorFamily::Mimalloc => &["mi_malloc", "mi_malloc_aligned", "mi_free"],
            AllocatorFamily::Glibc | AllocatorFamily::StaticMalloc => &["malloc"],
            AllocatorFamily::RustGlobalAllocator => &[],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AllocatorFamily::Glibc => "glibc malloc",
            AllocatorFamily::Jemalloc => "jemalloc (_rjem_*)",
            AllocatorFamily::Mimalloc => "mimalloc (mi_*)",
            AllocatorFamily::StaticMalloc => "malloc linked into the executable",
            AllocatorFamily::RustGlobalAllocator => "Rust #[global_allocator] (__rust_alloc shims)",
        }
    }
}

/// Where one probe goes and what it costs per hit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProbePoint {
    pub symbol: String,
    pub shape: CallShape,
    /// File offset of the function's entry in `object`.
    #[serde(skip)]
    pub entry_offset: u64,
    /// Bytes past the entry where the entry probe sits.
    pub probe_offset: u64,
    /// The probed instruction is emulated by the kernel (`push`, 5-byte
    /// nop...) rather than single-stepped out of line (several times
    /// slower per hit).
    pub emulated: bool,
    /// The instruction at the probe point, for the report.
    pub instruction: String,
}

/// The allocator found in the target and the probes planned on it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AllocatorPlan {
    pub family: AllocatorFamily,
    pub object: PathBuf,
    pub probes: Vec<ProbePoint>,
    /// Rust's allocator shims present in the executable (`__rust_alloc`...):
    /// they forward to the allocator above, which is what is probed (for
    /// the Rust family, they or their targets are the probes).
    pub rust_shims: Vec<String>,
}

/// Rust's allocator shims and the call shape of each (System V arguments).
const RUST_SHIMS: [(&str, CallShape); 4] = [
    ("__rust_alloc", CallShape::RustAlloc { size_arg: 0 }),
    ("__rust_dealloc", CallShape::RustDealloc { ptr_arg: 0 }),
    ("__rust_realloc", CallShape::RustRealloc { ptr_arg: 0, size_arg: 3 }),
    ("__rust_alloc_zeroed", CallShape::RustAlloc { size_arg: 0 }),
];

/// Reads the target's executable and mapped libraries to find its allocator.
///
/// jemalloc and mimalloc are recognised by their symbols wherever they are
/// linked. Otherwise the executable's `__rust_alloc` shim says whether the
/// `#[global_allocator]` ends in malloc (std's `System` forwards to
/// `__rdl_alloc`, which calls it) or is an allocator of its own, whose Rust
/// entry points are then probed.
pub fn discover_allocator(exe: &Path, mapped: &[PathBuf]) -> Result<AllocatorPlan> {
    let not_found = |why: String| Error::new(ErrorKind::AllocatorUnknown, why);
    let exe_syms = defined_functions(exe).unwrap_or_default();
    let image = ElfImage::read(exe).ok();
    // Shim addresses (not file offsets: the shims' code is decoded).
    let shims = image.as_ref().map(|i| rust_shim_symbols(&i.by_address)).unwrap_or_default();
    let rust_shims: Vec<String> = RUST_SHIMS.iter().filter(|(name, _)| shims.contains_key(*name)).map(|(n, _)| format!("__rustc::{n}")).collect();
    let mut candidates: Vec<(PathBuf, HashMap<String, u64>)> = vec![(exe.to_path_buf(), exe_syms)];
    for lib in mapped {
        if lib != exe
            && let Some(syms) = defined_functions(lib) {
                candidates.push((lib.clone(), syms));
            }
    }
    let pick = |family: AllocatorFamily, libc_only: bool| {
        candidates
            .iter()
            .find(|(path, syms)| family.markers().iter().any(|m| syms.contains_key(*m)) && (!libc_only || is_libc(path)))
            .map(|(path, syms)| (family, path.clone(), syms.clone()))
    };
    let found = pick(AllocatorFamily::Jemalloc, false).or_else(|| pick(AllocatorFamily::Mimalloc, false));
    if let (None, Some(image), Some(&rust_alloc)) = (&found, &image, shims.get("__rust_alloc"))
        && !image.reaches_a_known_allocator(rust_alloc) {
            let probes = rust_allocator_probes(image, &shims);
            if !probes.iter().any(|p| p.shape.is_free()) || !probes.iter().any(|p| !p.shape.is_free()) {
                return Err(not_found(format!("the Rust allocator shims of {} lack __rust_alloc or __rust_dealloc", exe.display())));
            }
            return Ok(AllocatorPlan { family: AllocatorFamily::RustGlobalAllocator, object: exe.to_path_buf(), probes, rust_shims });
        }
    let found = found
        .or_else(|| {
            let (path, syms) = &candidates[0];
            syms.contains_key("malloc").then(|| (AllocatorFamily::StaticMalloc, path.clone(), syms.clone()))
        })
        .or_else(|| pick(AllocatorFamily::Glibc, true));
    let Some((family, object, syms)) = found else {
        return Err(not_found(format!(
            "no known allocator (glibc, jemalloc, mimalloc, Rust allocator shims) in {} or its libraries",
            exe.display()
        )));
    };
    let data = crate::safe_file::map_regular(&object).ok_or_else(|| Error::internal(format!("{}: not a readable regular file", object.display())))?;
    let mut probes = Vec::new();
    for (symbol, shape) in family.entry_points() {
        let Some(&entry_offset) = syms.get(*symbol) else { continue };
        probes.push(plan_probe(symbol.to_string(), *shape, entry_offset, &data));
    }
    if !probes.iter().any(|p| p.shape.is_free()) || !probes.iter().any(|p| !p.shape.is_free()) {
        return Err(not_found(format!("{} in {} lacks an allocating or a freeing function", family.name(), object.display())));
    }
    Ok(AllocatorPlan { family, object, probes, rust_shims })
}

/// Where on a function the probe goes: allocating calls on the entry (a
/// uretprobe must be there, and an entry probe at the same address shares
/// its breakpoint), frees past a null check when there is one.
fn plan_probe(symbol: String, shape: CallShape, entry_offset: u64, data: &[u8]) -> ProbePoint {
    let code = data.get(entry_offset as usize..).unwrap_or_default();
    let code = &code[..code.len().min(32)];
    let (probe_offset, emulated, instruction) = if shape.returns_pointer() {
        let (emulated, instruction) = describe_entry(code);
        (0, emulated, instruction)
    } else {
        free_probe_offset(code, ARG_REGS[shape.freed_pointer_arg() as usize])
    };
    ProbePoint { symbol, shape, entry_offset, probe_offset, emulated, instruction }
}

/// The Rust family's probes. Callers in the crate that declares the
/// `#[global_allocator]` get the shims inlined (they call the
/// `GlobalAlloc` methods directly), so a shim that only forwards (moves
/// its arguments, loads `&ALLOCATOR`, jumps) is probed at its target, with
/// the argument positions its moves give; a shim with a body of its own
/// (a default `realloc` inlined into it) is probed itself.
fn rust_allocator_probes(image: &ElfImage, shims: &HashMap<&'static str, u64>) -> Vec<ProbePoint> {
    let mut probes: Vec<ProbePoint> = Vec::new();
    for (name, shape) in RUST_SHIMS {
        let Some(&address) = shims.get(name) else { continue };
        let planned = forwarded_probe(image, address, shape)
            .or_else(|| Some((format!("__rustc::{name}"), shape, image.file_offset(address)?)));
        let Some((symbol, shape, entry_offset)) = planned else { continue };
        if probes.iter().any(|p| p.entry_offset == entry_offset) {
            continue;
        }
        probes.push(plan_probe(symbol, shape, entry_offset, &image.data));
    }
    probes
}

/// The shim's forwarding target and the shape there, when the shim only
/// forwards to a function of the executable.
fn forwarded_probe(image: &ElfImage, shim: u64, shape: CallShape) -> Option<(String, CallShape, u64)> {
    let forward = decode_forwarder(image.code_at(shim)?, shim)?;
    let target = match (forward.target, forward.got_slot) {
        (Some(target), _) => target,
        (None, Some(slot)) => {
            let name = image.got.get(&slot)?;
            *image.by_address.iter().find(|(_, n)| *n == name)?.0
        }
        (None, None) => return None,
    };
    let name = image.by_address.get(&target)?;
    let moved = |arg: u8| forward.position_of(arg);
    let shape = match shape {
        CallShape::RustAlloc { size_arg } => CallShape::RustAlloc { size_arg: moved(size_arg)? },
        CallShape::RustDealloc { ptr_arg } => CallShape::RustDealloc { ptr_arg: moved(ptr_arg)? },
        CallShape::RustRealloc { ptr_arg, size_arg } => CallShape::RustRealloc { ptr_arg: moved(ptr_arg)?, size_arg: moved(size_arg)? },
        other => other,
    };
    Some((demangled(name), shape, image.file_offset(target)?))
}

/// A shim decoded as register moves ending in a jump.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Forwarder {
    /// Direct jump target (`jmp rel32`); None for an indirect jump.
    target: Option<u64>,
    /// Through the GOT slot at this address (`jmp *disp32(%rip)`).
    got_slot: Option<u64>,
    /// For each argument register of the target (rdi, rsi...), which of the
    /// shim's arguments it holds at the jump.
    holds: [Option<u8>; 6],
}

impl Forwarder {
    /// The target's argument position holding the shim's argument `arg`.
    fn position_of(&self, arg: u8) -> Option<u8> {
        self.holds.iter().position(|h| *h == Some(arg)).map(|p| p as u8)
    }
}

/// Decodes `code` (at address `at`) as a forwarding shim: `endbr64`,
/// 64-bit register-to-register `mov`s, `lea disp32(%rip), reg` (the
/// allocator static), then `jmp rel32` or `jmp *disp32(%rip)`. Anything
/// else is not a forwarder.
fn decode_forwarder(code: &[u8], at: u64) -> Option<Forwarder> {
    // regs[r]: which shim argument register r holds (ModRM numbering).
    let mut regs: [Option<u8>; 16] = [None; 16];
    for (arg, reg) in ARG_REGS.iter().enumerate() {
        regs[*reg as usize] = Some(arg as u8);
    }
    let mut i = 0usize;
    for _ in 0..12 {
        let rest = code.get(i..)?;
        match rest {
            [0xf3, 0x0f, 0x1e, 0xfa, ..] => i += 4,
            [rex @ 0x48..=0x4f, op @ (0x89 | 0x8b), modrm, ..] if rex & 0x08 != 0 && modrm >> 6 == 3 => {
                let reg = ((modrm >> 3) & 7) | if rex & 0x04 != 0 { 8 } else { 0 };
                let rm = (modrm & 7) | if rex & 0x01 != 0 { 8 } else { 0 };
                let (src, dst) = if *op == 0x89 { (reg, rm) } else { (rm, reg) };
                regs[dst as usize] = regs[src as usize];
                i += 3;
            }
            [rex @ 0x48..=0x4f, 0x8d, modrm, _, _, _, _, ..] if rex & 0x08 != 0 && modrm >> 6 == 0 && modrm & 7 == 5 => {
                let reg = ((modrm >> 3) & 7) | if rex & 0x04 != 0 { 8 } else { 0 };
                regs[reg as usize] = None;
                i += 7;
            }
            [0xe9, a, b, c, d, ..] => {
                let rel = i32::from_le_bytes([*a, *b, *c, *d]) as i64;
                let target = (at as i64 + i as i64 + 5 + rel) as u64;
                return Some(Forwarder { target: Some(target), got_slot: None, holds: ARG_REGS.map(|r| regs[r as usize]) });
            }
            [0xff, 0x25, a, b, c, d, ..] => {
                let rel = i32::from_le_bytes([*a, *b, *c, *d]) as i64;
                let slot = (at as i64 + i as i64 + 6 + rel) as u64;
                return Some(Forwarder { target: None, got_slot: Some(slot), holds: ARG_REGS.map(|r| regs[r as usize]) });
            }
            _ => return None,
        }
    }
    None
}

/// Rust's allocator shims by short name (`__rust_alloc`...) with their
/// addresses, from function symbols by address: `__rustc::__rust_alloc`
/// (v0-mangled, current Rust) or the unmangled symbol of older toolchains.
fn rust_shim_symbols(by_address: &HashMap<u64, String>) -> HashMap<&'static str, u64> {
    let mut out = HashMap::new();
    for (value, raw) in by_address {
        if !raw.contains("__rust_") {
            continue;
        }
        let name = demangled(raw);
        let short = name.strip_prefix("__rustc::").unwrap_or(&name);
        if let Some((shim, _)) = RUST_SHIMS.iter().find(|(n, _)| *n == short) {
            out.insert(*shim, *value);
        }
    }
    out
}

fn demangled(raw: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(raw))
}

/// Names that mean "this ends in an allocator we probe by name": std's
/// `System` (`__rdl_alloc` calls malloc), malloc's family, jemalloc's and
/// mimalloc's entry points.
fn is_known_allocator_entry(demangled_name: &str) -> bool {
    let short = demangled_name.strip_prefix("__rustc::").unwrap_or(demangled_name);
    short.starts_with("__rdl_")
        || short.starts_with("_rjem_")
        || short.starts_with("mi_")
        || ["malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc", "memalign"].contains(&short)
}

/// Code, function symbols and GOT of an executable, for following what
/// Rust's allocator shims call.
struct ElfImage {
    data: memmap2::Mmap,
    /// Function symbols by address (raw names).
    by_address: HashMap<u64, String>,
    /// Function sizes by address.
    sizes: HashMap<u64, u64>,
    /// GOT slot address -> the function it is relocated to.
    got: HashMap<u64, String>,
    /// Executable sections: (address, size, file offset).
    text: Vec<(u64, u64, u64)>,
}

impl ElfImage {
    fn read(path: &Path) -> Result<ElfImage> {
        let bad = |e: String| Error::internal(format!("{}: {e}", path.display()));
        let file = crate::safe_file::open_regular(path).map_err(|e| bad(e.to_string()))?;
        // SAFETY: read-only mapping of a file the target has mapped.
        let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
        let (by_address, sizes, got, text) = {
            let elf = object::File::parse(&data[..]).map_err(|e| bad(e.to_string()))?;
            let mut by_address = HashMap::new();
            let mut sizes = HashMap::new();
            for sym in elf.symbols().chain(elf.dynamic_symbols()) {
                if sym.kind() == object::SymbolKind::Text && !sym.is_undefined() && sym.address() != 0
                    && let Ok(name) = sym.name() {
                        by_address.entry(sym.address()).or_insert_with(|| name.split('@').next().unwrap_or(name).to_string());
                        sizes.entry(sym.address()).or_insert(sym.size());
                    }
            }
            let mut got = HashMap::new();
            if let (Some(relocs), Some(dynsyms)) = (elf.dynamic_relocations(), elf.dynamic_symbol_table()) {
                use object::ObjectSymbolTable as _;
                for (slot, reloc) in relocs {
                    let name = match reloc.target() {
                        object::RelocationTarget::Symbol(index) => {
                            dynsyms.symbol_by_index(index).ok().and_then(|s| s.name().ok()).map(|n| n.split('@').next().unwrap_or(n).to_string())
                        }
                        // R_X86_64_RELATIVE: the addend is the address.
                        object::RelocationTarget::Absolute => by_address.get(&(reloc.addend() as u64)).cloned(),
                        _ => None,
                    };
                    if let Some(name) = name {
                        got.insert(slot, name);
                    }
                }
            }
            let text = elf
                .sections()
                .filter(|s| s.kind() == object::SectionKind::Text)
                .filter_map(|s| Some((s.address(), s.size(), s.file_range()?.0)))
                .collect();
            (by_address, sizes, got, text)
        };
        Ok(ElfImage { data, by_address, sizes, got, text })
    }

    fn file_offset(&self, address: u64) -> Option<u64> {
        self.text.iter().find(|(a, size, _)| address >= *a && address < a + size).map(|(a, _, off)| off + (address - a))
    }

    /// The code from `address` to the end of its section.
    fn code_at(&self, address: u64) -> Option<&[u8]> {
        let (a, size, off) = self.text.iter().find(|(a, size, _)| address >= *a && address < a + size)?;
        self.data.get((off + (address - a)) as usize..(off + size) as usize)
    }

    /// The function a call or jump to `target` reaches: a symbol there, or
    /// a PLT stub's GOT slot (`jmp *disp32(%rip)`, after `endbr64` and a
    /// `bnd` prefix).
    fn callee_name(&self, target: u64) -> Option<String> {
        if let Some(name) = self.by_address.get(&target) {
            return Some(demangled(name));
        }
        let code = self.code_at(target)?;
        let after_endbr = code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa][..]).unwrap_or(code);
        let stub = after_endbr.strip_prefix(&[0xf2][..]).unwrap_or(after_endbr);
        let [0xff, 0x25, a, b, c, d, ..] = stub else { return None };
        let end = target + (code.len() - stub.len()) as u64 + 6;
        let slot = (end as i64 + i32::from_le_bytes([*a, *b, *c, *d]) as i64) as u64;
        self.got.get(&slot).map(|n| demangled(n))
    }

    /// Whether the code from `shim` (followed through up to three levels
    /// of direct calls and jumps, each function scanned to its symbol's
    /// size) calls or jumps to std's `System`, malloc, jemalloc or
    /// mimalloc. The scan reads every `call`/`jmp rel32` and `call`/`jmp
    /// *disp32(%rip)` byte pattern; a target counts only when it is a
    /// function's first byte or a PLT stub, so stray bytes hardly ever
    /// match.
    fn reaches_a_known_allocator(&self, shim: u64) -> bool {
        let mut frontier = vec![shim];
        let mut seen = std::collections::HashSet::new();
        for _depth in 0..3 {
            let mut next = Vec::new();
            for function in frontier.drain(..) {
                if !seen.insert(function) {
                    continue;
                }
                let size = self.sizes.get(&function).copied().filter(|s| *s > 0).unwrap_or(64).min(4096) as usize;
                let Some(code) = self.code_at(function) else { continue };
                let code = &code[..code.len().min(size)];
                for i in 0..code.len() {
                    let (target, direct) = match &code[i..] {
                        [0xe8 | 0xe9, a, b, c, d, ..] => ((function as i64 + i as i64 + 5 + i32::from_le_bytes([*a, *b, *c, *d]) as i64) as u64, true),
                        [0xff, 0x15 | 0x25, a, b, c, d, ..] => {
                            let slot = (function as i64 + i as i64 + 6 + i32::from_le_bytes([*a, *b, *c, *d]) as i64) as u64;
                            match self.got.get(&slot) {
                                Some(name) if is_known_allocator_entry(&demangled(name)) => return true,
                                _ => continue,
                            }
                        }
                        _ => continue,
                    };
                    match self.callee_name(target) {
                        Some(name) if is_known_allocator_entry(&name) => return true,
                        Some(_) if direct && self.by_address.contains_key(&target) => next.push(target),
                        _ => {}
                    }
                }
            }
            frontier = next;
        }
        false
    }
}

fn is_libc(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
}

/// Defined function symbols of an ELF file (dynamic and static tables),
/// by name, as file offsets.
fn defined_functions(path: &Path) -> Option<HashMap<String, u64>> {
    let file = crate::safe_file::open_regular(path).ok()?;
    // SAFETY: read-only mapping of a file the target has mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let elf = object::File::parse(&map[..]).ok()?;
    let mut out = HashMap::new();
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        if sym.kind() != object::SymbolKind::Text || sym.is_undefined() || sym.address() == 0 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        // Versioned names (`malloc@@GLIBC_2.2.5`) keep their base name.
        let name = name.split('@').next().unwrap_or(name);
        let Some(section) = sym.section_index().and_then(|i| elf.section_by_index(i).ok()) else { continue };
        let Some((file_off, _)) = section.file_range() else { continue };
        let offset = sym.address() - section.address() + file_off;
        out.entry(name.to_string()).or_insert(offset);
    }
    Some(out)
}

/// One decoded instruction of a function prologue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Insn {
    /// `push reg`: emulated by the kernel.
    Push(usize),
    /// 5-byte nop (`nopl 0x0(%rax,%rax,1)`): emulated (and optimised).
    Nop5,
    /// `endbr64`: single-stepped, writes nothing.
    Endbr64,
    /// `test r64, r64` (same register): single-stepped, writes only flags.
    TestSame { reg: u8, len: usize },
    /// `je/jz rel8` or `rel32`: emulated; falls through when the test failed.
    JumpIfZero(usize),
    /// `jmp rel8` or `rel32` (musl's `malloc` and `free` jump to their
    /// implementation): emulated by the kernel's branch emulation.
    Jump,
    Unknown,
}

fn decode(code: &[u8]) -> Insn {
    match code {
        [0xf3, 0x0f, 0x1e, 0xfa, ..] => Insn::Endbr64,
        [0x0f, 0x1f, 0x44, 0x00, 0x00, ..] => Insn::Nop5,
        [b @ 0x50..=0x57, ..] => {
            let _ = b;
            Insn::Push(1)
        }
        [0x41, 0x50..=0x57, ..] => Insn::Push(2),
        [rex @ (0x48 | 0x4d), 0x85, modrm, ..] if modrm >> 6 == 3 && (modrm >> 3) & 7 == modrm & 7 => {
            let high = if *rex == 0x4d { 8 } else { 0 };
            Insn::TestSame { reg: high + (modrm & 7), len: 3 }
        }
        [0x74, _, ..] => Insn::JumpIfZero(2),
        [0x0f, 0x84, _, _, _, _, ..] => Insn::JumpIfZero(6),
        [0xe9, _, _, _, _, ..] | [0xeb, _, ..] => Insn::Jump,
        _ => Insn::Unknown,
    }
}

fn insn_name(insn: Insn) -> &'static str {
    match insn {
        Insn::Push(_) => "push",
        Insn::Nop5 => "nop (5 bytes)",
        Insn::Endbr64 => "endbr64",
        Insn::TestSame { .. } => "test",
        Insn::JumpIfZero(_) => "je",
        Insn::Jump => "jmp",
        Insn::Unknown => "other",
    }
}

/// Whether the kernel emulates the instruction at the start of `code`, and
/// its name for the report (its first bytes when not decoded).
fn describe_entry(code: &[u8]) -> (bool, String) {
    let insn = decode(code);
    let name = match insn {
        Insn::Unknown => {
            let bytes: Vec<String> = code.iter().take(4).map(|b| format!("{b:02x}")).collect();
            format!("other ({})", bytes.join(" "))
        }
        _ => insn_name(insn).to_string(),
    };
    (matches!(insn, Insn::Push(_) | Insn::Nop5 | Insn::Jump), name)
}

/// For `free(ptr)`: glibc starts with `test %rdi,%rdi; je <return>`, whose
/// `test` the kernel must single-step (about 9 µs per hit, against 0.7 µs
/// for an emulated `push`). Past a null check of the pointer's register
/// (`ptr_reg`, ModRM numbering: 7 for %rdi) the pointer is still there
/// and only `free(NULL)`, a no-op, is skipped; so the probe goes on the
/// first emulated instruction reached through `endbr64` and such a null
/// check, else on the entry. Nothing else is skipped: past any other
/// instruction the register may have changed.
pub(crate) fn free_probe_offset(code: &[u8], ptr_reg: u8) -> (u64, bool, String) {
    let mut at = 0usize;
    let mut tested_rdi = false;
    for _ in 0..6 {
        let insn = decode(code.get(at..).unwrap_or_default());
        match insn {
            Insn::Push(_) | Insn::Nop5 => return (at as u64, true, insn_name(insn).to_string()),
            Insn::Endbr64 => at += 4,
            Insn::TestSame { reg, len } if reg == ptr_reg => {
                tested_rdi = true;
                at += len;
            }
            Insn::JumpIfZero(len) if tested_rdi => at += len,
            _ => break,
        }
    }
    let (emulated, name) = describe_entry(code);
    (0, emulated, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_a_known_allocator_is_a_target_error_with_its_own_fix() {
        // /bin/true imports malloc but defines none, and no library is given.
        let err = discover_allocator(Path::new("/bin/true"), &[]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::AllocatorUnknown);
        assert_eq!(err.kind.exit_code(), crate::error::exit_code::TARGET);
        let shown = err.to_string();
        assert!(!shown.contains('\n') && shown.contains("no known allocator") && shown.contains("cpu async database"), "{shown}");
    }

    #[test]
    fn glibc_free_is_probed_past_its_null_check_on_the_push() {
        // __libc_free (glibc 2.36): test %rdi,%rdi; je ...; push %rbp
        let code = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, 0x55, 0x48, 0x8d];
        assert_eq!(free_probe_offset(&code, 7), (9, true, "push".to_string()));
        // With endbr64 and a short je.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xff, 0x74, 0x10, 0x41, 0x54];
        assert_eq!(free_probe_offset(&code, 7), (9, true, "push".to_string()));
    }

    #[test]
    fn a_test_of_another_register_is_not_skipped() {
        // test %rsi,%rsi; je: skipping it would miss calls, so the entry.
        let code = [0x48, 0x85, 0xf6, 0x74, 0x10, 0x55];
        let (offset, emulated, _) = free_probe_offset(&code, 7);
        assert_eq!((offset, emulated), (0, false));
    }

    #[test]
    fn a_forwarding_shim_gives_its_target_and_where_each_argument_went() {
        // __rustc::__rust_alloc of a #[global_allocator] written in Rust
        // (rustc 1.95): mov %rdi,%rdx; lea ALLOCATOR(%rip),%rdi; jmp alloc.
        let alloc = [0x48, 0x89, 0xfa, 0x48, 0x8d, 0x3d, 0xb6, 0xc9, 0x04, 0x00, 0xe9, 0x31, 0xf9, 0xff, 0xff];
        let f = decode_forwarder(&alloc, 0x1ac50).unwrap();
        assert_eq!(f.target, Some(0x1a590));
        // GlobalAlloc::alloc(&self, layout): the size is its third argument.
        assert_eq!(f.position_of(0), Some(2));
        // __rust_dealloc: mov %rsi,%rcx; mov %rdi,%rsi; lea; jmp dealloc.
        let dealloc = [0x48, 0x89, 0xf1, 0x48, 0x89, 0xfe, 0x48, 0x8d, 0x3d, 0xa3, 0xc9, 0x04, 0x00, 0xe9, 0x4e, 0xfb, 0xff, 0xff];
        let f = decode_forwarder(&dealloc, 0x1ac60).unwrap();
        assert_eq!((f.target, f.position_of(0)), (Some(0x1a7c0), Some(1)));
        // mimalloc's __rust_realloc: mov %rcx,%rsi; jmp *mi_realloc_aligned@GOT:
        // the new size (the shim's 4th argument) is the target's 2nd.
        let realloc = [0x48, 0x89, 0xce, 0xff, 0x25, 0xcf, 0x26, 0x06, 0x00];
        let f = decode_forwarder(&realloc, 0x222f0).unwrap();
        assert_eq!((f.target, f.got_slot), (None, Some(0x849c8)));
        assert_eq!((f.position_of(0), f.position_of(3)), (Some(0), Some(1)));
        // tikv-jemallocator's __rust_alloc chooses between malloc and
        // mallocx first (cmp $0x11,%rsi): not a forwarder.
        assert_eq!(decode_forwarder(&[0x48, 0x83, 0xfe, 0x11, 0x0f, 0x92, 0xc0], 0), None);
    }

    #[test]
    fn rust_shims_are_found_by_their_v0_mangled_names() {
        let by_address: HashMap<u64, String> = [
            (1, "_RNvCsfLfy6EI15iL_7___rustc12___rust_alloc"),
            (2, "_RNvCsfLfy6EI15iL_7___rustc14___rust_dealloc"),
            (3, "_RNvCsfLfy6EI15iL_7___rustc26___rust_alloc_error_handler"),
            (4, "__rust_realloc"),
        ]
        .into_iter()
        .map(|(a, n)| (a, n.to_string()))
        .collect();
        let shims = rust_shim_symbols(&by_address);
        assert_eq!(shims.len(), 3, "{shims:?}");
        assert_eq!((shims["__rust_alloc"], shims["__rust_dealloc"], shims["__rust_realloc"]), (1, 2, 4));
        assert!(is_known_allocator_entry("__rustc::__rdl_alloc"));
        assert!(is_known_allocator_entry("_rjem_mallocx") && is_known_allocator_entry("malloc"));
        assert!(!is_known_allocator_entry("<svc::Arena as core::alloc::global::GlobalAlloc>::alloc"));
    }

    #[test]
    fn jemalloc_and_mimalloc_entries_are_single_stepped_and_named_by_their_bytes() {
        // _rjem_sdallocx: cmp $0x1000,%rsi, not a null check of the pointer.
        let sdallocx = [0x48, 0x81, 0xfe, 0x00, 0x10, 0x00, 0x00, 0x77, 0x7f];
        assert_eq!(free_probe_offset(&sdallocx, 7), (0, false, "other (48 81 fe 00)".to_string()));
        // mi_realloc_aligned and _rjem_mallocx start with push %rbp.
        assert_eq!(describe_entry(&[0x55, 0x48, 0x89, 0xe5]), (true, "push".to_string()));
    }

    #[test]
    fn a_dealloc_with_the_pointer_in_rsi_is_probed_past_its_own_null_check() {
        // test %rsi,%rsi; je; push %rbx: skipped for a pointer in %rsi only.
        let code = [0x48, 0x85, 0xf6, 0x74, 0x10, 0x53];
        assert_eq!(free_probe_offset(&code, 6), (5, true, "push".to_string()));
        assert_eq!(free_probe_offset(&code, 7).0, 0);
    }

    #[test]
    fn musl_malloc_and_free_jump_to_their_implementation_an_emulated_entry() {
        // static musl: malloc: jmp __libc_malloc_impl; free: jmp __libc_free.
        assert_eq!(describe_entry(&[0xe9, 0x42, 0x13, 0x00, 0x00]), (true, "jmp".to_string()));
        assert_eq!(free_probe_offset(&[0xe9, 0x74, 0x04, 0x00, 0x00], 7), (0, true, "jmp".to_string()));
    }

    #[test]
    fn a_push_at_the_entry_is_emulated() {
        assert_eq!(describe_entry(&[0x41, 0x54, 0x55]), (true, "push".to_string()));
        assert!(!describe_entry(&[0x48, 0x89, 0xf8]).0);
    }

    #[test]
    fn this_machines_libc_allocator_is_found_with_cheap_probe_points() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc: PathBuf = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so"))
            .expect("the test binary maps libc")
            .into();
        let exe = std::env::current_exe().unwrap();
        let plan = discover_allocator(&exe, std::slice::from_ref(&libc)).unwrap();
        assert_eq!(plan.family, AllocatorFamily::Glibc);
        assert_eq!(plan.object, libc);
        let free = plan.probes.iter().find(|p| p.symbol == "free").unwrap();
        let malloc = plan.probes.iter().find(|p| p.symbol == "malloc").unwrap();
        assert_ne!(free.entry_offset, malloc.entry_offset);
        assert_eq!(malloc.probe_offset, 0);
    }
}
