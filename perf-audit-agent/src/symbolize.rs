//! From addresses to frames: blazesym over the target's own files (DWARF:
//! inlined frames, demangled names, file:line) and over kallsyms.
//!
//! Addresses are translated to file offsets with the maps snapshot taken
//! while the target ran, and symbolized from the ELF files themselves; this
//! works after the target has exited, which the partial report relies on.
//! Every distinct address is symbolized once, in one batch per file.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use blazesym::{
    MaybeDefault,
    symbolize::{
        CodeInfo, Input, Symbolized, Symbolizer,
        source::{Kernel, Source},
    },
};

use crate::{
    naming,
    elf_worker::{self, ElfError, ElfJob, Lookup},
    debuginfo::{ObjectFacts, SYSTEM_DEBUG_DIRS, crate_facts, find_debug_file, same_file},
    kernel::cpu::RawCpuStack,
    profile::{CpuProfile, Frame, Origin, StackSample, crates::CrateFacts, origin_of_path},
    report::ObjectSymbols,
    target::MapsSnapshot,
};

pub struct StackSymbolizer {
    inner: Symbolizer,
    /// `--debug-dir`s, then the system's debug directories.
    debug_dirs: Vec<PathBuf>,
    /// What each object symbolized so far says about itself.
    objects: RefCell<BTreeMap<PathBuf, ObjectState>>,
    /// Source files read for naming (see `naming`), by path.
    sources: RefCell<HashMap<String, Option<std::rc::Rc<str>>>>,
    /// Each object's deadline ([`elf_worker::OBJECT_DEADLINE`], cut to
    /// [`DEADLINE_AFTER_TIMEOUT`] once one object timed out: a stuck file
    /// system holds the next objects too).
    deadline: std::cell::Cell<Duration>,
    /// The worker every object is symbolized on (its symbolizer keeps what
    /// it parsed for the audit's next profile).
    worker: RefCell<elf_worker::ElfWorker>,
}

/// An object's deadline once another has timed out.
const DEADLINE_AFTER_TIMEOUT: Duration = Duration::from_secs(2);

/// One object's facts, looked up once per audit.
struct ObjectState {
    facts: Option<ObjectFacts>,
    /// The separate debug file symbolized instead of the object.
    debug_file: Option<(PathBuf, ObjectFacts)>,
    /// The executable's crates (only read for the executable).
    crates: Option<CrateFacts>,
    executable: bool,
    /// Frames of the owner's crates seen, and how many had a file.
    owner_frames: u64,
    /// Crates of the executable's frames whose source file is the owner's
    /// (line tables), each with one such file: the workspace's crates.
    path_owner_crates: BTreeMap<String, String>,
    owner_frames_with_file: u64,
    /// Any address of it was named by a symbol.
    named: bool,
    /// Its symbol table's function paths and (executable) the owner
    /// functions' first lines: built on first need, for line-tables-only
    /// DWARF's short names (see `naming`).
    naming: Option<NamingTables>,
    /// What went wrong reading its debug info (the report's `problems`).
    problems: Vec<String>,
    /// Its line info was given up (DWARF refused, damaged, or timed out).
    lost_lines: bool,
    /// Its symbolization timed out once: it is not tried again.
    timed_out: bool,
}

struct NamingTables {
    symtab: naming::SymtabIndex,
    owner_lines: naming::OwnerLines,
}

impl Default for StackSymbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// Where one user address landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum UserKey {
    /// The sampled instruction itself.
    Leaf(u64),
    /// A return address: the call is the instruction before it.
    Caller(u64),
}

impl UserKey {
    /// The address as sampled or read from the stack.
    fn addr(self) -> u64 {
        match self {
            UserKey::Leaf(a) | UserKey::Caller(a) => a,
        }
    }

    fn lookup_addr(self) -> u64 {
        match self {
            UserKey::Leaf(a) => a,
            UserKey::Caller(a) => a.saturating_sub(1),
        }
    }
}

impl StackSymbolizer {
    pub fn new() -> Self {
        Self::with_debug_dirs(&[])
    }

