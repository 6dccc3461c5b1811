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
