//! `perf-audit-agent symbolize AUDIT`: names a saved audit's stripped
//! frames once the debug file exists (the analysis side is
//! `perf_audit_analysis::resymbolize`).
//!
//! For each object of report.json's `symbols` that had no symbols or no
//! line info, the debug file is looked up by build-id (and by the binary's
//! `.gnu_debuglink`, when the binary is still there) in the `--debug-dir`s
//! and the system's directories. Each `object+0xOFFSET` label of the
//! folded stacks is turned into a virtual address with the segments the
//! report kept, and named from the debug file.

use std::{
    fs,
    path::{Path, PathBuf},
};

use blazesym::symbolize::Symbolized;

use crate::{
    cli::SymbolizeArgs,
    debuginfo::{BuildIdMatch, ObjectFacts, SYSTEM_DEBUG_DIRS, build_ids_match, crate_facts, debug_file_candidates, find_debug_file, same_file},
    elf_worker::{self, ElfJob, Lookup},
    error::{Error, ErrorKind, Result},
    profile::{Frame, Origin, crates::CrateFacts, origin_of_path},
    report::{LoadSegment, ObjectSymbols, Report},
    resymbolize_core::{Renamed, frame_of_label, profile_from_folded, rebuild},
    symbolize::strip_hash,
};

fn input_error(message: String) -> Error {
    Error::new(ErrorKind::SymbolizeInput, message)
}

/// What `symbolize` did: where it wrote, and which objects it named.
pub struct SymbolizeOutput {
    pub out_dir: PathBuf,
    /// (object name, debug file, frames renamed)
    pub named: Vec<(String, PathBuf, usize)>,
}

pub fn run(args: &SymbolizeArgs) -> Result<SymbolizeOutput> {
    let dir = if args.audit.is_dir() { args.audit.clone() } else { args.audit.parent().map(Path::to_path_buf).unwrap_or_default() };
    let report_path = dir.join("report.json");
    let text = fs::read_to_string(&report_path).map_err(|e| input_error(format!("cannot read {}: {e}", report_path.display())))?;
    let mut report: Report =
        serde_json::from_str(&text).map_err(|e| input_error(format!("{} is not a perf-audit report: {e}", report_path.display())))?;
    let folded = fs::read_to_string(dir.join("stacks.folded"))
        .map_err(|e| input_error(format!("cannot read {}: {e}", dir.join("stacks.folded").display())))?;
    let offcpu_folded = fs::read_to_string(dir.join("offcpu.folded")).ok();
    let memory_svg = fs::read(dir.join("memory.svg")).ok();

    let debug_dirs: Vec<PathBuf> =
        args.debug_dirs.iter().cloned().chain(SYSTEM_DEBUG_DIRS.iter().map(PathBuf::from)).collect();
    let labels: Vec<&str> = folded
        .lines()
        .chain(offcpu_folded.iter().flat_map(|f| f.lines()))
        .filter_map(|l| l.rsplit_once(' ').map(|(stack, _)| stack))
        .flat_map(|stack| stack.split(';'))
        .collect();
    let mut renamed = Renamed::new();
    let mut named = Vec::new();
    let mut exe_crates: Option<CrateFacts> = None;
    for object in report.symbols.iter_mut().filter(|o| !o.line_info) {
        let Some((debug, debug_facts)) = debug_file_of(object, &debug_dirs, args)? else { continue };
        let segments = if object.load_segments.is_empty() {
            ObjectFacts::read(Path::new(&object.object)).map(|f| f.load_segments()).unwrap_or_default()
        } else {
            object.load_segments.clone()
        };
        let prefix = format!("{}+0x", object.name());
        let mut wanted: Vec<(String, u64)> = labels
            .iter()
            .filter_map(|l| {
                let offset = u64::from_str_radix(l.strip_prefix(&prefix)?, 16).ok()?;
                Some((l.to_string(), LoadSegment::vaddr_of(&segments, offset)?))
            })
            .collect();
        wanted.sort();
        wanted.dedup();
        let crates = object.executable.then(|| crate_facts(Path::new(&object.object), Some(&debug)));
        let vaddrs: Vec<u64> = wanted.iter().map(|(_, v)| *v).collect();
        let job = ElfJob { path: debug.clone(), dwarf: debug_facts.dwarf_hazard.is_none(), lookup: Lookup::VirtOffset, addrs: vaddrs };
        let answer = elf_worker::symbolize(job, elf_worker::OBJECT_DEADLINE, |sym| match sym {
            Symbolized::Sym(sym) => (
                strip_hash(&sym.name).to_string(),
                sym.code_info.as_ref().map(|ci| ci.to_path().to_string_lossy().into_owned()),
                sym.code_info.as_ref().and_then(|ci| ci.line),
            ),
            Symbolized::Unknown(_) => (String::new(), None, None),
        })
        .map_err(|e| input_error(format!("symbolizing from {}: {e}", debug.display())))?;
        let mut count = 0;
        for ((label, _), sym) in wanted.iter().zip(answer.items) {
            let Some((function, file, line)) = sym else { continue };
            let origin = match (&file, &crates) {
                (Some(path), _) => match origin_of_path(path) {
                    Origin::Owner if !object.executable => Origin::Native,
                    origin => origin,
                },
                (None, Some(c)) => c.origin_of_function(&function),
                (None, None) => Origin::Native,
            };
            // The offset is the function's start: the samples' own lines
            // were not saved, so the location is where the function begins.
            renamed.insert(label.clone(), Frame { function, file, line, origin, inlined: false });
            count += 1;
        }
        object.symbols = true;
        object.line_info = debug_facts.line_tables;
        object.debug_file = Some(debug.display().to_string());
        if let Some(c) = &crates {
            object.owner_crates = c.owner.iter().cloned().collect();
            object.owner_evidence = c.evidence.clone();
            object.owner_rule = Some(crate::profile::crates::OWNER_RULE.to_string());
        }
        object.load_segments.clear();
        if object.executable {
            exe_crates = crates;
        }
        named.push((object.name().to_string(), debug, count));
    }
    if named.is_empty() {
        return Err(Error::new(ErrorKind::DebugFileNotFound, format!(
            "no debug file found for the objects of {} that lack symbols or line info ({})",
            report_path.display(),
            missing(&report.symbols)
        )));
    }
    let origin_of = |f: &str| exe_crates.as_ref().map_or(Origin::Native, |c| c.origin_of_function(f));
    let cpu = profile_from_folded(&folded, |l| frame_of_label(l, &renamed, origin_of));
    let offcpu = offcpu_folded.as_deref().map(|f| profile_from_folded(f, |l| frame_of_label(l, &renamed, origin_of)));
    let (_, files) = rebuild(report, &cpu, offcpu.as_ref(), memory_svg.as_deref())?;

    let out_dir = args.out.clone().unwrap_or_else(|| {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "perf-audit".into());
        dir.with_file_name(format!("{name}-symbolized"))
    });
    fs::create_dir_all(&out_dir).map_err(|e| Error::output(&out_dir, e))?;
    // Files that do not depend on frame names are copied as they were.
    for name in ["alerts.yml", "perf-audit-ci.yml", "memory.svg"] {
        if dir.join(name).is_file() && dir != out_dir {
            fs::copy(dir.join(name), out_dir.join(name)).map_err(|e| Error::output(&out_dir.join(name), e))?;
        }
    }
    for file in files {
        let path = out_dir.join(file.name);
        fs::write(&path, &file.bytes).map_err(|e| Error::output(&path, e))?;
    }
    Ok(SymbolizeOutput { out_dir, named })
}

