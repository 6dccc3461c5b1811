//! The validated plan of one audit.
//!
//! Like ripgrep's `HiArgs`, everything the user asked for is checked and
//! resolved here, before any process is touched or any program loaded, so
//! that a usage mistake never leaves half an audit behind.

use std::{path::PathBuf, time::Duration};

use crate::{
    cli::{Args, Profile, UnwindChoice},
    error::{Error, ErrorKind, Result},
    load::Scenario,
};

/// Profiles this build can collect. The others are announced in one line
/// and skipped, and the rest of the audit runs.
pub const AVAILABLE_PROFILES: &[Profile] = &[Profile::Cpu, Profile::Memory, Profile::Async, Profile::Database];

pub const MIN_FREQUENCY_HZ: u64 = 1;
/// Above this the sampling itself becomes the workload.
pub const MAX_FREQUENCY_HZ: u64 = 4_999;
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Pid(u32),
    Name(String),
    Launch { program: String, args: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct AuditPlan {
    pub target: TargetSpec,
    /// What the user asked for (`all` kept as such for the report header).
    pub requested_profile: Profile,
    /// Profiles that will run.
    pub profiles: Vec<Profile>,
    /// Profiles asked for but not available in this build.
    pub unavailable: Vec<Profile>,
    pub duration: Duration,
    pub frequency_hz: u64,
    pub unwind: UnwindChoice,
    /// How the memory profile probes the allocator.
    pub memory: crate::memory::MemoryMode,
    /// `None`: the default, named after the service once it is resolved.
    pub out_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    /// Load to drive during the audit, if any.
    pub load: Option<LoadSpec>,
    pub private_database: bool,
    pub ready_timeout: Duration,
    /// Async profile: capture threshold of blocking intervals.
    pub offcpu_min: Duration,
    /// Async profile: long-poll threshold.
    pub long_poll: Duration,
    pub console: String,
    pub show_progress: bool,
    /// `--bench`: run the service's criterion benchmarks after collection.
    pub bench: Option<crate::bench::BenchPlan>,
    /// `--debug-dir`s: where separate debug files are looked for first.
    pub debug_dirs: Vec<PathBuf>,
    /// `--max-overhead` in percent (`None`: measure only).
    pub max_overhead_pct: Option<f64>,
    /// The budget was not given and the memory mode is precise: the
    /// default budget does not switch the allocator probes off.
    pub keep_precise_memory: bool,
}

/// The budget when `--max-overhead` is not given (see its help).
pub const DEFAULT_MAX_OVERHEAD_PCT: f64 = 50.0;

/// Validated load options; the load generator runs for the audit's duration.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub scenario: Scenario,
    pub rps: u32,
}