    /// A symbolizer that looks for separate debug files in `debug_dirs`
    /// (`--debug-dir`) before the system's directories.
    pub fn with_debug_dirs(debug_dirs: &[PathBuf]) -> Self {
        let debug_dirs: Vec<PathBuf> =
            debug_dirs.iter().cloned().chain(SYSTEM_DEBUG_DIRS.iter().map(PathBuf::from)).collect();
        let inner = Symbolizer::builder().enable_auto_reload(false).build();
        StackSymbolizer { inner, debug_dirs, objects: RefCell::new(BTreeMap::new()), sources: RefCell::new(HashMap::new()), deadline: std::cell::Cell::new(elf_worker::OBJECT_DEADLINE),
            worker: RefCell::new(elf_worker::ElfWorker::new()),
        }
    }

    /// Every object frames were symbolized in so far: build-id, symbols,
    /// line info, debug file (the report's `symbols`), executable first.
    pub fn object_symbols(&self) -> Vec<ObjectSymbols> {
        let objects = self.objects.borrow();
        let mut out: Vec<ObjectSymbols> = objects
            .iter()
            .map(|(path, o)| {
                let own_lines = o.facts.as_ref().is_some_and(|f| f.line_tables)
                    || o.debug_file.as_ref().is_some_and(|(_, f)| f.line_tables);
                // Line tables of std alone (a build with `debug = false` but
                // no stripping) do not give the owner's code file:line.
                let line_info = !o.lost_lines && if o.owner_frames > 0 { o.owner_frames_with_file > 0 } else { own_lines };
                let symbols = o.named || o.facts.as_ref().is_some_and(|f| f.symtab) || o.debug_file.is_some();
                let (object, on_disk) = crate::target::mapped_file_name(path);
                let mut owner_evidence = o.crates.as_ref().map(|c| c.evidence.clone()).unwrap_or_default();
                // A crate the binary names as a dependency (std's, a
                // registry's) stays one, whatever file a frame had.
                let dependency = |k: &str| o.crates.as_ref().is_some_and(|c| c.dependencies.contains(k));
                for (krate, file) in o.path_owner_crates.iter().filter(|(k, _)| !dependency(k)) {
                    owner_evidence.entry(krate.clone()).or_insert_with(|| format!("its frames' source files are in the workspace (`{file}`)"));
                }
                ObjectSymbols {
                    on_disk: on_disk.map(|d| match d {
                        crate::target::OnDisk::Replaced => "replaced".to_string(),
                        crate::target::OnDisk::Deleted => "deleted".to_string(),
                    }),
                    object,
                    build_id: o.facts.as_ref().and_then(ObjectFacts::build_id_hex),
                    executable: o.executable,
                    symbols,
                    line_info,
                    debug_file: o.debug_file.as_ref().map(|(p, _)| p.display().to_string()),
                    owner_crates: owner_evidence.keys().cloned().collect(),
                    owner_evidence,
                    owner_rule: o.executable.then(|| crate::profile::crates::OWNER_RULE.to_string()),
                    load_segments: match (&o.facts, symbols) {
                        (Some(f), false) => f.load_segments(),
                        _ => Vec::new(),
                    },
                    problems: o.problems.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| b.executable.cmp(&a.executable).then(a.object.cmp(&b.object)));
        out
    }

    /// Reads `path`'s facts (and the executable's crates) on first use.
    fn with_object<T>(&self, path: &Path, executable: bool, f: impl FnOnce(&mut ObjectState) -> T) -> T {
        let mut objects = self.objects.borrow_mut();
        let state = objects.entry(path.to_path_buf()).or_insert_with(|| {
            let facts = ObjectFacts::read(path);
            let debug_file = facts
                .as_ref()
                .filter(|f| !f.line_tables || f.dwarf_hazard.is_some())
                .and_then(|f| find_debug_file(path, f, &self.debug_dirs));
            ObjectState {
                facts,
                debug_file,
                crates: None,
                executable: false,
                owner_frames: 0,
                path_owner_crates: BTreeMap::new(),
                owner_frames_with_file: 0,
                named: false,
                naming: None,
                problems: Vec::new(),
                lost_lines: false,
                timed_out: false,
            }
        });
        if executable && state.crates.is_none() {
            state.executable = true;
            state.crates = Some(crate_facts(path, state.debug_file.as_ref().map(|(p, _)| p.as_path())));
        }
        f(state)
    }

    /// Builds the CPU profile of `raw` stacks (all of one process).
    /// `main_object` is the target's executable: only its frames can be the
    /// owner's code (libc's relative DWARF paths would otherwise pass for it).
    pub fn cpu_profile(&self, raw: &[RawCpuStack], maps: &MapsSnapshot, main_object: &Path) -> CpuProfile {
        let mut user_keys: Vec<UserKey> = Vec::new();
        let mut kernel_addrs: Vec<u64> = Vec::new();
        for stack in raw {
            for (i, addr) in stack.user.iter().enumerate() {
                user_keys.push(if i == 0 { UserKey::Leaf(*addr) } else { UserKey::Caller(*addr) });
            }
            for (i, addr) in stack.kernel.iter().enumerate() {
                kernel_addrs.push(if i == 0 { *addr } else { addr.saturating_sub(1) });
            }
        }
        user_keys.sort_unstable();
        user_keys.dedup();
        kernel_addrs.sort_unstable();
        kernel_addrs.dedup();

        let user = self.symbolize_user(&user_keys, maps, main_object);
        let kernel = self.symbolize_kernel(&kernel_addrs);

        let mut profile = CpuProfile::default();
        for stack in raw {
            let mut frames = Vec::new();
            for (i, addr) in stack.user.iter().enumerate().rev() {
                let key = if i == 0 { UserKey::Leaf(*addr) } else { UserKey::Caller(*addr) };
                for frame in user.get(&key).into_iter().flatten() {
                    frames.push(profile.intern(frame.clone()));
                }
            }
            for (i, addr) in stack.kernel.iter().enumerate().rev() {
                let addr = if i == 0 { *addr } else { addr.saturating_sub(1) };
                if let Some(frame) = kernel.get(&addr) {
                    frames.push(profile.intern(frame.clone()));
                }
            }
            if let Some(label) = &stack.leaf_label {
                let leaf = Frame { function: label.clone(), file: None, line: None, origin: Origin::Kernel, inlined: false };
                frames.push(profile.intern(leaf));
            }
            profile.push_sample(StackSample {
                thread: stack.thread_name.clone(),
                tid: stack.tid,
                frames,
                count: stack.count,
                events: stack.events,
                has_user_stack: !stack.user.is_empty(),
            });
        }
        settle_relative_paths(&mut profile);
        profile
    }

    fn symbolize_user(&self, keys: &[UserKey], maps: &MapsSnapshot, main_object: &Path) -> HashMap<UserKey, Vec<Frame>> {
        let mut by_file: BTreeMap<PathBuf, Vec<(UserKey, u64)>> = BTreeMap::new();
        let mut out = HashMap::new();
        for key in keys {
            let addr = key.lookup_addr();
            match maps.find(addr) {
                Some(m) => by_file.entry(m.path.clone()).or_default().push((*key, addr - m.start + m.offset)),
                // The kernel's uprobe page (uretprobe trampoline), named as
                // /proc/PID/maps names it: a stack ends there only when a
                // sample caught the kernel rewriting a probed call's return
                // address (the caller is then unknown).
                // (Judged by the address itself: a return address is looked
                // up one byte before it, below the page for its first byte.)
                None if crate::unwind::is_uprobe_trampoline(key.addr()) => {
                    out.insert(*key, vec![unknown_frame("uprobes")]);
                }
                None => {
                    out.insert(*key, vec![unknown_frame(&format!("{addr:#x}"))]);
                }
            }
        }
        for (path, entries) in by_file {
            let module = module_name(&path);
            let owner_object = same_file(&path, main_object);
            let (job, crates, skip) = self.with_object(&path, owner_object, |o| {
                let offsets: Vec<u64> = entries.iter().map(|(_, off)| *off).collect();
                // A separate debug file has the object's addresses, not its
                // file layout: look it up by virtual address.
                let vaddrs: Option<Vec<u64>> = match (&o.debug_file, &o.facts) {
                    (Some(_), Some(facts)) => entries.iter().map(|(_, off)| facts.vaddr_of(*off)).collect(),
                    _ => None,
                };
                let job = match (&o.debug_file, vaddrs, &o.facts) {
                    (Some((debug, debug_facts)), Some(vaddrs), _) => Some(ElfJob {
                        path: debug.clone(),
                        dwarf: debug_facts.dwarf_hazard.is_none(),
                        lookup: Lookup::VirtOffset,
                        addrs: vaddrs
                    }),
                    (_, _, Some(facts)) => Some(ElfJob {
                        path: path.clone(),
                        dwarf: facts.dwarf_hazard.is_none(),
                        lookup: Lookup::FileOffset,
                        addrs: offsets
                    }),
                    // Not a readable regular ELF file: blazesym would only
                    // fail on it (or block, on a FIFO).
                    (_, _, None) => None,
                };
                // DWARF the object has but blazesym may not read: said once.
                let refused = match (&o.debug_file, &o.facts) {
                    (Some((debug, f)), _) => f.dwarf_hazard.as_ref().map(|h| format!("DWARF of its debug file {} not read: {h}", debug.display())),
                    (None, Some(f)) if f.line_tables || f.dwarf_hazard.as_deref().is_some_and(|h| h.contains("compressed")) => {
                        f.dwarf_hazard.as_ref().map(|h| format!("DWARF not read: {h}; names come from its symbol table"))
                    }
                    _ => None,
                };
                if let Some(note) = refused.filter(|n| !o.problems.contains(n)) {
                    o.problems.push(note);
                    o.lost_lines = true;
                }
                (job, o.crates.clone(), o.timed_out)
            });
            let facts = crates.filter(|_| owner_object);
            let naming_job = job.clone().filter(|_| !skip);
            let answer = match job {
                Some(job) if !skip => {
                    let (module, facts) = (module.clone(), facts.clone());
                    self.worker.borrow_mut().symbolize(job, self.deadline.get(), move |sym| frames_with(sym, &module, owner_object, facts.as_ref()))
                }
                _ => Err(ElfError::Failed(String::new())),
            };
            let results: Vec<Option<Vec<Frame>>> = match answer {
                Ok(answer) => {
                    if let Some(lost) = answer.dwarf_lost {
                        self.with_object(&path, owner_object, |o| {
                            if !o.problems.iter().any(|p| p.starts_with("its DWARF")) {
                                o.problems.push(lost);
                            }
                            o.lost_lines = true;
                        });
                    }
                    answer.items
                }
                Err(e) => {
                    if let ElfError::TimedOut(_) = e {
                        eprintln!("perf-audit: symbolizing {} timed out; its frames keep `{module}+0x..` names", path.display());
                        self.deadline.set(DEADLINE_AFTER_TIMEOUT);
                        self.with_object(&path, owner_object, |o| {
                            o.problems.push(format!("symbolization timed out ({e}): its frames keep `{module}+0x..` names"));
                            o.timed_out = true;
                            o.lost_lines = true;
                        });
                    }
                    entries.iter().map(|_| None).collect()
                }
            };
            let mut named = false;
            let (mut owner_frames, mut with_file) = (0u64, 0u64);
            let mut path_owners: BTreeMap<String, String> = BTreeMap::new();
            let mut per_entry: Vec<(bool, Vec<Frame>)> = entries
                .iter()
                .zip(results)
                .map(|((_, offset), frames)| match frames {
                    Some(frames) => (true, frames),
                    None => (false, vec![self.offset_frame(&path, &module, *offset)]),
                })
                .collect();
            if let Some(job) = naming_job {
                self.name_short_frames(&path, job, owner_object, facts.as_ref(), &mut per_entry);
            }
            for ((key, _offset), (symbolized, frames)) in entries.iter().zip(per_entry) {
                named |= symbolized;
                if owner_object {
                    for f in frames.iter().filter(|f| f.origin == Origin::Owner && f.file.as_deref().is_some_and(|p| p.starts_with('/'))) {
                        if let Some(krate) = crate::profile::crates::crate_of(&f.function) && !path_owners.contains_key(krate) {
                            path_owners.insert(krate.to_string(), f.file.clone().unwrap_or_default());
                        }
                    }
                }
                if let Some(facts) = &facts {
                    for f in frames.iter().filter(|f| f.origin != Origin::Native && facts.origin_of_function(&f.function) == Origin::Owner) {
                        owner_frames += 1;
                        with_file += u64::from(f.file.is_some());
                    }
                }
                out.insert(*key, frames);
            }
            self.with_object(&path, owner_object, |o| {
                o.named |= named;
                o.owner_frames += owner_frames;
                o.owner_frames_with_file += with_file;
                for (krate, file) in path_owners {
                    o.path_owner_crates.entry(krate).or_insert(file);
                }
            });
        }
        out
    }

    /// A frame no symbol covers, named by its object and the file offset
    /// of its function (from the unwind tables: every sample in one
    /// function gets one name) so that a stripped binary's hotspots are
    /// still functions, and can be re-symbolized once its debug file exists.
    fn offset_frame(&self, path: &Path, module: &str, offset: u64) -> Frame {
        let start = self.with_object(path, false, |o| o.facts.as_ref().map_or(offset, |f| f.function_start(offset)));
        Frame { function: format!("{module}+{start:#x}"), file: None, line: None, origin: Origin::Unknown, inlined: false }
    }

    fn symbolize_kernel(&self, addrs: &[u64]) -> HashMap<u64, Frame> {
        let mut out = HashMap::new();
        if addrs.is_empty() {
            return out;
        }
        let kernel = Kernel { vmlinux: MaybeDefault::None, ..Default::default() };
        let source = Source::Kernel(kernel);
        let results = self.inner.symbolize(&source, Input::AbsAddr(addrs));
        let results = results.unwrap_or_else(|_| addrs.iter().map(|_| Symbolized::Unknown(blazesym::symbolize::Reason::Unsupported)).collect());
        for (addr, sym) in addrs.iter().zip(results) {
            let function = match sym {
                Symbolized::Sym(s) => s.name.into_owned(),
                Symbolized::Unknown(_) => "[kernel]".to_string(),
            };
            out.insert(*addr, Frame { function, file: None, line: None, origin: Origin::Kernel, inlined: false });
        }
        out
    }
}

impl StackSymbolizer {
    /// Line-tables-only DWARF names functions without their path
    /// (`{async_fn#0}`, `run`): renames such frames by the one naming rule
    /// of [`naming`] (the symbol table's name for the outermost function,
    /// qualified names for inlined ones). Nothing is done, and nothing is
    /// read, when every frame already has its path (full debug info) or
    /// came from the symbol table. `job` is the object's own lookup (its
    /// file or debug file, its addresses): the symbol-table pass repeats
    /// it without DWARF, on the same worker and deadline.
    fn name_short_frames(&self, path: &Path, job: ElfJob, owner_object: bool, crates: Option<&CrateFacts>, per_entry: &mut [(bool, Vec<Frame>)]) {
        let inputs = |frames: &[Frame]| -> Vec<(String, Option<String>, Option<u32>)> {
            frames.iter().map(|f| (f.function.clone(), f.file.clone(), f.line)).collect()
        };
        let needs = per_entry.iter().any(|(sym, frames)| {
            *sym && {
                let owned = inputs(frames);
                let refs: Vec<naming::NameInput<'_>> =
                    owned.iter().map(|(n, f, l)| naming::NameInput { name: n, file: f.as_deref(), line: *l }).collect();
                naming::Namer { symtab: None, owner_lines: None, owner_crates: &[], source: None }.name_frames(&refs, None).is_some()
            }
        });
        if !needs {
            return;
        }
        // The symbol table's names of the outermost functions.
        let symtab_job = ElfJob { dwarf: false, ..job.clone() };
        let outer: Vec<Option<String>> = match self.worker.borrow_mut().symbolize(symtab_job, self.deadline.get(), |sym| match sym {
            Symbolized::Sym(s) => Some(strip_hash(&s.name).to_string()),
            Symbolized::Unknown(_) => None,
        }) {
            Ok(answer) => answer.items.into_iter().map(Option::flatten).collect(),
            Err(_) => vec![None; per_entry.len()],
        };
        let owner_crates: Vec<String> = crates.map(|c| c.owner.iter().cloned().collect()).unwrap_or_default();
        let built = self.with_object(path, owner_object, |o| o.naming.is_some());
        if !built {
            let tables = self.naming_tables(&job, if owner_object { crates } else { None });
            self.with_object(path, owner_object, |o| o.naming = Some(tables));
        }
        let objects = self.objects.borrow();
        let Some(tables) = objects.get(path).and_then(|o| o.naming.as_ref()) else { return };
        let read_source = |file: &str| self.source_file(file);
        let namer = naming::Namer {
            symtab: Some(&tables.symtab),
            owner_lines: (!tables.owner_lines.is_empty()).then_some(&tables.owner_lines),
            owner_crates: &owner_crates,
            source: Some(&read_source),
        };
        for ((sym, frames), outer) in per_entry.iter_mut().zip(outer) {
            if !*sym {
                continue;
            }
            let owned = inputs(frames);
            let refs: Vec<naming::NameInput<'_>> =
                owned.iter().map(|(n, f, l)| naming::NameInput { name: n, file: f.as_deref(), line: *l }).collect();
            if let Some(names) = namer.name_frames(&refs, outer.as_deref()) {
                for (frame, name) in frames.iter_mut().zip(names) {
                    if frame.file.is_none() && frame.function != name && owner_object && let Some(c) = crates {
                        frame.origin = c.origin_of_function(&name);
                    }
                    frame.function = name;
                }
            }
        }
    }

    /// A source file the line tables name, when it is a regular file on
    /// this machine (at most 4 MiB; never a FIFO or device): read once.
    fn source_file(&self, file: &str) -> Option<std::rc::Rc<str>> {
        if let Some(cached) = self.sources.borrow().get(file) {
            return cached.clone();
        }
        let text = crate::naming::read_source_file(Path::new(file)).map(std::rc::Rc::<str>::from);
        self.sources.borrow_mut().insert(file.to_string(), text.clone());
        text
    }

    /// The symbol table index of the job's file and, for the executable,
    /// the span of lines of each owner function (its first and last
    /// instruction looked up in the line tables, on the worker, when the
    /// file's DWARF may be read).
    fn naming_tables(&self, job: &ElfJob, crates: Option<&CrateFacts>) -> NamingTables {
        use object::{Object as _, ObjectSymbol as _};
        let empty = || NamingTables { symtab: naming::SymtabIndex::default(), owner_lines: naming::OwnerLines::default() };
        let Some(map) = crate::safe_file::map_regular(&job.path) else { return empty() };
        let Ok(elf) = object::File::parse(&map[..]) else { return empty() };
        let symtab = naming::SymtabIndex::from_elf(&elf);
        let mut owner_fns: Vec<(u64, u64, String)> = Vec::new();
        if let Some(crates) = crates.filter(|_| job.dwarf) {
            for s in elf.symbols() {
                if s.kind() != object::SymbolKind::Text || s.is_undefined() || s.address() == 0 {
                    continue;
                }
                let Some(name) = s.name().ok().and_then(|n| rustc_demangle::try_demangle(n).ok()).map(|d| format!("{d:#}")) else { continue };
                if crates.origin_of_function(&name) == Origin::Owner {
                    owner_fns.push((s.address(), s.size(), name));
                }
            }
        }
        drop(elf);
        drop(map);
        if owner_fns.is_empty() {
            return NamingTables { symtab, owner_lines: naming::OwnerLines::default() };
        }
        // Each function's first and last instruction: its span of lines.
        let addrs: Vec<u64> = owner_fns.iter().flat_map(|(a, size, _)| [*a, a + size.saturating_sub(1)]).collect();
        let lines_job = ElfJob { path: job.path.clone(), dwarf: true, lookup: Lookup::VirtOffset, addrs };
        let located: Vec<Option<(String, u32)>> = match self.worker.borrow_mut().symbolize(lines_job, self.deadline.get(), |sym| match sym {
            Symbolized::Sym(s) => s.code_info.as_deref().and_then(|ci| Some((ci.to_path().to_string_lossy().into_owned(), ci.line?))),
            Symbolized::Unknown(_) => None,
        }) {
            Ok(answer) if answer.dwarf_lost.is_none() => answer.items.into_iter().map(Option::flatten).collect(),
            _ => return NamingTables { symtab, owner_lines: naming::OwnerLines::default() },
        };
        let owner_lines = naming::OwnerLines::new(owner_fns.into_iter().zip(located.chunks(2)).filter_map(|((_, _, name), pair)| {
            let (file, first) = pair.first()?.clone()?;
            let last = pair.get(1).cloned().flatten().filter(|(f, _)| *f == file).map_or(first, |(_, l)| l);
            Some((file, first, last, name))
        }));
        NamingTables { symtab, owner_lines }
    }
}


/// Some line tables name files relative to their compilation directory
/// (`src/map.rs`), which says nothing about whose code it is. Such a frame
/// stays the owner's only if its crate is one whose frames have absolute,
/// non-dependency paths; otherwise it is a dependency's (e.g. hashbrown
/// code inlined into the binary).
fn settle_relative_paths(profile: &mut CpuProfile) {
    fn krate(function: &str) -> &str {
        function.trim_start_matches('<').split("::").next().unwrap_or_default()
    }
    let owner_crates: std::collections::HashSet<String> = profile
        .frames
        .iter()
        .filter(|f| f.origin == Origin::Owner && f.file.as_deref().is_some_and(|p| p.starts_with('/')))
        .map(|f| krate(&f.function).to_string())
        .collect();
    for frame in &mut profile.frames {
        let relative = frame.file.as_deref().is_some_and(|p| !p.starts_with('/'));
        if frame.origin == Origin::Owner && relative && !owner_crates.contains(krate(&frame.function)) {
            frame.origin = Origin::Dependency;
        }
    }
}

pub(crate) fn module_name(path: &Path) -> String {
    crate::target::mapped_file_base_name(path)
}

pub(crate) fn unknown_frame(module: &str) -> Frame {
    Frame { function: format!("[{module}]"), file: None, line: None, origin: Origin::Unknown, inlined: false }
}

/// The frames of one address, outermost first: the function, then each
/// function inlined into it. blazesym gives each its own location.
pub(crate) fn frames_of(sym: Symbolized<'_>, module: &str, owner_object: bool) -> Vec<Frame> {
    frames_with(sym, module, owner_object, None)
}

/// [`frames_of`], deciding the executable's frames without a source file
/// by crate name (`crates`, read from the executable) rather than calling
/// them native code.
fn frames_with(sym: Symbolized<'_>, module: &str, owner_object: bool, crates: Option<&CrateFacts>) -> Vec<Frame> {
    let sym = match sym {
        Symbolized::Sym(sym) => sym,
        Symbolized::Unknown(_) => return vec![unknown_frame(module)],
    };
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    frames.push(make_frame(&sym.name, sym.code_info.as_deref(), false, owner_object, crates));
    for inlined in sym.inlined.iter() {
        frames.push(make_frame(&inlined.name, inlined.code_info.as_ref(), true, owner_object, crates));
    }
    frames
}

fn make_frame(name: &str, code_info: Option<&CodeInfo<'_>>, inlined: bool, owner_object: bool, crates: Option<&CrateFacts>) -> Frame {
    let function = strip_hash(name).to_string();
    match code_info {
        Some(ci) => {
            let path = ci.to_path().to_string_lossy().into_owned();
            let origin = match origin_of_path(&path) {
                Origin::Owner if !owner_object => Origin::Native,
                origin => origin,
            };
            Frame { origin, function, file: Some(path), line: ci.line, inlined }
        }
        None => {
            let origin = match crates {
                Some(crates) if owner_object => crates.origin_of_function(&function),
                _ => Origin::Native,
            };
            Frame { function, file: None, line: None, origin, inlined }
        }
    }
}

/// Removes a legacy-mangling hash (`::h0123456789abcdef`) if one survived.
pub(crate) fn strip_hash(name: &str) -> &str {
    if let Some((head, tail)) = name.rsplit_once("::h")
        && tail.len() == 16 && tail.bytes().all(|b| b.is_ascii_hexdigit()) {
            return head;
        }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_suffix_is_removed() {
        assert_eq!(strip_hash("svc::hot::h0123456789abcdef"), "svc::hot");
        assert_eq!(strip_hash("svc::hot"), "svc::hot");
        assert_eq!(strip_hash("svc::hash"), "svc::hash");
    }

    #[test]
    fn callers_are_looked_up_one_byte_before_the_return_address() {
        assert_eq!(UserKey::Caller(0x1000).lookup_addr(), 0xfff);
        assert_eq!(UserKey::Leaf(0x1000).lookup_addr(), 0x1000);
    }
}
