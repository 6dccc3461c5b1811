//! `symbolize`: a saved audit of a stripped binary, read again once its
//! debug file exists.
//!
//! An audit taken in production names a stripped binary's frames
//! `svc+0x1b5b0` (the file offset of the function, see the agent's
//! `symbolize.rs`) and keeps each object's build-id. The agent finds the
//! debug file, names those offsets ([`Renamed`]), and this module rebuilds
//! what depends on the names: the folded stacks, the hotspots, the CPU
//! findings, the report's `symbols` entries, and the rendered files.
//! Sections that were measured on other stacks (memory, database, async)
//! are kept as they were.

use std::collections::HashMap;

use crate::{
    audit::{HOTSPOT_ROWS, OutputFile},
    error::Result,
    findings::{self, Category, CpuEvidence, Evidence},
    profile::{CpuProfile, Frame, Origin, hotspots::hotspots, is_thread_root},
    render,
    report::{CpuSection, Report, html, markdown},
};

/// What one `object+0xOFFSET` label turned out to be.
pub type Renamed = HashMap<String, Frame>;

/// A profile read back from folded stacks (`thread;root;...;leaf count`):
/// each label becomes a frame through `frame_of`, `_[k]` labels are kernel
/// frames.
pub fn profile_from_folded(folded: &str, mut frame_of: impl FnMut(&str) -> Frame) -> CpuProfile {
    let mut profile = CpuProfile::default();
    for line in folded.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else { continue };
        let Ok(count) = count.trim().parse::<u64>() else { continue };
        let mut labels = stack.split(';');
        let thread = labels.next().unwrap_or_default().to_string();
        let frames: Vec<_> = labels
            .map(|label| match label.strip_suffix("_[k]") {
                Some(k) => Frame { function: k.to_string(), file: None, line: None, origin: Origin::Kernel, inlined: false },
                None => frame_of(label),
            })
            .map(|f| profile.intern(f))
            .collect();
        let has_user_stack = frames.iter().any(|id| profile.frame(*id).origin != Origin::Kernel);
        profile.push(thread, frames, count, has_user_stack);
    }
    profile
}

/// The frame of a label that was not renamed: an offset still unknown, a
/// start frame, or a name decided by `origin_of_function` (the
/// executable's crates).
pub fn frame_of_label(label: &str, renamed: &Renamed, origin_of_function: impl Fn(&str) -> Origin) -> Frame {
    if let Some(frame) = renamed.get(label) {
        return frame.clone();
    }
    let unknown = label.starts_with("0x") || (label.contains("+0x") && !label.contains("::"));
    let origin = if unknown {
        Origin::Unknown
    } else if is_thread_root(label) {
        Origin::Native
    } else {
        origin_of_function(label)
    };
    Frame { function: label.to_string(), file: None, line: None, origin, inlined: false }
}

