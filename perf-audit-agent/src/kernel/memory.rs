//! The memory profile's kernel side, agent half: which allocator the target
//! really uses (read from its binary and mapped libraries), where on each
//! allocator function a uprobe costs least, attaching and detaching those
//! probes (the default mode's duty cycle), and reading the kernel's
//! per-site counters back.
//!
//! The memory programs run in their own loaded instance of the eBPF object
//! (the CPU maps shrunk to nothing), owned by the memory collector's task:
//! it attaches and detaches on its own clock without borrowing the audit's
//! CPU session.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, PerCpuHashMap},
    programs::{UProbe, uprobe::{UProbeLinkId, UProbeScope}},
};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use perf_audit_common::{
    filter_mode,
    memory::{MEM_TEXT_RANGES, MemCounter, SiteStats, TextRange, mem_control, mem_names},
    names,
};

use super::{EBPF_OBJECT, load_error, missing};
use crate::error::{Error, ErrorKind, Result};

/// How the probe reads its arguments (one eBPF program per shape).
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
}

impl CallShape {
    fn program(self) -> &'static str {
        match self {
            CallShape::SizeArg0 => mem_names::ALLOC_SIZE_ARG0,
            CallShape::SizeArg1 => mem_names::ALLOC_SIZE_ARG1,
            CallShape::Calloc => mem_names::CALLOC,
            CallShape::Realloc => mem_names::REALLOC,
            CallShape::PosixMemalign => mem_names::POSIX_MEMALIGN,
            CallShape::Free => mem_names::FREE,
        }
    }

    /// Allocating calls need the returned pointer (a uretprobe).
    fn returns_pointer(self) -> bool {
        self != CallShape::Free
    }
}

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
}

