//! What the audit knew about each object's symbols and debug info.

/// One object (the executable, a shared library) that sampled frames fell
/// in: its identity and how well it could be symbolized.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct ObjectSymbols {
    /// Path of the object as the target mapped it.
    pub object: String,
    /// GNU build-id (hex): finds its debug file later, e.g. under
    /// `/usr/lib/debug/.build-id/`.
    pub build_id: Option<String>,
    /// The target's executable (where the owner's code is).
    pub executable: bool,
    /// Function names were found (symbol table or debug info).
    pub symbols: bool,
    /// Line tables were found: frames have file:line.
    pub line_info: bool,
    /// The separate debug file used, when one was found.
    pub debug_file: Option<String>,
    /// The owner's crates (the executable's workspace): those the binary
    /// names as its own (they decide "your code" when there is no line
    /// info), and those whose frames had workspace source files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_crates: Vec<String>,
    /// Per owner crate, what in the binary made it the owner's.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub owner_evidence: std::collections::BTreeMap<String, String>,
    /// How the owner's code was decided (`profile::crates::OWNER_RULE`):
    /// on the executable only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_rule: Option<String>,
    /// For an object without symbols: its loadable segments, so that its
    /// frames' file offsets can be looked up in a debug file later
    /// (`perf-audit-agent symbolize`), even without the binary.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub load_segments: Vec<LoadSegment>,
    /// What became of the object's path on disk while the target ran it:
    /// `replaced` (another file is at the path now, e.g. a deploy renamed a
    /// new build over it) or `deleted`. The object was read through the
    /// process (`/proc/PID/map_files`), never from the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_disk: Option<String>,
    /// What went wrong reading its debug info: DWARF refused (a compressed
    /// section over the ceiling), damaged (names taken from the symbol
    /// table instead), symbolization timed out. `line_info` is then false.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A loadable segment: `size` bytes at file `offset`, mapped at `vaddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct LoadSegment {
    pub offset: u64,
    pub vaddr: u64,
    pub size: u64,
}

impl LoadSegment {
    /// The virtual address of file offset `offset` through `segments`.
    pub fn vaddr_of(segments: &[LoadSegment], offset: u64) -> Option<u64> {
        segments.iter().find(|s| offset >= s.offset && offset < s.offset + s.size).map(|s| s.vaddr + (offset - s.offset))
    }
}

/// The one-line fix for an executable without line info.
pub const LINE_TABLES_FIX: &str = "add `[profile.release] debug = \"line-tables-only\"` to Cargo.toml (line tables only: no runtime cost, the binary grows) or keep a separate debug file and pass `--debug-dir`";

impl ObjectSymbols {
    pub fn name(&self) -> &str {
        self.object.rsplit('/').next().unwrap_or(&self.object)
    }

    /// The report header's note about this object, when it lacks line info
    /// (only the executable's matter: shared libraries are not your code).
    /// The note about a binary replaced or deleted on disk while it ran.
    pub fn on_disk_note(&self) -> Option<String> {
        let state = self.on_disk.as_deref()?;
        let what = match state {
            "replaced" => "was replaced on disk while the process ran it (a deploy?): the file at its path now is another build",
            _ => "was deleted from disk while the process ran it",
        };
        Some(format!(
            "**`{}` {what}**. It was read through the process (`/proc/PID/map_files`): names, build-id and findings are those of the code that ran, not of the file on disk now.",
            self.object
        ))
    }

    pub fn header_note(&self) -> Option<String> {
        if !self.problems.is_empty() {
            return Some(format!("**Debug info of `{}` not used**: {}. Frames of it have no file:line.", self.name(), self.problems.join("; ")));
        }
        if !self.executable || self.line_info {
            return None;
        }
        let build_id = self.build_id.as_deref().map(|b| format!(", build-id `{b}`")).unwrap_or_default();
        Some(if self.symbols {
            let owner = if self.owner_crates.is_empty() {
                String::new()
            } else {
                format!(" (your crates, as the binary names them: {})", self.owner_crates.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", "))
            };
            format!(
                "**No line info** in `{}`{build_id}: hotspots and findings name functions, without file:line; your code is told apart by crate name{owner}. Fix: {LINE_TABLES_FIX}.",
                self.name()
            )
        } else {
            format!(
                "**`{}` is stripped**{build_id} and no debug file was found: its frames read `{}+0xOFFSET` (file offset of the function) and no finding can name your code. Fix: build with `strip = false` and {LINE_TABLES_FIX}; or install its debug file as `/usr/lib/debug/.build-id/xx/yyyy.debug` (or in a `--debug-dir`) and run `perf-audit-agent symbolize` on this report.",
                self.name(),
                self.name()
            )
        })
    }
}
