//! The validated plan of a daemon run: flags merged over the TOML config
//! file, every value checked before anything is loaded or bound. Reading the
//! config file is the caller's job (`main`), so this stays I/O-free and
//! testable with literal text.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::{
    cli::DaemonArgs,
    error::{Error, ErrorKind, Result},
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:6060";
/// 19 Hz: prime (no lockstep with periodic work) and cheap enough to run
/// on every node all the time.
pub const DEFAULT_FREQUENCY_HZ: u64 = 19;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);
pub const MAX_FREQUENCY_HZ: u64 = 999;
/// `--off-cpu-min` default: the audit's, one scheduler tick or more of
/// blocking; shorter waits (a futex hand-off, a fast syscall) are counted
/// in the kernel, not given a stack.
pub const DEFAULT_OFF_CPU_MIN: Duration = Duration::from_millis(1);
pub const MIN_OFF_CPU_MIN: Duration = Duration::from_micros(100);
pub const MAX_OFF_CPU_MIN: Duration = Duration::from_secs(10);

/// How the kernel filter is driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub pids: Vec<u32>,
    pub processes: Vec<String>,
    pub cgroups: Vec<String>,
    pub containers: Vec<String>,
}

impl Selection {
    /// No filter at all: every process on the machine.
    pub fn is_system_wide(&self) -> bool {
        self.pids.is_empty() && self.processes.is_empty() && self.cgroups.is_empty() && self.containers.is_empty()
    }

    /// Whether /proc must be scanned for new processes (name, cgroup and
    /// container filters; pids are fixed).
    pub fn needs_discovery(&self) -> bool {
        !(self.processes.is_empty() && self.cgroups.is_empty() && self.containers.is_empty())
    }
}

#[derive(Debug, Clone)]
pub struct DaemonPlan {
    pub listen: SocketAddr,
    pub frequency_hz: u64,
    pub window: Duration,
    pub selection: Selection,
    /// Base URL of a Pyroscope-compatible server (`http://host:port[/prefix]`).
    pub push: Option<hyper::Uri>,
    /// OTLP gRPC endpoint (`http://host:port`).
    pub otlp: Option<hyper::Uri>,
    pub folded_dir: Option<PathBuf>,
    /// Frame-pointer walking in the kernel instead of stack copies unwound
    /// with `.eh_frame` (see `daemon::unwind`).
    pub frame_pointers_only: bool,
    /// Off-CPU time: blocks of at least this long, with their stacks.
    pub off_cpu: Option<Duration>,
}

/// The config file's keys; all optional, flags win.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub listen: Option<String>,
    pub frequency: Option<u64>,
    /// humantime text, e.g. "60s".
    pub window: Option<String>,
    #[serde(default)]
    pub pids: Vec<u32>,
    #[serde(default)]
    pub processes: Vec<String>,
    #[serde(default)]
    pub cgroups: Vec<String>,
    #[serde(default)]
    pub containers: Vec<String>,
    pub push: Option<String>,
    pub otlp: Option<String>,
    pub folded_dir: Option<PathBuf>,
    pub frame_pointers_only: Option<bool>,
    pub off_cpu: Option<bool>,
    /// humantime text, e.g. "5ms".
    pub off_cpu_min: Option<String>,
}

