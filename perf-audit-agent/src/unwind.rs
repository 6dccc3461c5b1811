//! User-stack unwinding from `.eh_frame`, for binaries without frame
//! pointers (Rust's default release profile).
//!
//! The kernel side copies the user registers and up to 64 KiB of the user
//! stack at each sample; this module walks that copy with framehop, using
//! the unwind tables of every object mapped in the target (the main PIE
//! binary, libc, ...). Tables are parsed once per object and cached by
//! build-id (or path, size and mtime when there is none), so processes of
//! the same binary share them. Every collector of one audit (CPU and
//! off-CPU samples, memory events and sites, database writes) unwinds
//! through one [`SharedUnwinder`]: one table cache, one [`ProcessUnwinder`].
//! See ARCHITECTURE.md for why unwinding happens here rather than in the
//! kernel.

use std::{
    collections::{BTreeMap, HashMap},
    ops::{Deref, Range},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use object::{Object as _, ObjectSection as _, ObjectSegment as _};

use crate::target::{Mapping, MapsSnapshot};

/// Bytes of a mapped file, shared by every module built from it.
#[derive(Clone)]
pub struct SharedBytes {
    map: Arc<memmap2::Mmap>,
    range: Range<usize>,
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

/// The unwind-relevant parts of one ELF object.
pub struct ObjectTables {
    /// The whole file, mapped read-only; the sections below and every
    /// module built from them share it.
    map: Arc<memmap2::Mmap>,
    eh_frame: Option<(Range<u64>, SharedBytes)>,
    eh_frame_hdr: Option<(Range<u64>, SharedBytes)>,
    debug_frame: Option<SharedBytes>,
    text: Option<(Range<u64>, SharedBytes)>,
    /// Loadable segments: (file offset, virtual address, file size).
    segments: Vec<(u64, u64, u64)>,
    /// Code described in `.debug_frame` only (virtual addresses, merged):
    /// a static musl binary's C functions. framehop reads `.debug_frame`
    /// only for a module without `.eh_frame`, so these get modules of their
    /// own.
    debug_frame_only: Vec<Range<u64>>,
}

impl ObjectTables {
    fn load(path: &Path) -> Option<(ObjectKey, ObjectTables)> {
        let file = crate::safe_file::open_regular(path).ok()?;
        // SAFETY: the file is mapped read-only; a concurrent truncation could
        // fault, the usual caveat of every profiler reading binaries.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.ok()?);
        let elf = object::File::parse(&map[..]).ok()?;
        let section = |name: &str| -> Option<(Range<u64>, SharedBytes)> {
            let s = elf.section_by_name(name)?;
            let (offset, size) = s.file_range()?;
            Some((
                s.address()..s.address() + s.size(),
                SharedBytes { map: map.clone(), range: offset as usize..(offset + size) as usize },
            ))
        };
        let key = match elf.build_id().ok().flatten() {
            Some(id) => ObjectKey::BuildId(id.to_vec()),
            None => {
                let meta = file.metadata().ok()?;
                ObjectKey::File(path.to_path_buf(), meta.len(), meta.modified().ok())
            }
        };
        let segments = elf
            .segments()
            .map(|seg| {
                let (offset, size) = seg.file_range();
                (offset, seg.address(), size)
            })
            .collect();
        let eh_frame_hdr = section(".eh_frame_hdr");
        let debug_frame = section(".debug_frame").map(|(_, b)| b);
        let debug_frame_only = match (&eh_frame_hdr, &debug_frame) {
            (Some((hdr_range, hdr)), Some(debug)) => {
                debug_frame_only_ranges(&crate::debuginfo::eh_frame_hdr_starts(hdr_range.start, hdr), &debug_frame_fdes(debug))
            }
            _ => Vec::new(),
        };
        let tables = ObjectTables {
            map: map.clone(),
            eh_frame: section(".eh_frame"),
            eh_frame_hdr,
            debug_frame,
            text: section(".text"),
            segments,
            debug_frame_only,
        };
        Some((key, tables))
    }

    /// Whether an unwinder holds a module built from these tables: the
    /// mapping has more owners than these tables' own fields.
    fn in_use(&self) -> bool {
        let own = 1 + [self.eh_frame.is_some(), self.eh_frame_hdr.is_some(), self.debug_frame.is_some(), self.text.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        Arc::strong_count(&self.map) > own
    }

    /// Load bias of `mapping`: runtime address minus virtual address. The
    /// kernel maps a segment from its page-aligned file offset, so the
    /// mapping's offset is the segment's offset rounded down to a page
    /// (segments may share that page with the previous one).
    fn bias(&self, mapping: &Mapping) -> Option<u64> {
        const PAGE: u64 = 4096;
        let (seg_offset, seg_vaddr, _) = self
            .segments
            .iter()
            .find(|(off, _, _)| off & !(PAGE - 1) == mapping.offset)
            .or_else(|| self.segments.iter().find(|(off, _, size)| (*off..off + size).contains(&mapping.offset)))?;
        let vaddr = seg_vaddr.checked_sub(seg_offset - mapping.offset.min(*seg_offset))?;
        Some(mapping.start.wrapping_sub(vaddr))
    }

    /// The modules of `mapping`: one, or (when part of its code is
    /// described in `.debug_frame` only) the mapping cut into pieces, those
    /// pieces reading `.debug_frame` and the rest `.eh_frame`.
    fn modules(&self, name: String, mapping: &Mapping) -> Vec<Module<SharedBytes>> {
        let Some(bias) = self.bias(mapping) else { return Vec::new() };
        if self.debug_frame_only.is_empty() {
            return self.module(name, mapping.start..mapping.end, bias, true).into_iter().collect();
        }
        let mut modules = Vec::new();
        let mut at = mapping.start;
        for range in &self.debug_frame_only {
            let (start, end) = (range.start.wrapping_add(bias).max(mapping.start), range.end.wrapping_add(bias).min(mapping.end));
            if start >= end || start < at {
                continue;
            }
            if at < start {
                modules.extend(self.module(name.clone(), at..start, bias, true));
            }
            modules.extend(self.module(name.clone(), start..end, bias, false));
            at = end;
        }
        if at < mapping.end {
            modules.extend(self.module(name, at..mapping.end, bias, true));
        }
        modules
    }

    fn module(&self, name: String, avma: Range<u64>, bias: u64, eh_frame: bool) -> Option<Module<SharedBytes>> {
        if self.eh_frame.is_none() && self.debug_frame.is_none() {
            return None;
        }
        let eh = |x: Option<(Range<u64>, SharedBytes)>| if eh_frame { x } else { None };
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text.as_ref().map(|(r, _)| r.clone()),
            text: self.text.as_ref().map(|(_, d)| d.clone()),
            eh_frame_svma: eh(self.eh_frame.clone()).map(|(r, _)| r),
            eh_frame: eh(self.eh_frame.clone()).map(|(_, d)| d),
            eh_frame_hdr_svma: eh(self.eh_frame_hdr.clone()).map(|(r, _)| r),
            eh_frame_hdr: eh(self.eh_frame_hdr.clone()).map(|(_, d)| d),
            debug_frame: self.debug_frame.clone(),
            stubs_svma: None,
            stub_helper_svma: None,
            got_svma: None,
            unwind_info: None,
            text_segment_svma: None,
            text_segment: None,
        };
        Some(Module::new(name, avma, bias, info))
    }
}

/// The (start, end) address of every FDE of a `.debug_frame` section
/// (32-bit DWARF, 8-byte addresses: what x86-64 toolchains write).
fn debug_frame_fdes(data: &[u8]) -> Vec<(u64, u64)> {
    let u32_at = |i: usize| data.get(i..i + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let u64_at = |i: usize| data.get(i..i + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let mut fdes = Vec::new();
    let mut i = 0;
    while let Some(length) = u32_at(i) {
        if length == 0xffff_ffff || length == 0 {
            break; // 64-bit DWARF or padding: not written for x86-64 C code
        }
        let next = i + 4 + length as usize;
        let is_cie = u32_at(i + 4) == Some(0xffff_ffff);
        if !is_cie
            && let (Some(start), Some(len)) = (u64_at(i + 8), u64_at(i + 16))
            && len > 0
        {
            fdes.push((start, start + len));
        }
        i = next;
    }
    fdes
}

/// The code `.debug_frame` describes and `.eh_frame` does not (an FDE whose
/// start is no `.eh_frame_hdr` entry), merged across stretches with no
/// `.eh_frame` function between them.
fn debug_frame_only_ranges(eh_starts: &[u64], debug_fdes: &[(u64, u64)]) -> Vec<Range<u64>> {
    let mut only: Vec<(u64, u64)> =
        debug_fdes.iter().copied().filter(|(start, _)| eh_starts.binary_search(start).is_err()).collect();
    only.sort_unstable();
    let mut merged: Vec<Range<u64>> = Vec::new();
    for (start, end) in only {
        if let Some(last) = merged.last_mut() {
            let eh_between = eh_starts.partition_point(|s| *s < last.end) < eh_starts.partition_point(|s| *s < start);
            if !eh_between && start >= last.start {
                last.end = last.end.max(end);
                continue;
            }
        }
        merged.push(start..end);
    }
    merged
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ObjectKey {
    BuildId(Vec<u8>),
    File(PathBuf, u64, Option<std::time::SystemTime>),
}

/// Unwind tables of every object seen, by build-id. Shared by all the
/// processes an agent unwinds (the daemon watches many of the same binary).
#[derive(Default)]
pub struct TableCache {
    by_key: HashMap<ObjectKey, Arc<ObjectTables>>,
    /// Path, size and mtime -> tables (None: could not be loaded). The file's
    /// identity is part of the key so that a binary replaced at the same
    /// path (a redeploy, seen by the long-running daemon) is parsed again.
    by_path: HashMap<(PathBuf, u64, Option<std::time::SystemTime>), Option<Arc<ObjectTables>>>,
    /// How many times each object's file was parsed (once, unless two
    /// caches were used for one process).
    parses: BTreeMap<PathBuf, u32>,
}

impl TableCache {
    fn tables(&mut self, path: &Path) -> Option<Arc<ObjectTables>> {
        let meta = std::fs::metadata(path).ok();
        let identity =
            (path.to_path_buf(), meta.as_ref().map_or(0, |m| m.len()), meta.as_ref().and_then(|m| m.modified().ok()));
        if let Some(known) = self.by_path.get(&identity) {
            return known.clone();
        }
        let loaded = ObjectTables::load(path).map(|(key, tables)| {
            *self.parses.entry(path.to_path_buf()).or_default() += 1;
            self.by_key.entry(key).or_insert_with(|| Arc::new(tables)).clone()
        });
        self.by_path.insert(identity, loaded.clone());
        loaded
    }

    /// Paths looked up (each with its tables or the failure to load them).
    pub fn paths(&self) -> usize {
        self.by_path.len()
    }

    /// Forgets every object (the daemon's bound); unwinders built from the
    /// old tables keep theirs until they are dropped.
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.by_path.clear();
        self.parses.clear();
    }

    /// Number of distinct objects parsed.
    pub fn objects(&self) -> usize {
        self.by_key.len()
    }

    /// Forgets the objects no unwinder uses any more (every process that
    /// mapped them exited or was evicted), unmapping their files. Returns
    /// how many were dropped. The daemon calls it every window: a node's
    /// short-lived processes (compilers, scripts) would otherwise keep
    /// their binaries mapped until the cache's size limit.
    pub fn evict_unused(&mut self) -> usize {
        let unused: std::collections::HashSet<*const ObjectTables> =
            self.by_key.values().filter(|t| !t.in_use()).map(Arc::as_ptr).collect();
        if unused.is_empty() {
            return 0;
        }
        self.by_key.retain(|_, t| !unused.contains(&Arc::as_ptr(t)));
        self.by_path.retain(|_, t| t.as_ref().is_none_or(|t| !unused.contains(&Arc::as_ptr(t))));
        let paths: std::collections::HashSet<&PathBuf> = self.by_path.keys().map(|(p, _, _)| p).collect();
        self.parses.retain(|p, _| paths.contains(p));
        unused.len()
    }

    /// Drops the resident pages of every cached object's mapping from this
    /// process (`MADV_DONTNEED`): they stay in the page cache, and the next
    /// unwind through an object faults back only the pages it reads (its
    /// `.eh_frame_hdr` search path and the FDEs it uses). Keeps the daemon's
    /// file-backed RSS to what one window touches instead of everything
    /// ever read. Returns the bytes advised.
    pub fn release_pages(&self) -> usize {
        let mut bytes = 0;
        for tables in self.by_key.values() {
            // SAFETY: a private read-only file mapping: after DONTNEED its
            // pages are read again from the file, so no data is lost.
            if unsafe { tables.map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) }.is_ok() {
                bytes += tables.map.len();
            }
        }
        bytes
    }

    /// Each object parsed, by path, with how many times it was parsed.
    pub fn parses(&self) -> Vec<(PathBuf, u32)> {
        self.parses.iter().map(|(p, n)| (p.clone(), *n)).collect()
    }
}

/// The unwinding state of one audited process, shared by every collector
/// that unwinds its stacks: tables are parsed once per object and modules
/// added once per mapping, whichever collector meets them first.
#[derive(Clone)]
pub struct SharedUnwinder {
    pid: u32,
    inner: Arc<Mutex<Unwinding>>,
}

/// A table cache and the process's unwinder, behind [`SharedUnwinder`]'s lock.
#[derive(Default)]
pub struct Unwinding {
    pub tables: TableCache,
    pub process: ProcessUnwinder,
}

impl Unwinding {
    /// [`ProcessUnwinder::unwind_copied`] with this cache.
    pub fn unwind_copied(
        &mut self,
        maps: &mut MapsSnapshot,
        pid: u32,
        refreshed: &mut bool,
        regs: (u64, u64, u64),
        stack: &[u8],
    ) -> (Vec<u64>, UnwindEnd) {
        self.process.unwind_copied(&mut self.tables, maps, pid, refreshed, regs, stack)
    }
}

impl SharedUnwinder {
    pub fn new(pid: u32) -> SharedUnwinder {
        SharedUnwinder { pid, inner: Default::default() }
    }

    /// The process whose stacks this unwinds.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Locks the state for one drain of a ring (no await while held).
    pub fn lock(&self) -> MutexGuard<'_, Unwinding> {
        // A collector that panicked mid-unwind leaves a usable state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Parses the unwind tables of every object mapped in `maps` now, so
    /// that the first records are not delayed by loading them.
    pub fn warm_up(&self, maps: &MapsSnapshot) {
        let mut state = self.lock();
        let Unwinding { tables, process } = &mut *state;
        process.sync_modules(maps, tables);
    }

    /// Each object whose tables were parsed, with how many times.
    pub fn table_parses(&self) -> Vec<(PathBuf, u32)> {
        self.lock().tables.parses()
    }
}

/// How one stack ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwindEnd {
    /// A root function was reached (its CFI says there is no caller).
    Root,
    /// Unwinding stopped early: a frame outside the copied window, an
    /// address without unwind info, or a corrupt frame.
    Truncated,
}

/// Unwinds the stacks of one process.
pub struct ProcessUnwinder {
    unwinder: UnwinderX86_64<SharedBytes>,
    cache: CacheX86_64,
    /// Start addresses of mappings already added as modules.
    added: std::collections::HashSet<u64>,
    /// Address ranges of the modules added (start -> end).
    code: BTreeMap<u64, u64>,
    /// Executable mappings whose unwind tables could not be loaded (file
    /// unreadable, not ELF, or neither `.eh_frame` nor `.debug_frame`).
    without_tables: usize,
}

/// Frames beyond this depth are dropped (and the stack marked truncated).
pub const MAX_FRAMES: usize = 256;

impl Default for ProcessUnwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessUnwinder {
    pub fn new() -> Self {
        ProcessUnwinder {
            unwinder: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
            added: Default::default(),
            code: Default::default(),
            without_tables: 0,
        }
    }

    /// Executable mappings of the process whose tables could not be loaded.
    pub fn mappings_without_tables(&self) -> usize {
        self.without_tables
    }

    /// Whether `addr` lies in a mapping whose tables were loaded.
    pub fn has_tables_for(&self, addr: u64) -> bool {
        self.code.range(..=addr).next_back().is_some_and(|(_, &end)| addr < end)
    }

    /// Adds modules for mappings not seen before.
    pub fn sync_modules(&mut self, maps: &MapsSnapshot, tables: &mut TableCache) {
        for mapping in maps.iter() {
            if !self.added.insert(mapping.start) {
                continue;
            }
            let name = mapping.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let modules = tables.tables(&mapping.path).map(|t| t.modules(name, mapping)).unwrap_or_default();
            if modules.is_empty() {
                self.without_tables += 1;
            }
            for module in modules {
                self.unwinder.add_module(module);
                self.code.insert(mapping.start, mapping.end);
            }
        }
    }

    /// Unwinds a stack copied from process `pid` by an eBPF program: when
    /// `ip` lies in code mapped after `maps` was taken (dlopen, late
    /// loads), the snapshot is refreshed first, at most once per drain
    /// (`refreshed`), and modules are added for new mappings.
    #[allow(clippy::too_many_arguments)]
    pub fn unwind_copied(
        &mut self,
        tables: &mut TableCache,
        maps: &mut MapsSnapshot,
        pid: u32,
        refreshed: &mut bool,
        (ip, sp, bp): (u64, u64, u64),
        stack: &[u8],
    ) -> (Vec<u64>, UnwindEnd) {
        if maps.find(ip).is_none() && !*refreshed {
            let _ = maps.refresh(pid);
            *refreshed = true;
        }
        self.sync_modules(maps, tables);
        self.unwind(ip, sp, bp, stack)
    }

    /// Unwinds one sample. Returns the frames leaf first (the sampled
    /// instruction pointer, then return addresses) and how it ended.
    ///
    /// A sample taken while the kernel handles a uprobe has user registers
    /// that the CFI at `ip` does not describe; two such states are
    /// recognised and unwound from where the thread really is (kept only
    /// if that walk reaches a root through known code):
    /// - `ip` in the uprobe page: a uretprobed function has returned into
    ///   the trampoline, which pushes up to three registers and makes the
    ///   `uretprobe` syscall; the real return address (put back by the
    ///   eBPF stack copy, or by the kernel once handled) is one of the
    ///   three words at `sp`, and the caller resumes above it.
    /// - `ip - 1` a breakpoint: the int3 trapped and the kernel has not yet
    ///   moved the instruction pointer back to the probed instruction,
    ///   which has not run. Tried when the plain walk stopped early or
    ///   went through an address outside every module.
    pub fn unwind(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> (Vec<u64>, UnwindEnd) {
        if is_uprobe_trampoline(ip) {
            for words in (0..3u64).rev() {
                let slot = (words * 8) as usize;
                let Some(ret) = stack.get(slot..slot + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                else {
                    continue;
                };
                let (mut caller, end) = self.walk(ret, sp + words * 8 + 8, bp, &stack[slot + 8..]);
                if self.sound(&caller, end) && caller.len() < MAX_FRAMES {
                    caller.insert(0, ip);
                    return (caller, end);
                }
            }
            return (vec![ip], UnwindEnd::Truncated);
        }
        let (frames, end) = self.walk(ip, sp, bp, stack);
        if !self.sound(&frames, end)
            && let Some(trap) = ip.checked_sub(1)
        {
            let (retried, end) = self.walk(trap, sp, bp, stack);
            if self.sound(&retried, end) {
                return (retried, end);
            }
        }
        (frames, end)
    }

    /// A walk that reached a root with every frame in a module's code (and
    /// more than the leaf: a return address of 0 ends a walk too).
    fn sound(&self, frames: &[u64], end: UnwindEnd) -> bool {
        end == UnwindEnd::Root
            && frames.len() >= 2
            && frames.iter().all(|&a| self.has_tables_for(a))
    }

    fn walk(&mut self, ip: u64, sp: u64, bp: u64, stack: &[u8]) -> (Vec<u64>, UnwindEnd) {
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let offset = addr.checked_sub(sp).ok_or(())? as usize;
            let bytes = stack.get(offset..offset.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| ())?))
        };
        let mut frames = Vec::with_capacity(32);
        let mut iter = self.unwinder.iter_frames(ip, UnwindRegsX86_64::new(ip, sp, bp), &mut self.cache, &mut read_stack);
        let end = loop {
            match iter.next() {
                Ok(Some(FrameAddress::InstructionPointer(addr))) => frames.push(addr),
                Ok(Some(FrameAddress::ReturnAddress(addr))) => frames.push(addr.get()),
                Ok(None) => break UnwindEnd::Root,
                Err(_) => break UnwindEnd::Truncated,
            }
            if frames.len() >= MAX_FRAMES {
                break UnwindEnd::Truncated;
            }
        };
        (frames, end)
    }
}

/// Walks the frame-pointer chain through a copied user stack: `ip`, then
/// the return address above each saved `rbp`, for code without unwind
/// tables (the fallback the kernel's `bpf_get_stackid` walk would give).
/// Ends at a zero frame pointer or return address (the root, `_start`
/// clears `rbp`), or early at a frame outside the copy or one that does not
/// move up the stack.
pub fn frame_pointer_walk(ip: u64, sp: u64, bp: u64, stack: &[u8]) -> (Vec<u64>, UnwindEnd) {
    let word = |addr: u64| -> Option<u64> {
        let offset = usize::try_from(addr.checked_sub(sp)?).ok()?;
        Some(u64::from_le_bytes(stack.get(offset..offset.checked_add(8)?)?.try_into().ok()?))
    };
    let mut frames = vec![ip];
    let mut bp = bp;
    loop {
        if bp == 0 {
            return (frames, UnwindEnd::Root);
        }
        let (Some(saved), Some(ret)) = (word(bp), bp.checked_add(8).and_then(word)) else {
            return (frames, UnwindEnd::Truncated);
        };
        if ret == 0 {
            return (frames, UnwindEnd::Root);
        }
        frames.push(ret);
        if frames.len() >= MAX_FRAMES || (saved != 0 && saved <= bp) {
            return (frames, UnwindEnd::Truncated);
        }
        bp = saved;
    }
}

/// Whether `ip` lies in the page the kernel maps for uprobes (`[uprobes]`:
/// the uretprobe trampoline and single-step slots), at the top of an
/// x86_64 process's address space (`TASK_SIZE - PAGE_SIZE`).
pub fn is_uprobe_trampoline(ip: u64) -> bool {
    (0x7fff_ffff_e000..0x7fff_ffff_f000).contains(&ip)
}

/// Whether the functions of `exe` keep frame pointers: most of the
/// functions compiled with the binary's own flags (its crates and their
/// dependencies, not the precompiled std) start with `push %rbp;
/// mov %rsp,%rbp` (after an optional `endbr64`). Stripped binaries answer
/// `false` (unwinding from `.eh_frame` is the safe choice then).
pub fn has_frame_pointers(exe: &Path) -> bool {
    use object::ObjectSymbol as _;
    let Ok(file) = crate::safe_file::open_regular(exe) else { return false };
    // SAFETY: read-only mapping, as above.
    let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else { return false };
    let Ok(elf) = object::File::parse(&map[..]) else { return false };
    let Some(text) = elf.section_by_name(".text") else { return false };
    let Ok(text_data) = text.data() else { return false };
    let (mut checked, mut with_fp) = (0u32, 0u32);
    for sym in elf.symbols() {
        if sym.kind() != object::SymbolKind::Text || sym.size() < 16 {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if is_precompiled_runtime(name) {
            continue;
        }
        let Some(start) = sym.address().checked_sub(text.address()) else { continue };
        let Some(code) = text_data.get(start as usize..) else { continue };
        let code = code.strip_prefix(&[0xf3, 0x0f, 0x1e, 0xfa][..]).unwrap_or(code); // endbr64
        checked += 1;
        if code.starts_with(&[0x55, 0x48, 0x89, 0xe5]) {
            with_fp += 1;
        }
        if checked >= 400 {
            break;
        }
    }
    checked >= 3 && with_fp * 10 >= checked * 8
}

/// Functions that may come from the precompiled standard library (or its
/// private dependencies), which never has frame pointers whatever the
/// user's flags. Conservative: any symbol whose name mentions one of those
/// crates is left out, so generic std code instantiated in the user's crate
/// is skipped too; what remains is certainly compiled with the user's flags.
fn is_precompiled_runtime(symbol: &str) -> bool {
    const STD_CRATES: &[&str] = &[
        "std", "core", "alloc", "hashbrown", "addr2line", "gimli", "miniz_oxide", "object", "rustc_demangle",
        "std_detect", "adler", "adler2", "panic_unwind", "panic_abort", "compiler_builtins", "memchr", "unwind",
        "__rustc",
    ];
    let Ok(demangled) = rustc_demangle::try_demangle(symbol) else {
        // C symbols (libc start files, compiler runtime) are not ours either.
        return true;
    };
    let name = format!("{demangled:#}");
    name.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .filter_map(|path| path.split_once("::").map(|(krate, _)| krate))
        .any(|krate| STD_CRATES.contains(&krate))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Up to 16 KiB of our own stack above `sp`, within its mapping (as the
    /// kernel side copies, stopping at the mapping's end), our maps, and an
    /// unwinder with our objects' tables.
    fn own_stack_and_unwinder(sp: u64) -> (Vec<u8>, MapsSnapshot, ProcessUnwinder) {
        let maps_text = std::fs::read_to_string("/proc/self/maps").unwrap();
        let stack_end = maps_text
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.split_once('-'))
            .map(|(a, b)| (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap()))
            .find(|(a, b)| (*a..*b).contains(&sp))
            .map(|(_, b)| b)
            .expect("sp is in a mapping");
        let len = (stack_end - sp).min(16 * 1024) as usize;
        // SAFETY: `len` bytes from sp lie inside our own live stack mapping.
        let stack: Vec<u8> = unsafe { std::slice::from_raw_parts(sp as *const u8, len) }.to_vec();
        let mut maps = MapsSnapshot::default();
        maps.refresh(std::process::id()).unwrap();
        let mut tables = TableCache::default();
        let mut unwinder = ProcessUnwinder::new();
        unwinder.sync_modules(&maps, &mut tables);
        (stack, maps, unwinder)
    }

    #[test]
    fn the_agent_itself_is_unwound_through_its_own_tables() {
        // Unwind our own current stack: registers from inline asm, the stack
        // copied from memory, tables from /proc/self/maps.
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: reads three registers.
        unsafe {
            std::arch::asm!("lea {ip}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp", ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp);
        }
        let (stack, maps, mut unwinder) = own_stack_and_unwinder(sp);
        let (frames, end) = unwinder.unwind(ip, sp, bp, &stack);
        assert!(frames.len() >= 5, "unwound only {frames:x?}");
        // The test thread's stack is unwound up to its root (clone3).
        assert_eq!(end, UnwindEnd::Root, "stopped early: {frames:x?}");
        // Every return address lies in an executable mapping of ours.
        for f in &frames {
            assert!(maps.find(*f).is_some() || maps.find(f - 1).is_some(), "{f:#x} is not code");
        }
    }

    #[test]
    fn collectors_sharing_an_unwinder_parse_each_object_once() {
        let mut maps = MapsSnapshot::default();
        maps.refresh(std::process::id()).unwrap();
        let cpu = SharedUnwinder::new(std::process::id());
        let memory = cpu.clone();
        cpu.warm_up(&maps);
        memory.warm_up(&maps);
        let parses = memory.table_parses();
        assert!(parses.iter().any(|(path, _)| maps.iter().any(|m| &m.path == path)), "{parses:?}");
        assert!(parses.iter().all(|(_, n)| *n == 1), "{parses:?}");
    }

    #[test]
    fn a_sample_in_the_uretprobe_trampoline_resumes_at_the_caller() {
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: reads three registers.
        unsafe {
            std::arch::asm!("lea {ip}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp", ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp);
        }
        let (stack, _maps, mut unwinder) = own_stack_and_unwinder(sp);
        let (plain, end) = unwinder.unwind(ip, sp, bp, &stack);
        assert_eq!(end, UnwindEnd::Root);
        // As if a probed function had just returned to `ip` through the
        // trampoline, which pushed rax (holding the return address the
        // kernel wrote back), rcx and r11, and made its syscall.
        let trampoline = 0x7fff_ffff_e00d;
        let mut pushed: Vec<u8> = [0x246u64, 0, ip].iter().flat_map(|w| w.to_le_bytes()).collect();
        pushed.extend_from_slice(&stack);
        let (frames, end) = unwinder.unwind(trampoline, sp - 24, bp, &pushed);
        assert_eq!(end, UnwindEnd::Root);
        assert_eq!(frames[0], trampoline);
        assert_eq!(frames[1..], plain[..], "the caller's stack, whole");
    }

    #[test]
    fn code_described_only_in_debug_frame_is_found_and_merged() {
        // A CIE, then FDEs for 0x1000..0x1040 and 0x2000..0x2080.
        let mut data = Vec::new();
        data.extend_from_slice(&12u32.to_le_bytes());
        data.extend_from_slice(&0xffff_ffffu32.to_le_bytes());
        data.extend_from_slice(&[1, 0, 1, 0x78, 16, 0, 0, 0]);
        for (start, len) in [(0x1000u64, 0x40u64), (0x2000, 0x80)] {
            data.extend_from_slice(&20u32.to_le_bytes());
            data.extend_from_slice(&0u32.to_le_bytes());
            data.extend_from_slice(&start.to_le_bytes());
            data.extend_from_slice(&len.to_le_bytes());
        }
        assert_eq!(debug_frame_fdes(&data), vec![(0x1000, 0x1040), (0x2000, 0x2080)]);
        // Rust code (.eh_frame) at 0x500 and 0x3000: the two C functions
        // have no .eh_frame function between them, one range.
        let fdes = [(0x500, 0x600), (0x1000, 0x1040), (0x2000, 0x2080), (0x3000, 0x3100)];
        assert_eq!(debug_frame_only_ranges(&[0x500, 0x3000], &fdes), vec![0x1000..0x2080]);
        // One between them: two ranges.
        assert_eq!(debug_frame_only_ranges(&[0x500, 0x1800, 0x3000], &fdes), vec![0x1000..0x1040, 0x2000..0x2080]);
    }

    #[test]
    fn bias_uses_the_segment_mapped_from_the_page_aligned_offset() {
        // rustc/lld PIE layout: R segment [0, 0x18240), R+E from 0x18240 at
        // vaddr 0x19240; the kernel maps the latter from offset 0x18000.
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        let tables = ObjectTables {
            // SAFETY: our own executable, mapped read-only.
            map: Arc::new(unsafe { memmap2::Mmap::map(&exe) }.unwrap()),
            eh_frame: None,
            eh_frame_hdr: None,
            debug_frame: None,
            text: None,
            segments: vec![(0, 0, 0x18240), (0x18240, 0x19240, 0x44510), (0x5c750, 0x5e750, 0x2ec8)],
            debug_frame_only: Vec::new(),
        };
        let mapping = Mapping { start: 0x55e1_49e8_8000, end: 0x55e1_49ec_d000, offset: 0x18000, path: "/x".into() };
        assert_eq!(tables.bias(&mapping), Some(0x55e1_49e8_8000 - 0x19000));
        let first = Mapping { start: 0x55e1_49e6_f000, end: 0x55e1_49e8_8000, offset: 0, path: "/x".into() };
        assert_eq!(tables.bias(&first), Some(0x55e1_49e6_f000));
    }

    #[test]
    fn std_symbols_are_not_counted_for_frame_pointer_detection() {
        assert!(is_precompiled_runtime("_ZN3std2rt19lang_start_internal17h0123456789abcdefE"));
        assert!(is_precompiled_runtime("_ZN4core3fmt5write17h0123456789abcdefE"));
        assert!(is_precompiled_runtime("memcpy"));
        assert!(!is_precompiled_runtime("_ZN12unwind_chain3hot17h0123456789abcdefE"));
        // `<&str as core::fmt::Display>::fmt`, instantiated in std.
        assert!(is_precompiled_runtime("_RNvXs1i_NtCsgEmfK2I1SDS_4core3fmtReNtB6_7Display3fmtCsjrHSEGnQ3l9_3std"));
    }

    #[test]
    fn a_frame_pointer_chain_is_walked_through_the_copy() {
        // sp = 0x1000; frames at 0x1010 (-> 0x1030) and 0x1030 (-> 0, root).
        let sp = 0x1000u64;
        let mut stack = vec![0u8; 0x60];
        let mut put = |addr: u64, value: u64| {
            let at = (addr - sp) as usize;
            stack[at..at + 8].copy_from_slice(&value.to_le_bytes());
        };
        put(0x1010, 0x1030);
        put(0x1018, 0xaaaa);
        put(0x1030, 0);
        put(0x1038, 0xbbbb);
        assert_eq!(frame_pointer_walk(0x4444, sp, 0x1010, &stack), (vec![0x4444, 0xaaaa, 0xbbbb], UnwindEnd::Root));
        // A frame pointer outside the copy stops the walk early.
        assert_eq!(frame_pointer_walk(0x4444, sp, 0x9000, &stack), (vec![0x4444], UnwindEnd::Truncated));
        // A chain that does not move up the stack is cut.
        let mut looping = stack.clone();
        looping[0x10..0x18].copy_from_slice(&0x1010u64.to_le_bytes());
        assert_eq!(frame_pointer_walk(0x4444, sp, 0x1010, &looping).1, UnwindEnd::Truncated);
    }

    #[test]
    fn a_missing_binary_has_no_frame_pointers() {
        assert!(!has_frame_pointers(Path::new("/nonexistent")));
    }
}
