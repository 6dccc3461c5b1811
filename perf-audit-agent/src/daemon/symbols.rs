//! Symbolization for a process that never exits: the same blazesym logic
//! as the one-shot audit (`crate::symbolize`: DWARF, inlined frames,
//! file:line), with caches that make a window cheap when its addresses were
//! seen before, and limits that keep memory bounded whatever runs on the
//! node:
//!
//! - a window flush symbolizes in one pass ([`WindowSymbolizer::prepare`])
//!   before any process's profile is built: the addresses of every process
//!   not cached yet, grouped by object file, so that each file (a shared
//!   libc, a large binary run by many processes) is opened and parsed once
//!   per flush, and the kernel's in one call (blazesym parses
//!   `/proc/kallsyms` each time a new symbolizer meets kernel addresses:
//!   ~50 ms for its 120k symbols);
//! - resolved frames are cached per (object file, file offset) across
//!   flushes, the file named by path, size and modification time (a binary
//!   rebuilt or redeployed at the same path is another object). The cache
//!   has two generations: when the current one reaches half of
//!   [`MAX_CACHED_ADDRESSES`] or of [`MAX_CACHED_BYTES`], the previous one
//!   is dropped and the current one becomes it; a hit in the previous one
//!   moves the entry back. What every window uses stays cached; what the
//!   node stopped running ages out (kernel addresses likewise, up to
//!   [`MAX_CACHED_KERNEL_ADDRESSES`]);
//! - blazesym keeps every object it parsed; the daemon releases them after
//!   each window ([`WindowSymbolizer::release_objects`]), within one window
//!   after [`MAX_OPEN_OBJECTS`] distinct files or before the open files
//!   would pass [`MAX_OPEN_BYTES`] (blazesym maps each whole and reads its
//!   DWARF: a node's debug builds are hundreds of MiB each), and a large
//!   file ([`LARGE_OBJECT_BYTES`]) as soon as its addresses are resolved,
//!   [`LARGE_OBJECT_BATCH`] at a time with its pages dropped in between;
//! - a file of [`SYMTAB_ONLY_BYTES`] or more is read for its symbol table
//!   only (its DWARF is what made the flush's peak pass 64 MiB).

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use blazesym::{
    MaybeDefault,
    symbolize::{
        Input, Symbolized, Symbolizer,
        source::{Kernel, Source},
    },
};

use super::{
    collector::StackKey,
    model::{ProcessLabels, ProcessWindow, StackValues, WindowKind, WindowLocation, WindowStack},
};
use crate::{
    elf_worker::{self, ElfError, ElfJob, Lookup},
    profile::{Frame, Origin},
    symbolize::{frames_of, module_name, unknown_frame},
    target::MapsSnapshot,
};

/// User addresses cached, both generations together.
pub const MAX_CACHED_ADDRESSES: usize = 200_000;
/// The user frame cache is also bounded in bytes (names and paths
/// estimated), both generations together: a system-wide daemon caches the
/// frames of every process on the node, and Rust names run to hundreds of
/// bytes, so the count alone let it grow the daemon's heap by 20 MiB in two
/// windows (`cargo xtask bench daemon`); 16 MiB keeps the daemon under its
/// 64 MiB budget with the ring (8 MiB mapped), its binary and the unwind
/// tables.
pub const MAX_CACHED_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_CACHED_KERNEL_ADDRESSES: usize = 50_000;
pub const MAX_OPEN_OBJECTS: usize = 64;
/// Sum of the sizes of the files blazesym may hold open at once: opening
/// one that does not fit releases the others first. blazesym maps each
/// file whole and reads its symbol tables and DWARF, and the pages it reads
/// count in the daemon's RSS until the file is released. Measured without
/// a bound: 272 MiB file-backed and 87 MiB anonymous RSS during a window
/// flush on a build machine running several debug builds (`cargo xtask
/// bench daemon`); with a 64 MiB bound on the large files only, a flush
/// still peaked at 105 MiB (VmHWM; the 5 s samples had missed it).
pub const MAX_OPEN_BYTES: u64 = 16 * 1024 * 1024;
/// A file at least this large is released as soon as its addresses are
/// resolved: a flush resolves each file once, so nothing would use it
/// again before the next flush.
pub const LARGE_OBJECT_BYTES: u64 = 8 * 1024 * 1024;
/// A large file's addresses are looked up this many at a time, its pages
/// dropped from the daemon's RSS in between ([`release_whole_file_pages`]):
/// blazesym keeps what it parsed (in the heap), but every page of the file
/// it read stays resident while the file is mapped. Measured on a build
/// machine (`VmHWM` during flushes): 105-146 MiB without, 65-71 MiB with.
/// What remains is the first lookup in a file with large DWARF: opening it
/// reads every compilation unit's header, and the kernel maps 64 KiB
/// around each fault (fault-around), ~35 MiB for the daemon's own 86 MiB
/// binary whatever the batch (1 and 8 measured the same).
pub const LARGE_OBJECT_BATCH: usize = 8;
/// Files at least this large are symbolized from their ELF symbol table
/// only: function names, no file:line, no inlined frames. Such a file is
/// mostly DWARF (a release binary built with `debug = true`: the demo's is
/// 70 MiB, the agent's 87 MiB), and blazesym's first lookup in its debug
/// info reads every compilation unit's header: ~35 MiB resident, which
/// put the daemon's true peak (VmHWM) at 65-73 MiB during a window flush,
/// past its 64 MiB budget. The fleet profile needs names and callers; the
/// audit (`perf-audit-agent --pid`) keeps file:line for every file.
pub const SYMTAB_ONLY_BYTES: u64 = 32 * 1024 * 1024;