/// The report with its CPU hotspots and CPU findings computed again from
/// `cpu` (other findings kept), and the files that change: report.json,
/// report.md, report.html, stacks.folded, flamegraph.svg, and
/// offcpu.folded/offcpu.svg when `offcpu` is given. `memory_svg` is the
/// saved memory flamegraph, embedded in report.html as it was.
pub fn rebuild(mut report: Report, cpu: &CpuProfile, offcpu: Option<&CpuProfile>, memory_svg: Option<&[u8]>) -> Result<(Report, Vec<OutputFile>)> {
    let mut hs = hotspots(cpu);
    // Folded stacks carry names only: a frame the original audit already
    // named (libc with its debug info, say) keeps the file:line it had.
    if let Some(section) = &report.cpu {
        let known: HashMap<&str, (&Option<String>, Option<u32>)> =
            section.hotspots.iter().filter(|h| h.file.is_some()).map(|h| (h.function.as_str(), (&h.file, h.line))).collect();
        for h in hs.iter_mut() {
            if let Some((file, line)) = known.get(h.function.as_str()) {
                if h.file.is_none() {
                    h.file = (*file).clone();
                }
                if h.line.is_none() && h.file == **file {
                    h.line = *line;
                }
            }
        }
    }
    if let Some(section) = report.cpu.as_mut() {
        let fresh = CpuSection::build(&Default::default(), section.unwinding, 0.0, section.frequency_hz, &hs, Vec::new(), HOTSPOT_ROWS);
        section.hotspots = fresh.hotspots;
        let cpu_findings = findings::evaluate(&Evidence {
            cpu: Some(CpuEvidence { profile: cpu, hotspots: &hs, total_samples: cpu.total_samples() }),
            async_runtime: None,
            database: None,
            memory: None,
        });
        report.findings.retain(|f| f.category != Category::Cpu);
        report.findings.extend(cpu_findings);
        report.findings.sort_by_key(|f| f.severity);
    }
    let name = report.target.name.clone();
    let pid = report.target.pid;
    let mut out = Vec::new();
    let folded = cpu.folded_lines();
    let subtitle = match &report.cpu {
        Some(c) => format!("{} samples at {} Hz over {:.1} s (symbolized again)", c.total_samples, c.frequency_hz, report.duration_s),
        None => "symbolized again".to_string(),
    };
    let cpu_svg = render::flamegraph_svg(&format!("CPU: {name} (pid {pid})"), &subtitle, "samples", &folded)?;
    out.push(OutputFile { name: "stacks.folded", bytes: crate::audit::folded_text(&folded).into_bytes() });
    out.push(OutputFile { name: "flamegraph.svg", bytes: cpu_svg.clone() });
    let offcpu_svg = match offcpu {
        Some(p) => {
            let folded = p.folded_lines();
            let svg = render::flamegraph_svg(&format!("Off-CPU: {name} (pid {pid})"), "time blocked, in microseconds", "us", &folded)?;
            out.push(OutputFile { name: "offcpu.folded", bytes: crate::audit::folded_text(&folded).into_bytes() });
            out.push(OutputFile { name: "offcpu.svg", bytes: svg.clone() });
            Some(svg)
        }
        None => None,
    };
    let json = serde_json::to_vec_pretty(&report).map_err(|e| crate::error::Error::internal(format!("report.json: {e}")))?;
    out.push(OutputFile { name: "report.json", bytes: json });
    let md = markdown::render(&report);
    out.push(OutputFile { name: "report.md", bytes: md.clone().into_bytes() });
    let page = html::render_with_flamegraphs(&report, &md, &cpu_svg, offcpu_svg.as_deref(), memory_svg);
    out.push(OutputFile { name: "report.html", bytes: page.into_bytes() });
    Ok((report, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::HotspotRow;

    fn owner_if_svc(f: &str) -> Origin {
        if f.starts_with("svc::") { Origin::Owner } else { Origin::Native }
    }

    #[test]
    fn renamed_offsets_become_the_owner_hotspot_and_finding() {
        let folded = "svc;svc+0x9a10;__libc_start_call_main;svc+0x1f000;svc+0x1b5b0 90\nsvc;svc+0x9a10;__libc_start_call_main;svc+0x1f000;svc+0x1b660 10\n";
        let mut renamed = Renamed::new();
        for (label, function) in [("svc+0x1f000", "svc::main"), ("svc+0x1b5b0", "svc::hot"), ("svc+0x1b660", "svc::cold")] {
            renamed.insert(
                label.into(),
                Frame { function: function.into(), file: Some("/src/svc/src/main.rs".into()), line: None, origin: Origin::Owner, inlined: false },
            );
        }
        let profile = profile_from_folded(folded, |l| frame_of_label(l, &renamed, owner_if_svc));
        assert_eq!(profile.total_samples(), 100);
        let mut report = Report { cpu: Some(CpuSection { frequency_hz: 99, total_samples: 100, ..Default::default() }), ..Default::default() };
        report.target.name = "svc".into();
        let (report, files) = rebuild(report, &profile, None, None).unwrap();
        let cpu = report.cpu.as_ref().unwrap();
        assert_eq!(cpu.hotspots[0].function, "svc::hot");
        assert_eq!(cpu.hotspots[0].origin, Origin::Owner);
        assert_eq!(report.findings[0].function, "svc::hot");
        let folded_out = String::from_utf8(files.iter().find(|f| f.name == "stacks.folded").unwrap().bytes.clone()).unwrap();
        assert!(folded_out.contains("svc+0x9a10;__libc_start_call_main;svc::main;svc::hot 90"), "{folded_out}");
        assert!(files.iter().any(|f| f.name == "report.html"));
    }

    #[test]
    fn a_folded_round_trip_keeps_every_location() {
        // The original audit: the owner's frames unnamed, libc's named with
        // file:line from its debug info.
        let folded = "svc;start_thread;__memmove_avx_unaligned_erms 60\nsvc;svc+0x9a10;svc+0x1b5b0 40\n";
        let libc = HotspotRow {
            function: "__memmove_avx_unaligned_erms".into(),
            file: Some("./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S".into()),
            line: Some(301),
            origin: Origin::Native,
            self_samples: 60,
            ..Default::default()
        };
        let before = Report {
            cpu: Some(CpuSection { frequency_hz: 99, total_samples: 100, hotspots: vec![libc.clone()], ..Default::default() }),
            ..Default::default()
        };
        let mut renamed = Renamed::new();
        renamed.insert(
            "svc+0x1b5b0".into(),
            Frame { function: "svc::hot".into(), file: Some("/src/svc/src/main.rs".into()), line: Some(12), origin: Origin::Owner, inlined: false },
        );
        let profile = profile_from_folded(folded, |l| frame_of_label(l, &renamed, owner_if_svc));
        let (after, files) = rebuild(before, &profile, None, None).unwrap();
        let rows = &after.cpu.as_ref().unwrap().hotspots;
        let row = |f: &str| rows.iter().find(|h| h.function == f).unwrap_or_else(|| panic!("{f} in {rows:?}"));
        assert_eq!((row("svc::hot").file.as_deref(), row("svc::hot").line), (Some("/src/svc/src/main.rs"), Some(12)), "file and line");
        assert_eq!((row(&libc.function).file.clone(), row(&libc.function).line), (libc.file.clone(), libc.line), "libc keeps its file:line");
        let md = String::from_utf8(files.iter().find(|f| f.name == "report.md").unwrap().bytes.clone()).unwrap();
        assert!(md.contains("/src/svc/src/main.rs:12"), "{md}");
        assert!(md.contains("memmove-vec-unaligned-erms.S:301"), "{md}");
    }

    #[test]
    fn labels_left_alone_keep_their_kind() {
        let renamed = Renamed::new();
        assert_eq!(frame_of_label("svc+0x10", &renamed, owner_if_svc).origin, Origin::Unknown);
        assert_eq!(frame_of_label("start_thread", &renamed, owner_if_svc).origin, Origin::Native);
        assert_eq!(frame_of_label("svc::a", &renamed, owner_if_svc).origin, Origin::Owner);
        let p = profile_from_folded("t;svc::a;do_syscall_64_[k] 3\n", |l| frame_of_label(l, &renamed, owner_if_svc));
        assert_eq!(p.frame(p.stacks[0].frames[1]).origin, Origin::Kernel);
    }
}
