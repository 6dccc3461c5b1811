//! tokio-console's view of the target (`async.console.summary`).

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SpawnLocation {
    pub location: String,
    pub tasks: u64,
    pub live: u64,
    pub polls: u64,
    pub busy_ms: f64,
    /// Busy time per poll.
    pub mean_poll_us: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct ConsoleWarning {
    /// `self-wakes`, `lost-waker` or `never-yielded`.
    pub kind: String,
    pub location: String,
    pub tasks: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ConsoleSummary {
    pub tasks_seen: u64,
    pub live_tasks: u64,
    pub updates: u64,
    pub locations: Vec<SpawnLocation>,
    pub warnings: Vec<ConsoleWarning>,
}