/// An object file as the cache knows it: a binary replaced at its path
/// (rebuilt, redeployed) has another size or modification time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileId {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

type UserKey = (Arc<FileId>, u64);

/// A map bounded by entries and estimated bytes in two generations (see
/// the module's documentation): inserting into a full current generation
/// drops the previous one; a hit in the previous one moves the entry back.
struct Generations<K, V> {
    current: HashMap<K, (V, usize)>,
    previous: HashMap<K, (V, usize)>,
    current_bytes: usize,
    previous_bytes: usize,
    /// Per generation.
    max_entries: usize,
    max_bytes: usize,
    /// Previous generations dropped.
    rotations: u64,
}

impl<K: Hash + Eq, V: Clone> Generations<K, V> {
    fn new(max_entries: usize, max_bytes: usize) -> Self {
        Generations {
            current: HashMap::new(),
            previous: HashMap::new(),
            current_bytes: 0,
            previous_bytes: 0,
            max_entries: (max_entries / 2).max(1),
            max_bytes: (max_bytes / 2).max(1),
            rotations: 0,
        }
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    fn bytes(&self) -> usize {
        self.current_bytes + self.previous_bytes
    }

    /// The cached value, kept for the next generation.
    fn get(&mut self, key: &K) -> Option<V> {
        if let Some((value, _)) = self.current.get(key) {
            return Some(value.clone());
        }
        let (k, (value, bytes)) = self.previous.remove_entry(key)?;
        self.previous_bytes -= bytes;
        self.insert(k, value.clone(), bytes);
        Some(value)
    }

    fn insert(&mut self, key: K, value: V, bytes: usize) {
        if self.current.len() >= self.max_entries || self.current_bytes + bytes > self.max_bytes {
            self.previous = std::mem::take(&mut self.current);
            self.previous_bytes = std::mem::replace(&mut self.current_bytes, 0);
            self.rotations += 1;
        }
        self.current_bytes += bytes;
        if let Some((_, old)) = self.current.insert(key, (value, bytes)) {
            self.current_bytes -= old;
        }
    }
}

pub struct WindowSymbolizer {
    inner: Symbolizer,
    /// The files `inner` has open.
    objects: HashSet<PathBuf>,
    /// Sum of the sizes of `objects`.
    open_bytes: u64,
    /// Each path's identity, read once per [`Self::prepare`].
    files: HashMap<PathBuf, Option<Arc<FileId>>>,
    user: Generations<UserKey, Arc<[Frame]>>,
    kernel: Generations<u64, Frame>,
    /// Times blazesym's objects were released by [`MAX_OPEN_OBJECTS`].
    releases: u64,
    /// Object files symbolized (each one opened, or found open, and
    /// searched for the addresses not cached).
    pub objects_symbolized: u64,
    /// Files whose symbolization timed out (a read that never returned):
    /// not tried again, their frames stay `[object]`.
    pub timed_out: HashSet<PathBuf>,
}

impl Default for WindowSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

fn symbolizer() -> Symbolizer {
    Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .enable_auto_reload(false)
        .build()
}

impl WindowSymbolizer {
    pub fn new() -> Self {
        WindowSymbolizer {
            inner: symbolizer(),
            objects: HashSet::new(),
            open_bytes: 0,
            files: HashMap::new(),
            user: Generations::new(MAX_CACHED_ADDRESSES, MAX_CACHED_BYTES),
            kernel: Generations::new(MAX_CACHED_KERNEL_ADDRESSES, usize::MAX),
            releases: 0,
            objects_symbolized: 0,
            timed_out: HashSet::new(),
        }
    }