impl AllocatorFamily {
    fn entry_points(self) -> &'static [(&'static str, CallShape)] {
        use CallShape::*;
        match self {
            // Hottest first: links are closed in this order (after free's).
            AllocatorFamily::Glibc | AllocatorFamily::StaticMalloc => &[
                ("malloc", SizeArg0),
                ("realloc", Realloc),
                ("calloc", Calloc),
                ("free", Free),
                ("posix_memalign", PosixMemalign),
                ("aligned_alloc", SizeArg1),
                ("memalign", SizeArg1),
            ],
            AllocatorFamily::Jemalloc => &[
                ("_rjem_malloc", SizeArg0),
                ("_rjem_mallocx", SizeArg0),
                ("_rjem_calloc", Calloc),
                ("_rjem_realloc", Realloc),
                ("_rjem_rallocx", Realloc),
                ("_rjem_free", Free),
                ("_rjem_sdallocx", Free),
                ("_rjem_posix_memalign", PosixMemalign),
                ("_rjem_aligned_alloc", SizeArg1),
            ],
            AllocatorFamily::Mimalloc => &[
                ("mi_malloc", SizeArg0),
                ("mi_malloc_aligned", SizeArg0),
                ("mi_zalloc", SizeArg0),
                ("mi_zalloc_aligned", SizeArg0),
                ("mi_calloc", Calloc),
                ("mi_realloc", Realloc),
                ("mi_realloc_aligned", Realloc),
                ("mi_free", Free),
            ],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AllocatorFamily::Glibc => "glibc malloc",
            AllocatorFamily::Jemalloc => "jemalloc (_rjem_*)",
            AllocatorFamily::Mimalloc => "mimalloc (mi_*)",
            AllocatorFamily::StaticMalloc => "malloc linked into the executable",
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
    /// Rust's allocator shims present in the executable (`__rust_alloc`...);
    /// they forward to the allocator above, which is what is probed.
    pub rust_shims: Vec<String>,
}

/// Reads the target's executable and mapped libraries to find its allocator.
pub fn discover_allocator(exe: &Path, mapped: &[PathBuf]) -> Result<AllocatorPlan> {
    let not_found = |why: String| Error::new(ErrorKind::KernelUnsupported, why);
    let exe_syms = defined_functions(exe).unwrap_or_default();
    let rust_shims: Vec<String> = exe_syms
        .keys()
        .filter(|n| n.contains("__rust_alloc") || n.contains("__rust_dealloc") || n.contains("__rust_realloc"))
        .cloned()
        .collect();
    let mut candidates: Vec<(PathBuf, HashMap<String, u64>)> = vec![(exe.to_path_buf(), exe_syms)];
    for lib in mapped {
        if lib != exe {
            if let Some(syms) = defined_functions(lib) {
                candidates.push((lib.clone(), syms));
            }
        }
    }
    let pick = |family: AllocatorFamily, marker: &str, libc_only: bool| {
        candidates.iter().find(|(path, syms)| {
            syms.contains_key(marker) && (!libc_only || is_libc(path))
        }).map(|(path, syms)| (family, path.clone(), syms.clone()))
    };
    let found = pick(AllocatorFamily::Jemalloc, "_rjem_malloc", false)
        .or_else(|| pick(AllocatorFamily::Mimalloc, "mi_malloc", false))
        .or_else(|| {
            let (path, syms) = &candidates[0];
            syms.contains_key("malloc").then(|| (AllocatorFamily::StaticMalloc, path.clone(), syms.clone()))
        })
        .or_else(|| pick(AllocatorFamily::Glibc, "malloc", true));
    let Some((family, object, syms)) = found else {
        return Err(not_found(format!(
            "no known allocator (glibc, jemalloc, mimalloc) in {} or its libraries",
            exe.display()
        )));
    };
    let data = std::fs::read(&object).map_err(|e| Error::internal(format!("{}: {e}", object.display())))?;
    let mut probes = Vec::new();
    for (symbol, shape) in family.entry_points() {
        let Some(&entry_offset) = syms.get(*symbol) else { continue };
        let code = data.get(entry_offset as usize..).unwrap_or_default();
        let code = &code[..code.len().min(32)];
        let (probe_offset, emulated, instruction) = if shape.returns_pointer() {
            // The uretprobe must sit on the entry (it swaps the return
            // address there), and an entry probe at the same address
            // shares its breakpoint.
            let (emulated, instruction) = describe_entry(code);
            (0, emulated, instruction)
        } else {
            free_probe_offset(code)
        };
        probes.push(ProbePoint {
            symbol: symbol.to_string(),
            shape: *shape,
            entry_offset,
            probe_offset,
            emulated,
            instruction,
        });
    }
    if !probes.iter().any(|p| p.shape == CallShape::Free) || !probes.iter().any(|p| p.shape == CallShape::SizeArg0) {
        return Err(not_found(format!("{} in {} lacks malloc or free", family.name(), object.display())));
    }
    Ok(AllocatorPlan { family, object, probes, rust_shims })
}

fn is_libc(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
}

/// Defined function symbols of an ELF file (dynamic and static tables),
/// by name, as file offsets.
fn defined_functions(path: &Path) -> Option<HashMap<String, u64>> {
    let file = std::fs::File::open(path).ok()?;
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
        Insn::Unknown => "other",
    }
}

fn describe_entry(code: &[u8]) -> (bool, String) {
    let insn = decode(code);
    (matches!(insn, Insn::Push(_) | Insn::Nop5), insn_name(insn).to_string())
}