impl DaemonPlan {
    /// `config_text` is the content of `--config` (read by the caller).
    pub fn from_args(args: DaemonArgs, config_text: Option<&str>) -> Result<DaemonPlan> {
        let usage = |m: String| Error::new(ErrorKind::Usage, m);
        let config: DaemonConfig = match config_text {
            Some(text) => toml::from_str(text).map_err(|e| {
                let shown = e.to_string().replace('\n', " ");
                usage(format!("invalid config file: {}", shown.split_whitespace().collect::<Vec<_>>().join(" ")))
            })?,
            None => DaemonConfig::default(),
        };

        let listen_text = args.listen.or(config.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| usage(format!("--listen `{listen_text}` is not an IP:PORT address (e.g. 127.0.0.1:6060)")))?;

        let frequency_hz = args.frequency.or(config.frequency).unwrap_or(DEFAULT_FREQUENCY_HZ);
        if !(1..=MAX_FREQUENCY_HZ).contains(&frequency_hz) {
            return Err(usage(format!("--frequency {frequency_hz} is outside 1..={MAX_FREQUENCY_HZ} Hz")));
        }

        let window = match (args.window, config.window) {
            (Some(w), _) => w,
            (None, Some(text)) => humantime::parse_duration(&text)
                .map_err(|e| usage(format!("window `{text}` in the config file: {e}")))?,
            (None, None) => DEFAULT_WINDOW,
        };
        if window < MIN_WINDOW || window > MAX_WINDOW {
            return Err(usage(format!(
                "--window {} is outside {}..={}",
                humantime::format_duration(window),
                humantime::format_duration(MIN_WINDOW),
                humantime::format_duration(MAX_WINDOW)
            )));
        }

        // Lists: flags replace the file's list when given.
        let pick = |flag: Vec<String>, file: Vec<String>| if flag.is_empty() { file } else { flag };
        let selection = Selection {
            pids: if args.pids.is_empty() { config.pids } else { args.pids },
            processes: pick(args.processes, config.processes),
            cgroups: pick(args.cgroups, config.cgroups),
            containers: pick(args.containers, config.containers),
        };
        if selection.pids.contains(&0) {
            return Err(usage("--pid 0 is the idle task, not a process".into()));
        }
        for c in &selection.containers {
            if c.len() < 4 || !c.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(usage(format!("--container `{c}` is not a container id (4 to 64 hex digits)")));
            }
        }
        if selection.processes.iter().chain(&selection.cgroups).any(|s| s.is_empty()) {
            return Err(usage("--process and --cgroup need a non-empty value".into()));
        }