    /// Releases what blazesym holds (mapped objects, parsed DWARF: hundreds
    /// of MiB for a big binary) once a window is symbolized, and gives the
    /// freed heap back to the OS. The frame caches stay, so the next window
    /// opens an object only for addresses never seen before. (Keeping the
    /// objects the last window used open instead saved ~0.05 CPU-seconds
    /// per flush and held 135-140 MiB between flushes on a build machine:
    /// `cargo xtask bench daemon`, ARCHITECTURE.md.)
    pub fn release_objects(&mut self) {
        if self.objects.is_empty() {
            return;
        }
        self.inner = symbolizer();
        self.objects.clear();
        self.open_bytes = 0;
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim has no preconditions.
        unsafe {
            libc::malloc_trim(0);
        }
    }


    /// Entries cached now (for the memory-bound tests and metrics).
    pub fn cached(&self) -> usize {
        self.user.len() + self.kernel.len()
    }

    /// Estimated bytes of the user frame cache.
    pub fn cached_bytes(&self) -> usize {
        self.user.bytes()
    }

    /// Times a cache generation or blazesym's objects were dropped by a
    /// limit.
    pub fn resets(&self) -> u64 {
        self.user.rotations + self.kernel.rotations + self.releases
    }

    /// Symbolizes, in one pass, every address of `stacks` (each with its
    /// process's maps) not cached yet: the kernel's in one call, the user
    /// ones grouped by object file, each file once, `between` called
    /// before each file (the daemon drains its ring there). The windows
    /// built next ([`Self::window`]) then find their frames cached. File
    /// identities are read again by each call: a binary replaced since the
    /// last one is symbolized anew.
    pub fn prepare<'a>(
        &mut self,
        stacks: impl IntoIterator<Item = (&'a MapsSnapshot, &'a StackKey)>,
        between: &mut dyn FnMut(),
    ) {
        self.files.clear();
        self.resolve(stacks, between);
    }

