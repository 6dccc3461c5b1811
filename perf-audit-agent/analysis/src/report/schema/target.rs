//! The audited process, as the report names it.

/// Identity of the audited process, as the report shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct TargetInfo {
    pub pid: u32,
    /// The service name: the executable's file name (not cut to 15 bytes).
    pub name: String,
    /// Path of the executable.
    pub exe: String,
}

/// The target replaced its program (`execve`) during the audit: stacks
/// before and after belong to different programs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct TargetExec {
    /// Seconds into collection when the agent saw it (within 0.2 s).
    pub after_s: f64,
    /// The executable before and after.
    pub exe_before: String,
    pub exe_after: String,
}

impl TargetExec {
    /// One line for report.md and the terminal.
    pub fn note(&self) -> String {
        let what = if self.exe_before == self.exe_after {
            format!("re-executed `{}`", self.exe_after)
        } else {
            format!("replaced `{}` with `{}` (exec)", self.exe_before, self.exe_after)
        };
        format!(
            "the target {what} after {:.1} s of the audit: its stacks after that are of a new program image, probes placed in the old one saw nothing after it, and samples of the old image may be named from the new one",
            self.after_s
        )
    }
}