/// For `free(ptr)`: glibc starts with `test %rdi,%rdi; je <return>`, whose
/// `test` the kernel must single-step (about 9 µs per hit, against 0.7 µs
/// for an emulated `push`). Past a null check of the first argument the
/// pointer is still in %rdi and only `free(NULL)`, a no-op, is skipped; so
/// the probe goes on the first emulated instruction reached through
/// `endbr64` and such a null check, else on the entry.
pub(crate) fn free_probe_offset(code: &[u8]) -> (u64, bool, String) {
    const RDI: u8 = 7;
    let mut at = 0usize;
    let mut tested_rdi = false;
    for _ in 0..6 {
        let insn = decode(code.get(at..).unwrap_or_default());
        match insn {
            Insn::Push(_) | Insn::Nop5 => return (at as u64, true, insn_name(insn).to_string()),
            Insn::Endbr64 => at += 4,
            Insn::TestSame { reg, len } if reg == RDI => {
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

/// The memory programs' own loaded instance of the eBPF object.
pub struct MemoryKernel {
    ebpf: Ebpf,
    pid: u32,
    plan: AllocatorPlan,
    links: Vec<(&'static str, UProbeLinkId)>,
    closing: Vec<std::thread::JoinHandle<()>>,
}

impl MemoryKernel {
    /// Loads the object (CPU maps shrunk, they are unused here), registers
    /// `pid` in this instance's filter and tells the fingerprint which
    /// address ranges hold code.
    pub fn load(pid: u32, plan: AllocatorPlan, text: &[(u64, u64)]) -> Result<MemoryKernel> {
        let mode = filter_mode::LISTED_PIDS;
        let stack_mode = perf_audit_common::user_stack_mode::FRAME_POINTER;
        let ebpf = EbpfLoader::new()
            .override_global(names::FILTER_MODE, &mode, true)
            .override_global(names::USER_STACK_MODE, &stack_mode, true)
            .map_max_entries(names::CPU_STACK_COUNTS, 1)
            .map_max_entries(names::STACK_TRACES, 1)
            // Carries the page-fault and mmap/brk samples (`kernel::mem_events`).
            .map_max_entries(names::USER_STACK_SAMPLES, super::mem_events::RING_BYTES)
            .load(EBPF_OBJECT)
            .map_err(|e| load_error("loading the eBPF object for the memory profile", &e))?;
        let mut kernel = MemoryKernel { ebpf, pid, plan, links: Vec::new(), closing: Vec::new() };
        let mut pids: aya::maps::HashMap<_, u32, u8> = aya::maps::HashMap::try_from(
            kernel.ebpf.map_mut(names::TARGET_PIDS).ok_or_else(|| missing(names::TARGET_PIDS))?,
        )
        .map_err(|e| Error::internal(format!("TARGET_PIDS: {e}")))?;
        pids.insert(pid, 1, 0).map_err(|e| Error::internal(format!("cannot add pid {pid}: {e}")))?;
        let mut ranges: Array<_, TextRange> = Array::try_from(
            kernel.ebpf.map_mut(mem_names::TEXT).ok_or_else(|| missing(mem_names::TEXT))?,
        )
        .map_err(|e| Error::internal(format!("MEM_TEXT: {e}")))?;
        for (i, (start, end)) in text.iter().take(MEM_TEXT_RANGES as usize).enumerate() {
            ranges
                .set(i as u32, TextRange { start: *start, end: *end }, 0)
                .map_err(|e| Error::internal(format!("MEM_TEXT: {e}")))?;
        }
        for name in [
            mem_names::ALLOC_SIZE_ARG0,
            mem_names::ALLOC_SIZE_ARG1,
            mem_names::CALLOC,
            mem_names::REALLOC,
            mem_names::POSIX_MEMALIGN,
            mem_names::FREE,
            mem_names::ALLOC_RETURN,
        ] {
            let program: &mut UProbe = kernel
                .ebpf
                .program_mut(name)
                .ok_or_else(|| missing(name))?
                .try_into()
                .map_err(|e| Error::internal(format!("{name} is not a uprobe: {e}")))?;
            program.load().map_err(|e| load_error(&format!("loading {name}"), &e))?;
        }
        Ok(kernel)
    }

    pub fn plan(&self) -> &AllocatorPlan {
        &self.plan
    }

    /// The loaded instance, for the memory event programs (`kernel::mem_events`).
    pub(crate) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub(crate) fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn attached(&self) -> bool {
        !self.links.is_empty()
    }

    /// Attaches every planned probe (entry, and uretprobe for allocating
    /// calls), for this process only.
    pub fn attach(&mut self) -> Result<()> {
        if self.attached() {
            return Ok(());
        }
        let pid = NonZeroU32::new(self.pid).ok_or_else(|| Error::internal("pid 0"))?;
        let object = self.plan.object.clone();
        let probes = self.plan.probes.clone();
        for probe in &probes {
            let mut targets = vec![(probe.shape.program(), probe.entry_offset + probe.probe_offset)];
            if probe.shape.returns_pointer() {
                targets.push((mem_names::ALLOC_RETURN, probe.entry_offset));
            }
            for (name, offset) in targets {
                let program: &mut UProbe = self
                    .ebpf
                    .program_mut(name)
                    .ok_or_else(|| missing(name))?
                    .try_into()
                    .map_err(|e| Error::internal(format!("{name}: {e}")))?;
                let link = program
                    .attach(offset, &object, UProbeScope::OneProcess(pid))
                    .map_err(|e| load_error(&format!("attaching a uprobe to {} in {}", probe.symbol, object.display()), &e))?;
                self.links.push((name, link));
            }
        }
        Ok(())
    }

    /// Detaches every probe: the target pays nothing until the next attach.
    pub fn detach(&mut self) {
        self.detach_where(|_| true);
    }

    /// Closing a uprobe link waits for kernel grace periods under a global
    /// mutex (~0.1 s per link, measured on 6.18), and its breakpoint stays
    /// until then, so links close one after the other whatever we do. They
    /// are closed on a background thread (the duty cycle keeps its clock),
    /// hottest first: `free`'s, then each allocating function's entry and
    /// return probes in the plan's order (malloc first), so that the
    /// breakpoints the target hits most go within ~0.3 s.
    /// [`MemoryKernel::join_detaches`] waits for them.
    fn detach_where(&mut self, which: impl Fn(&str) -> bool) {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links).into_iter().partition(|(n, _)| which(n));
        self.links = kept;
        let mut owned = Vec::with_capacity(gone.len());
        let (frees, others): (Vec<_>, Vec<_>) = gone.into_iter().partition(|(n, _)| *n == mem_names::FREE);
        for (name, link) in frees.into_iter().chain(others) {
            if let Some(program) = self.ebpf.program_mut(name) {
                let program: std::result::Result<&mut UProbe, _> = program.try_into();
                if let Ok(program) = program {
                    if let Ok(link) = program.take_link(link) {
                        owned.push(link);
                    }
                }
            }
        }
        if owned.is_empty() {
            return;
        }
        self.closing.retain(|h| !h.is_finished());
        self.closing.push(std::thread::spawn(move || {
            for link in owned {
                drop(link);
            }
        }));
    }

    /// Waits until every detached link is closed in the kernel.
    pub fn join_detaches(&mut self) {
        for handle in self.closing.drain(..) {
            let _ = handle.join();
        }
    }

    pub fn set_window(&mut self, window: u64) -> Result<()> {
        self.set_control(mem_control::WINDOW, window)
    }

    /// Starts or stops recording allocations (probes stay as they are).
    pub fn set_recording(&mut self, on: bool) -> Result<()> {
        self.set_control(mem_control::RECORDING, on as u64)
    }

    fn set_control(&mut self, slot: u32, value: u64) -> Result<()> {
        let mut control: Array<_, u64> = Array::try_from(
            self.ebpf.map_mut(mem_names::CONTROL).ok_or_else(|| missing(mem_names::CONTROL))?,
        )
        .map_err(|e| Error::internal(format!("MEM_CONTROL: {e}")))?;
        control.set(slot, value, 0).map_err(|e| Error::internal(format!("MEM_CONTROL: {e}")))
    }

    /// Takes the new-site stack ring (once).
    pub fn take_stack_ring(&mut self) -> Result<aya::maps::RingBuf<MapData>> {
        let map = self.ebpf.take_map(mem_names::STACKS).ok_or_else(|| missing(mem_names::STACKS))?;
        aya::maps::RingBuf::try_from(map).map_err(|e| Error::internal(format!("MEM_STACKS: {e}")))
    }

    /// Every site's counters, summed over CPUs.
    pub fn read_sites(&self) -> Result<HashMap<u64, SiteStats>> {
        let sites: PerCpuHashMap<_, u64, SiteStats> = PerCpuHashMap::try_from(
            self.ebpf.map(mem_names::SITES).ok_or_else(|| missing(mem_names::SITES))?,
        )
        .map_err(|e| Error::internal(format!("MEM_SITES: {e}")))?;
        let mut out = HashMap::new();
        for entry in sites.iter() {
            let (site, per_cpu) = entry.map_err(|e| Error::internal(format!("reading MEM_SITES: {e}")))?;
            let mut sum = SiteStats::default();
            for s in per_cpu.iter() {
                sum.alloc_count += s.alloc_count;
                sum.alloc_bytes += s.alloc_bytes;
                sum.free_count += s.free_count;
                sum.free_bytes += s.free_bytes;
                sum.late_free_count += s.late_free_count;
                sum.late_free_bytes += s.late_free_bytes;
            }
            out.insert(site, sum);
        }
        Ok(out)
    }

    pub fn counters(&self) -> Result<MemCounters> {
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf.map(mem_names::COUNTERS).ok_or_else(|| missing(mem_names::COUNTERS))?,
        )
        .map_err(|e| Error::internal(format!("MEM_COUNTERS: {e}")))?;
        let read = |c: MemCounter| -> Result<u64> {
            Ok(array.get(&c.slot(), 0).map_err(|e| Error::internal(format!("MEM_COUNTERS: {e}")))?.iter().sum())
        };
        Ok(MemCounters {
            alloc_calls: read(MemCounter::AllocCalls)?,
            free_calls: read(MemCounter::FreeCalls)?,
            free_untracked: read(MemCounter::FreeUntracked)?,
            live_map_full: read(MemCounter::LiveMapFull)?,
            site_map_full: read(MemCounter::SiteMapFull)?,
            stack_ring_full: read(MemCounter::StackRingFull)?,
            fingerprint_read_failed: read(MemCounter::FingerprintReadFailed)?,
            pending_lost: read(MemCounter::PendingLost)?,
            alloc_failed: read(MemCounter::AllocFailed)?,
        })
    }
}

impl Drop for MemoryKernel {
    fn drop(&mut self) {
        self.detach();
        self.join_detaches();
    }
}

/// Sums of the per-CPU memory counters (every drop is one of these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemCounters {
    pub alloc_calls: u64,
    pub free_calls: u64,
    pub free_untracked: u64,
    pub live_map_full: u64,
    pub site_map_full: u64,
    pub stack_ring_full: u64,
    pub fingerprint_read_failed: u64,
    pub pending_lost: u64,
    pub alloc_failed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_free_is_probed_past_its_null_check_on_the_push() {
        // __libc_free (glibc 2.36): test %rdi,%rdi; je ...; push %rbp
        let code = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, 0x55, 0x48, 0x8d];
        assert_eq!(free_probe_offset(&code), (9, true, "push".to_string()));
        // With endbr64 and a short je.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xff, 0x74, 0x10, 0x41, 0x54];
        assert_eq!(free_probe_offset(&code), (9, true, "push".to_string()));
    }

    #[test]
    fn a_test_of_another_register_is_not_skipped() {
        // test %rsi,%rsi; je: skipping it would miss calls, so the entry.
        let code = [0x48, 0x85, 0xf6, 0x74, 0x10, 0x55];
        let (offset, emulated, _) = free_probe_offset(&code);
        assert_eq!((offset, emulated), (0, false));
    }

    #[test]
    fn a_push_at_the_entry_is_emulated() {
        assert_eq!(describe_entry(&[0x41, 0x54, 0x55]), (true, "push".to_string()));
        assert_eq!(describe_entry(&[0x48, 0x89, 0xf8]).0, false);
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
        let plan = discover_allocator(&exe, &[libc.clone()]).unwrap();
        assert_eq!(plan.family, AllocatorFamily::Glibc);
        assert_eq!(plan.object, libc);
        let free = plan.probes.iter().find(|p| p.symbol == "free").unwrap();
        let malloc = plan.probes.iter().find(|p| p.symbol == "malloc").unwrap();
        assert_ne!(free.entry_offset, malloc.entry_offset);
        assert_eq!(malloc.probe_offset, 0);
    }
}