/// The debug file of a reported object: `--debug-file` for the
/// executable, else its binary's own lookup when the binary is still there
/// with the same build-id, else by build-id alone. A file that is not the
/// object's build (build-id different or missing) is refused with one line
/// (exit 10) unless `--force-debug-file`: `--debug-file`, or a file found by
/// name only (`--debug-dir`/NAME.debug, the debug link).
fn debug_file_of(object: &ObjectSymbols, debug_dirs: &[PathBuf], args: &SymbolizeArgs) -> Result<Option<(PathBuf, ObjectFacts)>> {
    let path = Path::new(&object.object);
    let build_id = object.build_id.as_deref().and_then(unhex);
    let facts = match ObjectFacts::read(path) {
        Some(f) if build_id.is_none() || f.build_id == build_id => f,
        _ => ObjectFacts::with_build_id(build_id),
    };
    if let Some(file) = args.debug_file.as_ref().filter(|_| object.executable) {
        let debug = ObjectFacts::read(file)
            .ok_or_else(|| input_error(format!("--debug-file {}: not a readable ELF regular file", file.display())))?;
        return checked(object, &facts, file, debug, args.force_debug_file).map(Some);
    }
    if let Some(found) = find_debug_file(path, &facts, debug_dirs) {
        return Ok(Some(found));
    }
    for candidate in debug_file_candidates(path, &facts, debug_dirs) {
        if same_file(&candidate, path) {
            continue;
        }
        let Some(debug) = ObjectFacts::read(&candidate).filter(|d| d.line_tables || d.symtab) else { continue };
        return checked(object, &facts, &candidate, debug, args.force_debug_file).map(Some);
    }
    Ok(None)
}

/// `debug` if its build-id is the object's; else the mismatch as one line
/// (exit 10), or a warning when forced.
fn checked(object: &ObjectSymbols, facts: &ObjectFacts, file: &Path, debug: ObjectFacts, force: bool) -> Result<(PathBuf, ObjectFacts)> {
    let theirs = facts.build_id_hex().map(|b| format!("build-id {b}")).unwrap_or_else(|| "no build-id".into());
    let problem = match build_ids_match(facts, &debug) {
        BuildIdMatch::Same => return Ok((file.to_path_buf(), debug)),
        BuildIdMatch::Different => format!(
            "{} is not the debug file of `{}`: its build-id is {}, the audited binary's {theirs}",
            file.display(),
            object.name(),
            debug.build_id_hex().unwrap_or_default()
        ),
        BuildIdMatch::Unknown if debug.build_id.is_none() => {
            format!("{} has no build-id: nothing shows it is the debug file of `{}` ({theirs})", file.display(), object.name())
        }
        BuildIdMatch::Unknown => format!(
            "the audited `{}` has no build-id: nothing shows {} is its debug file",
            object.name(),
            file.display()
        ),
    };
    if force {
        eprintln!("perf-audit: warning: {problem}; used anyway (--force-debug-file): names may be wrong");
        return Ok((file.to_path_buf(), debug));
    }
    Err(Error::new(ErrorKind::DebugFileMismatch, problem))
}

fn missing(objects: &[ObjectSymbols]) -> String {
    let names: Vec<String> = objects
        .iter()
        .filter(|o| !o.line_info)
        .map(|o| format!("{} build-id {}", o.name(), o.build_id.as_deref().unwrap_or("unknown")))
        .collect();
    if names.is_empty() { "none".to_string() } else { names.join(", ") }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    s.len().is_multiple_of(2).then_some(())?;
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_ids_read_back_from_hex() {
        assert_eq!(unhex("99bf10"), Some(vec![0x99, 0xbf, 0x10]));
        assert_eq!(unhex("9"), None);
        assert_eq!(unhex("zz"), None);
    }
}