impl AuditPlan {
    pub fn from_args(args: Args) -> Result<AuditPlan> {
        let usage = |m: String| Error::new(ErrorKind::Usage, m);

        let explicit_target = args.pid.is_some() || args.name.is_some() || !args.command.is_empty();
        let mut positionals = args.positionals.into_iter();
        let (service, profile_word) = if explicit_target {
            let profile = positionals.next();
            if let Some(extra) = positionals.next() {
                return Err(usage(format!(
                    "unexpected argument `{extra}`: with --pid, --name or `-- <command>` only a profile may follow"
                )));
            }
            (None, profile)
        } else {
            match (positionals.next(), positionals.next()) {
                (None, _) => {
                    return Err(usage(
                        "no target: give a service name, --pid PID, or `-- <command>`".into(),
                    ));
                }
                (Some(first), None) if Profile::parse(&first).is_some() => {
                    return Err(usage(format!(
                        "`{first}` is a profile, but no target was given: add a service name, --pid PID, or `-- <command>`"
                    )));
                }
                (Some(service), profile) => (Some(service), profile),
            }
        };

        let requested_profile = match profile_word {
            None => Profile::All,
            Some(word) => Profile::parse(&word).ok_or_else(|| {
                usage(format!(
                    "unknown profile `{word}`: expected cpu, memory, async, database or all"
                ))
            })?,
        };

        let target = if let Some(pid) = args.pid {
            if pid == 0 {
                return Err(usage("--pid 0 is not a process".into()));
            }
            if pid == std::process::id() {
                return Err(usage(format!(
                    "--pid {pid} is perf-audit-agent itself: the agent leaves its own process out of every probe, so a self-audit records nothing; audit another process (--pid, a service name, or `-- <command>`)"
                )));
            }
            TargetSpec::Pid(pid)
        } else if let Some(name) = args.name.or(service) {
            if name.is_empty() {
                return Err(usage("the service name is empty".into()));
            }
            if !args.command.is_empty() {
                return Err(usage("give either a service name or `-- <command>`, not both".into()));
            }
            TargetSpec::Name(name)
        } else {
            let mut command = args.command.into_iter();
            let program = command.next().expect("explicit_target implies a command here");
            TargetSpec::Launch { program, args: command.collect() }
        };

        if !(MIN_FREQUENCY_HZ..=MAX_FREQUENCY_HZ).contains(&args.frequency) {
            return Err(usage(format!(
                "--frequency {} is out of range: use {MIN_FREQUENCY_HZ} to {MAX_FREQUENCY_HZ} Hz (99 is a good default)",
                args.frequency
            )));
        }
        if args.duration.is_zero() || args.duration > MAX_DURATION {
            return Err(usage(format!(
                "--duration {} is out of range: use 1s to 24h",
                humantime::format_duration(args.duration)
            )));
        }

        let wanted: Vec<Profile> = match requested_profile {
            Profile::All => vec![Profile::Cpu, Profile::Memory, Profile::Async, Profile::Database],
            p => vec![p],
        };
        let (profiles, unavailable): (Vec<_>, Vec<_>) =
            wanted.into_iter().partition(|p| AVAILABLE_PROFILES.contains(p));
        if profiles.is_empty() {
            return Err(usage(format!(
                "profile `{}` is not available in this version yet: use cpu, database (or all)",
                requested_profile.as_str()
            )));
        }

        if args.memory != crate::memory::MemoryMode::Default && !profiles.contains(&Profile::Memory) {
            return Err(usage(format!(
                "--memory {} applies to the memory profile: add `memory` (or `all`) as the profile",
                args.memory.as_str()
            )));
        }

        let load = match (&args.scenario, args.load.is_empty()) {
            (Some(file), _) => Some(Scenario::from_file(file)?),
            (None, false) => Some(Scenario::from_urls(&args.load)?),
            (None, true) => None,
        }
        .map(|scenario| LoadSpec { scenario, rps: args.rps });
        if let Some(spec) = &load {
            crate::load::LoadPlan::new(spec.scenario.clone(), spec.rps, args.duration)?;
        }
        if args.offcpu_min < Duration::from_micros(10) {
            return Err(usage("--offcpu-min below 10us would capture a stack at almost every context switch: use 1ms (the default) or more".into()));
        }
        if args.long_poll.is_zero() {
            return Err(usage("--long-poll must be longer than 0s (10ms is the default)".into()));
        }
        if args.private_database && !matches!(target, TargetSpec::Launch { .. }) {
            return Err(usage(
                "--private-database gives a database to a command the audit launches: add `-- <command>`".into(),
            ));
        }
        let bench = crate::bench::BenchPlan::from_args(args.bench, args.bench_dir, &args.bench_max_regression)?;
        let max_overhead_pct = match &args.max_overhead {
            Some(text) => parse_max_overhead(text)?,
            None => Some(DEFAULT_MAX_OVERHEAD_PCT),
        };
        let keep_precise_memory = args.max_overhead.is_none() && args.memory == crate::memory::MemoryMode::Precise;

        Ok(AuditPlan {
            bench,
            target,
            requested_profile,
            profiles,
            unavailable,
            duration: args.duration,
            frequency_hz: args.frequency,
            unwind: args.unwind,
            memory: args.memory,
            out_dir: args.out,
            database_url: args.database_url,
            load,
            private_database: args.private_database,
            ready_timeout: args.ready_timeout,
            offcpu_min: args.offcpu_min,
            long_poll: args.long_poll,
            console: args.console,
            show_progress: !args.quiet,
            debug_dirs: args.debug_dirs,
            max_overhead_pct,
            keep_precise_memory,
        })
    }
}

