//! From addresses to frames: blazesym over the target's own files (DWARF:
//! inlined frames, demangled names, file:line) and over kallsyms.
//!
//! Addresses are translated to file offsets with the maps snapshot taken
//! while the target ran, and symbolized from the ELF files themselves; this
//! works after the target has exited, which the partial report relies on.
//! Every distinct address is symbolized once, in one batch per file.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use blazesym::{
    MaybeDefault,
    symbolize::{
        CodeInfo, Input, Symbolized, Symbolizer,
        source::{Elf, Kernel, Source},
    },
};

use crate::{
    kernel::cpu::RawCpuStack,
    profile::{CpuProfile, Frame, Origin, StackSample, origin_of_path},
    target::MapsSnapshot,
};

pub struct StackSymbolizer {
    inner: Symbolizer,
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
    fn lookup_addr(self) -> u64 {
        match self {
            UserKey::Leaf(a) => a,
            UserKey::Caller(a) => a.saturating_sub(1),
        }
    }
}

impl StackSymbolizer {
    pub fn new() -> Self {
        let inner = Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .enable_auto_reload(false)
            .build();
        StackSymbolizer { inner }
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
                None => {
                    out.insert(*key, vec![unknown_frame(&format!("{addr:#x}"))]);
                }
            }
        }
        for (path, entries) in by_file {
            let offsets: Vec<u64> = entries.iter().map(|(_, off)| *off).collect();
            let module = module_name(&path);
            let owner_object = same_file(&path, main_object);
            let source = Source::Elf(Elf::new(&path));
            let results = self.inner.symbolize(&source, Input::FileOffset(&offsets));
            match results {
                Ok(symbolized) => {
                    for ((key, _), sym) in entries.iter().zip(symbolized) {
                        out.insert(*key, frames_of(sym, &module, owner_object));
                    }
                }
                Err(_) => {
                    for (key, _) in entries {
                        out.insert(key, vec![unknown_frame(&module)]);
                    }
                }
            }
        }
        out
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

/// Whether two paths name the same file (same path, or same device and
/// inode: the maps may show it through /proc/PID/root).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

pub(crate) fn module_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

pub(crate) fn unknown_frame(module: &str) -> Frame {
    Frame { function: format!("[{module}]"), file: None, line: None, origin: Origin::Unknown, inlined: false }
}

/// The frames of one address, outermost first: the function, then each
/// function inlined into it. blazesym gives each its own location.
pub(crate) fn frames_of(sym: Symbolized<'_>, module: &str, owner_object: bool) -> Vec<Frame> {
    let sym = match sym {
        Symbolized::Sym(sym) => sym,
        Symbolized::Unknown(_) => return vec![unknown_frame(module)],
    };
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    frames.push(make_frame(&sym.name, sym.code_info.as_deref(), false, owner_object));
    for inlined in sym.inlined.iter() {
        frames.push(make_frame(&inlined.name, inlined.code_info.as_ref(), true, owner_object));
    }
    frames
}

fn make_frame(name: &str, code_info: Option<&CodeInfo<'_>>, inlined: bool, owner_object: bool) -> Frame {
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
        None => Frame { function, file: None, line: None, origin: Origin::Native, inlined },
    }
}

/// Removes a legacy-mangling hash (`::h0123456789abcdef`) if one survived.
fn strip_hash(name: &str) -> &str {
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
