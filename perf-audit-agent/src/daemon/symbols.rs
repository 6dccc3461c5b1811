//! Symbolization for a process that never exits: the same blazesym logic
//! as the one-shot audit (`crate::symbolize`: DWARF, inlined frames,
//! file:line), with caches that make a window cheap when its addresses were
//! seen before, and limits that keep memory bounded whatever runs on the
//! node:
//!
//! - resolved frames are cached per (object file, file offset) up to
//!   [`MAX_CACHED_ADDRESSES`] (and kernel addresses up to
//!   [`MAX_CACHED_KERNEL_ADDRESSES`]); a full cache is cleared, not grown;
//! - blazesym keeps every object it parsed; the daemon releases them after
//!   each window ([`WindowSymbolizer::release_objects`]), and within one
//!   window after [`MAX_OPEN_OBJECTS`] distinct files or before the open
//!   files would pass [`MAX_OPEN_BYTES`] (blazesym maps each whole and
//!   reads its DWARF: a node's debug builds are hundreds of MiB each).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::SystemTime,
};

use blazesym::{
    MaybeDefault,
    symbolize::{
        Input, Symbolized, Symbolizer,
        source::{Elf, Kernel, Source},
    },
};

use super::{
    collector::StackKey,
    model::{ProcessLabels, ProcessWindow, StackValues, WindowKind, WindowLocation, WindowStack},
};
use crate::{
    profile::{Frame, Origin},
    symbolize::{frames_of, module_name, unknown_frame},
    target::MapsSnapshot,
};

pub const MAX_CACHED_ADDRESSES: usize = 200_000;
/// The user frame cache is also cleared past this many bytes (names and
/// paths estimated): a system-wide daemon caches the frames of every
/// process on the node, and Rust names run to hundreds of bytes, so the
/// count alone let it grow the daemon's heap by 20 MiB in two windows
/// (`cargo xtask bench daemon`); 16 MiB keeps the daemon under its 64 MiB
/// budget with the ring (8 MiB mapped), its binary and the unwind tables.
pub const MAX_CACHED_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_CACHED_KERNEL_ADDRESSES: usize = 50_000;
pub const MAX_OPEN_OBJECTS: usize = 64;
/// Sum of the sizes of the large files (from [`LARGE_OBJECT_BYTES`])
/// blazesym may hold open at once: opening one that does not fit releases
/// the others first (one larger than this is still opened, alone). Small
/// files (shared libraries) never trigger a release, or every process
/// would re-open its libc after a large binary. Measured without it: 272
/// MiB file-backed and 87 MiB anonymous RSS during a window flush on a
/// build machine running several debug builds (`cargo xtask bench daemon`).
pub const MAX_OPEN_BYTES: u64 = 64 * 1024 * 1024;
pub const LARGE_OBJECT_BYTES: u64 = 8 * 1024 * 1024;