    /// The symbolized window of one process (`kind`: whether off-CPU time
    /// was recorded, so that its sample type is present even when zero).
    pub fn window<'a>(
        &mut self,
        process: ProcessLabels,
        maps: &MapsSnapshot,
        stacks: impl IntoIterator<Item = (&'a StackKey, &'a StackValues)>,
        (start, end): (SystemTime, SystemTime),
        frequency_hz: u64,
        kind: WindowKind,
    ) -> ProcessWindow {
        let stacks: Vec<(&StackKey, StackValues)> = stacks.into_iter().map(|(k, v)| (k, *v)).collect();
        // Nothing to do after `prepare` (unless a cache generation was
        // dropped meanwhile).
        self.resolve(stacks.iter().map(|(k, _)| (maps, *k)), &mut || ());

        let mut window = ProcessWindow {
            kind,
            process,
            start,
            end,
            frequency_hz,
            mappings: Vec::new(),
            locations: Vec::new(),
            stacks: Vec::with_capacity(stacks.len()),
        };
        let mut mapping_index: HashMap<u64, usize> = HashMap::new();
        let mut user_locations: HashMap<u64, usize> = HashMap::new();
        let mut kernel_locations: HashMap<u64, usize> = HashMap::new();
        for (key, values) in stacks {
            let mut locations = Vec::with_capacity(key.user.len() + key.kernel.len());
            for (i, addr) in key.kernel.iter().enumerate() {
                let addr = lookup(i, *addr);
                let loc = match kernel_locations.get(&addr) {
                    Some(loc) => *loc,
                    None => {
                        let frame = self.kernel.get(&addr).unwrap_or_else(|| kernel_frame("[kernel]".into()));
                        window.locations.push(WindowLocation { address: addr, mapping: None, frames: vec![frame] });
                        kernel_locations.insert(addr, window.locations.len() - 1);
                        window.locations.len() - 1
                    }
                };
                locations.push(loc);
            }
            for (i, addr) in key.user.iter().enumerate() {
                let addr = lookup(i, *addr);
                let loc = match user_locations.get(&addr) {
                    Some(loc) => *loc,
                    None => {
                        let (mapping, frames) = match maps.find(addr) {
                            Some(m) => {
                                let idx = *mapping_index.entry(m.start).or_insert_with(|| {
                                    window.mappings.push(m.clone());
                                    window.mappings.len() - 1
                                });
                                let frames = self
                                    .file(&m.path)
                                    .and_then(|id| self.user.get(&(id, addr - m.start + m.offset)))
                                    .map(|f| f.to_vec())
                                    .unwrap_or_else(|| vec![unknown_frame(&module_name(&m.path))]);
                                (Some(idx), frames)
                            }
                            None => (None, vec![unknown_frame(&format!("{addr:#x}"))]),
                        };
                        window.locations.push(WindowLocation { address: addr, mapping, frames });
                        user_locations.insert(addr, window.locations.len() - 1);
                        window.locations.len() - 1
                    }
                };
                locations.push(loc);
            }
            window.stacks.push(WindowStack {
                thread: key.thread_name(),
                locations,
                count: values.samples,
                off_cpu_ns: values.off_cpu_ns,
            });
        }
        // Deterministic order for the encoders.
        window.stacks.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| b.off_cpu_ns.cmp(&a.off_cpu_ns))
                .then_with(|| a.locations.cmp(&b.locations))
                .then_with(|| a.thread.cmp(&b.thread))
        });
        window
    }

    /// The identity of the file at `path` (None when it cannot be read),
    /// read once per [`Self::prepare`].
    fn file(&mut self, path: &Path) -> Option<Arc<FileId>> {
        if let Some(id) = self.files.get(path) {
            return id.clone();
        }
        let id = std::fs::metadata(path).ok().map(|meta| {
            Arc::new(FileId { path: path.to_path_buf(), len: meta.len(), modified: meta.modified().ok() })
        });
        self.files.insert(path.to_path_buf(), id.clone());
        id
    }

    /// Symbolizes the addresses of `stacks` not cached, file by file.
    fn resolve<'a>(&mut self, stacks: impl IntoIterator<Item = (&'a MapsSnapshot, &'a StackKey)>, between: &mut dyn FnMut()) {
        let mut by_file: HashMap<Arc<FileId>, HashSet<u64>> = HashMap::new();
        let mut kernel_missing: HashSet<u64> = HashSet::new();
        let mut seen: HashSet<(*const MapsSnapshot, u64)> = HashSet::new();
        for (maps, key) in stacks {
            for (i, addr) in key.kernel.iter().enumerate() {
                let addr = lookup(i, *addr);
                if !kernel_missing.contains(&addr) && self.kernel.get(&addr).is_none() {
                    kernel_missing.insert(addr);
                }
            }
            for (i, addr) in key.user.iter().enumerate() {
                let addr = lookup(i, *addr);
                // The same address of the same process: looked up once.
                if !seen.insert((maps as *const MapsSnapshot, addr)) {
                    continue;
                }
                let Some(m) = maps.find(addr) else { continue };
                let offset = addr - m.start + m.offset;
                // No file to read: `window` names the frame after the module.
                let Some(id) = self.file(&m.path) else { continue };
                if self.user.get(&(id.clone(), offset)).is_none() {
                    by_file.entry(id).or_default().insert(offset);
                }
            }
        }
        if !kernel_missing.is_empty() {
            let mut missing: Vec<u64> = kernel_missing.into_iter().collect();
            missing.sort_unstable();
            self.resolve_kernel(&missing);
        }
        let mut files: Vec<(Arc<FileId>, HashSet<u64>)> = by_file.into_iter().collect();
        files.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        for (id, offsets) in files {
            between();
            let mut offsets: Vec<u64> = offsets.into_iter().collect();
            offsets.sort_unstable();
            self.resolve_file(&id, &offsets);
        }
    }

    fn resolve_file(&mut self, id: &Arc<FileId>, offsets: &[u64]) {
        let path = &id.path;
        if !self.objects.contains(path) {
            if self.objects.len() >= MAX_OPEN_OBJECTS {
                self.release_objects();
                self.releases += 1;
            }
            if self.open_bytes + id.len > MAX_OPEN_BYTES {
                self.release_objects();
            }
            self.open_bytes += id.len;
            self.objects.insert(path.clone());
        }
        self.objects_symbolized += 1;
        let module = module_name(path);
        // Symbols are cached per file for every process: a program's
        // own code is in executables, not in shared libraries.
        let owner_object = !(module.contains(".so") || module.starts_with("ld-linux"));
        // Each batch runs on a worker with a deadline (a stuck read costs
        // this file's names, not the daemon), with the DWARF only when
        // blazesym may read it (safe_file::dwarf_hazard).
        let unknown: Arc<[Frame]> = vec![unknown_frame(&module)].into();
        let hazard = crate::safe_file::dwarf_hazard(path);
        let dwarf = id.len < SYMTAB_ONLY_BYTES && hazard.is_none();
        let readable = crate::safe_file::open_regular(path).is_ok();
        let large = id.len >= LARGE_OBJECT_BYTES;
        let batches = if large { offsets.chunks(LARGE_OBJECT_BATCH) } else { offsets.chunks(offsets.len().max(1)) };
        // One worker for the file's batches (its symbolizer keeps the file
        // parsed between them); dropped with it at the end.
        let mut worker = elf_worker::ElfWorker::new();
        for (i, batch) in batches.enumerate() {
            if large && i > 0 {
                release_whole_file_pages();
            }
            let job = ElfJob { path: path.clone(), dwarf, lookup: Lookup::FileOffset, addrs: batch.to_vec() };
            let answer = if readable && !self.timed_out.contains(path) {
                let module = module.clone();
                worker.symbolize(job, elf_worker::OBJECT_DEADLINE, move |sym| frames_of(sym, &module, owner_object))
            } else {
                Err(ElfError::Failed(String::new()))
            };
            match answer {
                Ok(answer) => {
                    for (offset, frames) in batch.iter().zip(answer.items) {
                        let frames: Arc<[Frame]> = frames.map_or_else(|| unknown.clone(), Into::into);
                        let bytes = entry_bytes(&frames);
                        self.user.insert((id.clone(), *offset), frames, bytes);
                    }
                }
                Err(e) => {
                    if let ElfError::TimedOut(_) = e {
                        eprintln!("perf-audit: symbolizing {} timed out ({e}); its frames stay [{module}]", path.display());
                        self.timed_out.insert(path.clone());
                    }
                    let bytes = entry_bytes(&unknown);
                    for offset in batch {
                        self.user.insert((id.clone(), *offset), unknown.clone(), bytes);
                    }
                }
            }
        }
        if large {
            self.release_objects();
        }
    }

    fn resolve_kernel(&mut self, missing: &[u64]) {
        let source = Source::Kernel(Kernel { vmlinux: MaybeDefault::None, ..Default::default() });
        let results = self.inner.symbolize(&source, Input::AbsAddr(missing)).unwrap_or_default();
        for (i, addr) in missing.iter().enumerate() {
            let name = match results.get(i) {
                Some(Symbolized::Sym(s)) => s.name.to_string(),
                _ => "[kernel]".to_string(),
            };
            self.kernel.insert(*addr, kernel_frame(name), 0);
        }
    }
}