/// `--max-overhead`: `3%`, `3` or `none`.
fn parse_max_overhead(text: &str) -> Result<Option<f64>> {
    let t = text.trim();
    if matches!(t, "none" | "off") {
        return Ok(None);
    }
    match t.strip_suffix('%').unwrap_or(t).trim().parse::<f64>() {
        Ok(pct) if pct > 0.0 && pct <= 100.0 => Ok(Some(pct)),
        _ => Err(Error::new(ErrorKind::Usage, format!("--max-overhead `{text}` is not a percentage in (0, 100]: use e.g. 3% (50% is the default), or `none` to measure without backing off"))),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn plan(argv: &[&str]) -> Result<AuditPlan> {
        let mut full = vec!["perf-audit-agent"];
        full.extend_from_slice(argv);
        let cli = crate::cli::Cli::try_parse_from(full).expect("clap accepts");
        assert!(cli.command.is_none());
        AuditPlan::from_args(cli.audit)
    }

    #[test]
    fn a_self_audit_is_refused_with_one_line() {
        let own = std::process::id().to_string();
        let e = plan(&["--pid", &own, "cpu"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.message.contains("perf-audit-agent itself") && !e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn pid_then_profile() {
        let p = plan(&["--pid", "1234", "cpu", "--duration", "10s"]).unwrap();
        assert_eq!(p.target, TargetSpec::Pid(1234));
        assert_eq!(p.profiles, vec![Profile::Cpu]);
        assert_eq!(p.duration, Duration::from_secs(10));
        assert_eq!(p.frequency_hz, 99);
    }

    #[test]
    fn service_name_then_profile() {
        let p = plan(&["user-service", "cpu"]).unwrap();
        assert_eq!(p.target, TargetSpec::Name("user-service".into()));
        assert_eq!(p.requested_profile, Profile::Cpu);
    }

    #[test]
    fn profile_then_launched_command() {
        let p = plan(&["cpu", "--", "./svc", "--bench-mode"]).unwrap();
        assert_eq!(
            p.target,
            TargetSpec::Launch { program: "./svc".into(), args: vec!["--bench-mode".into()] }
        );
    }

    #[test]
    fn default_profile_all_runs_what_exists_and_lists_the_rest() {
        let p = plan(&["--pid", "1"]).unwrap();
        assert_eq!(p.requested_profile, Profile::All);
        assert_eq!(p.profiles, vec![Profile::Cpu, Profile::Memory, Profile::Async, Profile::Database]);
        assert!(p.unavailable.is_empty());
    }

    #[test]
    fn a_lone_profile_word_is_not_taken_as_a_service_name() {
        let e = plan(&["cpu"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.message.contains("no target"), "{}", e.message);
    }

    #[test]
    fn unknown_profile_is_a_usage_error() {
        let e = plan(&["svc", "gpu"]).unwrap_err();
        assert!(e.message.contains("unknown profile `gpu`"));
    }

    #[test]
    fn load_urls_become_a_scenario_at_the_given_rate() {
        let p = plan(&["svc", "--load", "http://127.0.0.1:8080/feed", "--load", "http://127.0.0.1:8080/health", "--rps", "80"]).unwrap();
        let load = p.load.unwrap();
        assert_eq!(load.rps, 80);
        assert_eq!(load.scenario.requests.len(), 2);
        assert!(plan(&["svc", "--load", "https://example.com/"]).is_err());
        assert!(plan(&["svc", "--load", "http://127.0.0.1/", "--rps", "0"]).is_err());
    }

    #[test]
    fn a_private_database_needs_a_launched_command() {
        let e = plan(&["svc", "--private-database"]).unwrap_err();
        assert!(e.message.contains("-- <command>"), "{}", e.message);
        assert!(plan(&["cpu", "--private-database", "--", "./svc"]).unwrap().private_database);
    }

    #[test]
    fn memory_mode_is_validated_against_the_profile() {
        use crate::memory::MemoryMode;
        assert_eq!(plan(&["--pid", "1", "memory", "--memory", "precise"]).unwrap().memory, MemoryMode::Precise);
        assert_eq!(plan(&["--pid", "1", "memory"]).unwrap().memory, MemoryMode::Default);
        let e = plan(&["--pid", "1", "cpu", "--memory", "precise"]).unwrap_err();
        assert!(e.message.contains("memory profile"), "{}", e.message);
    }

    #[test]
    fn max_overhead_is_a_percentage_or_none() {
        assert_eq!(plan(&["--pid", "1"]).unwrap().max_overhead_pct, Some(DEFAULT_MAX_OVERHEAD_PCT));
        assert!(plan(&["--pid", "1", "--memory", "precise"]).unwrap().keep_precise_memory);
        assert!(!plan(&["--pid", "1", "--memory", "precise", "--max-overhead", "3%"]).unwrap().keep_precise_memory);
        assert_eq!(plan(&["--pid", "1", "--max-overhead", "3%"]).unwrap().max_overhead_pct, Some(3.0));
        assert_eq!(plan(&["--pid", "1", "--max-overhead", "0.5"]).unwrap().max_overhead_pct, Some(0.5));
        assert_eq!(plan(&["--pid", "1", "--max-overhead", "none"]).unwrap().max_overhead_pct, None);
        for bad in ["0%", "150%", "lots"] {
            let e = plan(&["--pid", "1", "--max-overhead", bad]).unwrap_err();
            assert!(e.message.contains("--max-overhead") && e.message.contains("none"), "{}", e.message);
        }
    }

    #[test]
    fn frequency_and_duration_are_bounded() {
        assert!(plan(&["--pid", "1", "--frequency", "0"]).is_err());
        assert!(plan(&["--pid", "1", "--frequency", "100000"]).is_err());
        assert!(plan(&["--pid", "1", "--duration", "0s"]).is_err());
    }
}