pub struct WindowSymbolizer {
    inner: Symbolizer,
    objects: HashSet<PathBuf>,
    /// Sum of the sizes of `objects`.
    open_bytes: u64,
    user: HashMap<(PathBuf, u64), Arc<[Frame]>>,
    /// Estimated bytes of `user`.
    user_bytes: usize,
    kernel: HashMap<u64, Frame>,
    /// Times a cache or the symbolizer was reset by a limit.
    pub resets: u64,
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
            user: HashMap::new(),
            user_bytes: 0,
            kernel: HashMap::new(),
            resets: 0,
        }
    }

    /// Releases what blazesym holds (mapped objects, parsed DWARF: hundreds
    /// of MiB for a big binary) once a window is symbolized, and gives the
    /// freed heap back to the OS. The frame caches stay, so the next
    /// window re-opens an object only for addresses never seen before.
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
        // Lookup addresses: the sampled instruction, or the byte before a
        // return address (inside its call).
        let lookup = |i: usize, addr: u64| if i == 0 { addr } else { addr.saturating_sub(1) };
        let mut user_addrs: Vec<u64> =
            stacks.iter().flat_map(|(k, _)| k.user.iter().enumerate().map(|(i, a)| lookup(i, *a))).collect();
        user_addrs.sort_unstable();
        user_addrs.dedup();
        let mut kernel_addrs: Vec<u64> =
            stacks.iter().flat_map(|(k, _)| k.kernel.iter().enumerate().map(|(i, a)| lookup(i, *a))).collect();
        kernel_addrs.sort_unstable();
        kernel_addrs.dedup();
        self.resolve_user(&user_addrs, maps);
        self.resolve_kernel(&kernel_addrs);

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
                let loc = *kernel_locations.entry(addr).or_insert_with(|| {
                    let frame = self.kernel.get(&addr).cloned().unwrap_or_else(|| kernel_frame("[kernel]".into()));
                    window.locations.push(WindowLocation { address: addr, mapping: None, frames: vec![frame] });
                    window.locations.len() - 1
                });
                locations.push(loc);
            }
            for (i, addr) in key.user.iter().enumerate() {
                let addr = lookup(i, *addr);
                let loc = *user_locations.entry(addr).or_insert_with(|| {
                    let (mapping, frames) = match maps.find(addr) {
                        Some(m) => {
                            let idx = *mapping_index.entry(m.start).or_insert_with(|| {
                                window.mappings.push(m.clone());
                                window.mappings.len() - 1
                            });
                            let frames = self
                                .user
                                .get(&(m.path.clone(), addr - m.start + m.offset))
                                .map(|f| f.to_vec())
                                .unwrap_or_else(|| vec![unknown_frame(&module_name(&m.path))]);
                            (Some(idx), frames)
                        }
                        None => (None, vec![unknown_frame(&format!("{addr:#x}"))]),
                    };
                    window.locations.push(WindowLocation { address: addr, mapping, frames });
                    window.locations.len() - 1
                });
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

    fn resolve_user(&mut self, addrs: &[u64], maps: &MapsSnapshot) {
        let mut by_file: HashMap<PathBuf, Vec<u64>> = HashMap::new();
        for addr in addrs {
            if let Some(m) = maps.find(*addr) {
                let offset = addr - m.start + m.offset;
                if !self.user.contains_key(&(m.path.clone(), offset)) {
                    by_file.entry(m.path.clone()).or_default().push(offset);
                }
            }
        }
        let mut files: Vec<_> = by_file.into_iter().collect();
        files.sort();
        for (path, mut offsets) in files {
            offsets.sort_unstable();
            offsets.dedup();
            if self.user.len() + offsets.len() > MAX_CACHED_ADDRESSES || self.user_bytes > MAX_CACHED_BYTES {
                self.user.clear();
                self.user_bytes = 0;
                self.resets += 1;
            }
            if !self.objects.contains(&path) {
                if self.objects.len() >= MAX_OPEN_OBJECTS {
                    self.release_objects();
                    self.resets += 1;
                }
                let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                if size >= LARGE_OBJECT_BYTES && self.open_bytes + size > MAX_OPEN_BYTES {
                    self.release_objects();
                }
                self.open_bytes += size;
                self.objects.insert(path.clone());
            }
            let module = module_name(&path);
            // Symbols are cached per file for every process: a program's
            // own code is in executables, not in shared libraries.
            let owner_object = !(module.contains(".so") || module.starts_with("ld-linux"));
            let source = Source::Elf(Elf::new(&path));
            let results = self.inner.symbolize(&source, Input::FileOffset(&offsets));
            match results {
                Ok(symbolized) => {
                    for (offset, sym) in offsets.iter().zip(symbolized) {
                        let frames: Arc<[Frame]> = frames_of(sym, &module, owner_object).into();
                        self.user_bytes += entry_bytes(&path, &frames);
                        self.user.insert((path.clone(), *offset), frames);
                    }
                }
                Err(_) => {
                    for offset in offsets {
                        self.user.insert((path.clone(), offset), vec![unknown_frame(&module)].into());
                    }
                }
            }
        }
    }

    fn resolve_kernel(&mut self, addrs: &[u64]) {
        let missing: Vec<u64> = addrs.iter().copied().filter(|a| !self.kernel.contains_key(a)).collect();
        if missing.is_empty() {
            return;
        }
        if self.kernel.len() + missing.len() > MAX_CACHED_KERNEL_ADDRESSES {
            self.kernel.clear();
            self.resets += 1;
        }
        let source = Source::Kernel(Kernel { vmlinux: MaybeDefault::None, ..Default::default() });
        let results = self.inner.symbolize(&source, Input::AbsAddr(&missing)).unwrap_or_default();
        for (i, addr) in missing.iter().enumerate() {
            let name = match results.get(i) {
                Some(Symbolized::Sym(s)) => s.name.to_string(),
                _ => "[kernel]".to_string(),
            };
            self.kernel.insert(*addr, kernel_frame(name));
        }
    }
}

/// Estimated heap bytes of one cached entry: the key's path, the frames'
/// names and files, and the map's and allocations' overhead.
fn entry_bytes(path: &std::path::Path, frames: &[Frame]) -> usize {
    96 + path.as_os_str().len()
        + frames.iter().map(|f| 64 + f.function.len() + f.file.as_deref().map_or(0, str::len)).sum::<usize>()
}

fn kernel_frame(function: String) -> Frame {
    Frame { function, file: None, line: None, origin: Origin::Kernel, inlined: false }
}