/// Drops this process's resident pages of every file it maps whole and
/// read-only (blazesym and memmap2 map them shared): blazesym's open objects (and their separate debug
/// files) and the unwind tables' objects (`unwind::TableCache`, which does
/// the same every drain). Their pages are clean copies of the page cache:
/// the next read faults them back from it, nothing is lost. The usual
/// caveat of every profiler reading binaries applies: a file truncated in
/// place meanwhile could fault.
fn release_whole_file_pages() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else { return };
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some("r--p" | "r--s"), Some(offset), Some(_dev), Some(_inode)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = fields.collect::<Vec<_>>().join(" ");
        if !path.starts_with('/') || u64::from_str_radix(offset, 16) != Ok(0) {
            continue;
        }
        let Some((Ok(start), Ok(end))) =
            range.split_once('-').map(|(a, b)| (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)))
        else {
            continue;
        };
        // The whole file (a process's own ELF segments are mapped in parts).
        let whole = std::fs::metadata(&path).is_ok_and(|m| m.len().div_ceil(4096) * 4096 == end - start);
        if whole {
            // SAFETY: a read-only file mapping (never written through): after
            // DONTNEED its pages are read again from the file, so no data is
            // lost.
            unsafe {
                libc::madvise(start as *mut libc::c_void, (end - start) as usize, libc::MADV_DONTNEED);
            }
        }
    }
}