        let push = match args.push.or(config.push) {
            None => None,
            Some(text) => {
                let uri: hyper::Uri =
                    text.parse().map_err(|_| usage(format!("--push `{text}` is not a URL (e.g. http://pyroscope:4040)")))?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    return Err(usage(format!(
                        "--push `{text}` must be an http:// URL with a host (for https, push through a local proxy)"
                    )));
                }
                if uri.query().is_some() {
                    return Err(usage(format!("--push `{text}`: give the server's base URL, without a query")));
                }
                Some(uri)
            }
        };
        let otlp = match args.otlp.or(config.otlp) {
            None => None,
            Some(text) => {
                let bad = || {
                    usage(format!(
                        "--otlp `{text}` must be http://HOST:PORT, the collector's OTLP gRPC port (usually 4317; for TLS, export through a local collector)"
                    ))
                };
                let uri: hyper::Uri = text.parse().map_err(|_| bad())?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() || uri.port().is_none() {
                    return Err(bad());
                }
                if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
                    return Err(usage(format!("--otlp `{text}`: give the endpoint without a path (gRPC names its own)")));
                }
                Some(uri)
            }
        };
        let folded_dir = args.folded_dir.or(config.folded_dir);
        let frame_pointers_only = args.frame_pointers_only || config.frame_pointers_only.unwrap_or(false);
        let off_cpu_min = match (args.off_cpu_min, config.off_cpu_min) {
            (Some(d), _) => d,
            (None, Some(text)) => humantime::parse_duration(&text)
                .map_err(|e| usage(format!("off_cpu_min `{text}` in the config file: {e}")))?,
            (None, None) => DEFAULT_OFF_CPU_MIN,
        };
        if off_cpu_min < MIN_OFF_CPU_MIN || off_cpu_min > MAX_OFF_CPU_MIN {
            return Err(usage(format!(
                "--off-cpu-min {} is outside {}..={}",
                humantime::format_duration(off_cpu_min),
                humantime::format_duration(MIN_OFF_CPU_MIN),
                humantime::format_duration(MAX_OFF_CPU_MIN)
            )));
        }
        let off_cpu = (args.off_cpu || config.off_cpu.unwrap_or(false)).then_some(off_cpu_min);
        if off_cpu.is_some() && frame_pointers_only {
            return Err(usage(
                "--off-cpu needs stack copies (its stacks are taken at the syscall exit): drop --frame-pointers-only".into(),
            ));
        }
        Ok(DaemonPlan { listen, frequency_hz, window, selection, push, otlp, folded_dir, frame_pointers_only, off_cpu })
    }

    /// How often the kernel aggregation map is drained into the agent:
    /// often enough that one interval's distinct stacks fit the map
    /// (19 Hz x 10 s x CPUs), and that short-lived processes still have
    /// their memory maps readable when their stacks are symbolized.
    pub fn drain_interval(&self) -> Duration {
        self.window.min(Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> DaemonArgs {
        DaemonArgs::default()
    }

    #[test]
    fn defaults_are_system_wide_19_hz_60_s_on_localhost() {
        let plan = DaemonPlan::from_args(args(), None).unwrap();
        assert_eq!(plan.listen, "127.0.0.1:6060".parse().unwrap());
        assert_eq!(plan.frequency_hz, 19);
        assert_eq!(plan.window, Duration::from_secs(60));
        assert!(plan.selection.is_system_wide());
        assert!(plan.push.is_none() && plan.folded_dir.is_none());
        assert!(!plan.frame_pointers_only, "stack copies unwound with .eh_frame by default");
        assert_eq!(plan.drain_interval(), Duration::from_secs(10));
        let fp = DaemonPlan::from_args(args(), Some("frame_pointers_only = true")).unwrap();
        assert!(fp.frame_pointers_only);
        assert!(plan.otlp.is_none() && plan.off_cpu.is_none());
        let mut a = args();
        a.off_cpu = true;
        a.otlp = Some("http://collector:4317".into());
        let plan = DaemonPlan::from_args(a, None).unwrap();
        assert_eq!(plan.off_cpu, Some(Duration::from_millis(1)));
        assert_eq!(plan.otlp.unwrap().port_u16(), Some(4317));
        let plan = DaemonPlan::from_args(args(), Some("off_cpu = true\noff_cpu_min = \"5ms\"\notlp = \"http://127.0.0.1:4317\"")).unwrap();
        assert_eq!(plan.off_cpu, Some(Duration::from_millis(5)));
        assert!(plan.otlp.is_some());
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let text = r#"
            listen = "0.0.0.0:7000"
            frequency = 49
            window = "30s"
            processes = ["svc"]
            containers = ["abcdef012345"]
            push = "http://pyroscope:4040"
            folded_dir = "/var/lib/perf-audit"
        "#;
        let mut a = args();
        a.frequency = Some(29);
        a.processes = vec!["other".into()];
        let plan = DaemonPlan::from_args(a, Some(text)).unwrap();
        assert_eq!(plan.listen, "0.0.0.0:7000".parse().unwrap());
        assert_eq!(plan.frequency_hz, 29);
        assert_eq!(plan.window, Duration::from_secs(30));
        assert_eq!(plan.selection.processes, vec!["other".to_string()]);
        assert_eq!(plan.selection.containers, vec!["abcdef012345".to_string()]);
        assert!(plan.selection.needs_discovery() && !plan.selection.is_system_wide());
        assert_eq!(plan.push.unwrap().host(), Some("pyroscope"));
        assert_eq!(plan.folded_dir, Some(PathBuf::from("/var/lib/perf-audit")));
    }

    #[test]
    fn mistakes_are_one_line_usage_errors() {
        let bad = |a: DaemonArgs, text: Option<&str>| {
            let e = DaemonPlan::from_args(a, text).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Usage);
            assert!(!e.to_string().contains('\n'), "{e}");
            e.message
        };
        let mut a = args();
        a.listen = Some("localhost".into());
        assert!(bad(a, None).contains("IP:PORT"));
        let mut a = args();
        a.frequency = Some(0);
        assert!(bad(a, None).contains("--frequency 0"));
        let mut a = args();
        a.window = Some(Duration::from_millis(10));
        assert!(bad(a, None).contains("--window"));
        let mut a = args();
        a.push = Some("https://x".into());
        assert!(bad(a, None).contains("http://"));
        let mut a = args();
        a.containers = vec!["not-hex".into()];
        assert!(bad(a, None).contains("container id"));
        assert!(bad(args(), Some("frequncy = 3")).contains("invalid config file"));
        for endpoint in ["collector:4317", "https://collector:4317", "http://collector", "http://c:4317/v1/profiles"] {
            let mut a = args();
            a.otlp = Some(endpoint.into());
            assert!(bad(a, None).contains("--otlp"), "{endpoint}");
        }
        let mut a = args();
        a.off_cpu = true;
        a.frame_pointers_only = true;
        assert!(bad(a, None).contains("drop --frame-pointers-only"));
        let mut a = args();
        a.off_cpu_min = Some(Duration::from_secs(60));
        assert!(bad(a, None).contains("--off-cpu-min"));
    }
}