/// The address looked up for the `i`th frame of a stack (leaf first): the
/// sampled instruction, or the byte before a return address (inside its
/// call).
fn lookup(i: usize, addr: u64) -> u64 {
    if i == 0 { addr } else { addr.saturating_sub(1) }
}

/// Estimated heap bytes of one cached entry: the frames' names and files,
/// and the map's and allocations' overhead (the key's file is shared by
/// all of its entries).
fn entry_bytes(frames: &[Frame]) -> usize {
    96 + frames.iter().map(|f| 64 + f.function.len() + f.file.as_deref().map_or(0, str::len)).sum::<usize>()
}

fn kernel_frame(function: String) -> Frame {
    Frame { function, file: None, line: None, origin: Origin::Kernel, inlined: false }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_keep_what_is_used_and_stay_bounded() {
        // 4 entries at most, 2 per generation.
        let mut cache: Generations<u32, u32> = Generations::new(4, usize::MAX);
        for k in 0..2 {
            cache.insert(k, k, 10);
        }
        assert_eq!(cache.rotations, 0);
        cache.insert(2, 2, 10); // 0, 1 become the previous generation
        assert_eq!((cache.rotations, cache.len(), cache.bytes()), (1, 3, 30));
        assert_eq!(cache.get(&0), Some(0)); // moved back into the current one
        cache.insert(3, 3, 10); // rotates again: 1 was not used, it is dropped
        assert_eq!(cache.get(&1), None);
        assert_eq!((cache.get(&0), cache.get(&2), cache.get(&3)), (Some(0), Some(2), Some(3)));
        for k in 10..100 {
            cache.insert(k, k, 10);
            assert!(cache.len() <= 4 && cache.bytes() <= 40);
        }
        // Bounded by bytes as well.
        let mut cache: Generations<u32, u32> = Generations::new(usize::MAX, 100);
        for k in 0..100 {
            cache.insert(k, k, 20);
            assert!(cache.bytes() <= 100, "{} bytes", cache.bytes());
        }
    }

    #[inline(never)]
    fn a_function_to_find() -> u64 {
        std::hint::black_box(42)
    }

    #[test]
    fn a_flush_symbolizes_each_file_once_and_the_next_from_the_cache() {
        let mut maps = MapsSnapshot::default();
        maps.refresh(std::process::id()).unwrap();
        let addr = a_function_to_find as *const () as u64;
        let exe = maps.find(addr).expect("the test's own code is mapped").path.clone();
        // Two "processes" (the same maps) with stacks through the test
        // binary: one pass, one file.
        let key = |a: u64| StackKey { comm: [0; 16], user: vec![a, a + 1].into(), kernel: Vec::new().into() };
        let (k1, k2) = (key(addr), key(addr + 1));
        let mut symbolizer = WindowSymbolizer::new();
        symbolizer.prepare([(&maps, &k1), (&maps, &k2)], &mut || ());
        assert_eq!(symbolizer.objects_symbolized, 1, "{exe:?} searched once for both stacks");
        let values = StackValues::samples(1);
        let labels = ProcessLabels { pid: 1, name: "t".into(), exe: None, container_id: None, pod_uid: None };
        let window = symbolizer.window(labels.clone(), &maps, [(&k1, &values)], (SystemTime::now(), SystemTime::now()), 19, WindowKind::Cpu);
        assert_eq!(symbolizer.objects_symbolized, 1, "the window found its frames cached");
        let leaf = &window.locations[window.stacks[0].locations[0]].frames;
        assert!(leaf.iter().any(|f| f.function.contains("a_function_to_find")), "{leaf:?}");
        symbolizer.release_objects();
        // The next flush: nothing new, nothing opened.
        symbolizer.prepare([(&maps, &k2)], &mut || ());
        assert_eq!(symbolizer.objects_symbolized, 1);
        assert_eq!(symbolizer.cached(), 2, "the two addresses looked up");
    }
}
