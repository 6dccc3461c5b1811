//! The profiles' collectors as the engine drives them: each is started
//! once (before the target runs, or as soon as it is found), drained while
//! the target runs, and finished into [`RawEvidence`], in the order the
//! engine lists them. Adding a profile is one more [`Collector`], not a
//! longer engine.
//!
//! | collector | start | while running | finish gives |
//! |---|---|---|---|
//! | [`CpuSampling`] | before the target runs | (aggregated in the kernel) | frame-pointer stacks |
//! | [`OffCpu`] | before the target runs | (aggregated in the kernel) | per-thread scheduler totals |
//! | [`StackCopy`] | once the pid is registered | unwinds the ring every 100 ms | dwarf CPU, off-CPU stacks, timed samples |
//! | [`Database`] | once the pid is registered | its own task (wire, sockets) | the database section |
//! | [`Memory`] | with the load | its own task (probes, windows) | the memory raw data |
//! | [`Console`] | with the load | its own task (gRPC stream) | tokio-console's summary |

use std::{future::Future, pin::Pin};

use perf_audit_common::ThreadSchedTotals;

use crate::{
    console::ConsoleSummary,
    database::{DatabaseCollector, DatabaseSection},
    error::{Error, Result},
    kernel::{KernelSession, OffCpuAttach, cpu::RawCpuStack, stack_copy::{CpuSampleRecord, StackCopyCollector}},
    memory::{MemoryCollector, MemoryRaw},
    symbolize::StackSymbolizer,
    target::MapsSnapshot,
};

/// What the collectors gathered, before symbolization.
#[derive(Default)]
pub struct RawEvidence {
    /// On-CPU stacks of the target (either unwinding mode).
    pub cpu: Vec<RawCpuStack>,
    pub offcpu: Vec<RawCpuStack>,
    /// One record per CPU sample, in time order (dwarf mode).
    pub records: Vec<CpuSampleRecord>,
    pub sched_totals: Vec<(u32, ThreadSchedTotals)>,
    /// Which tracepoints the off-CPU collector ran on.
    pub offcpu_tracepoints: Option<&'static str>,
    pub memory: Option<MemoryRaw>,
    pub database: Option<DatabaseSection>,
    /// `None`: nothing listened at the console address.
    pub console: Option<std::result::Result<ConsoleSummary, String>>,
}

/// What a collector may use when it finishes.
pub struct Finish<'a> {
    pub session: &'a mut KernelSession,
    /// The target's mappings, kept current during collection.
    pub maps: &'a mut MapsSnapshot,
    pub pid: u32,
    /// The audit's one symbolizer (its parsed objects are kept for the
    /// symbolize stage).
    pub symbolizer: &'a StackSymbolizer,
    pub raw: &'a mut RawEvidence,
}

pub type Finishing<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// One profile's collector.
pub trait Collector {
    fn name(&self) -> &'static str;

    /// Collectors finish in increasing order: the memory probes first (they
    /// cost the target the most and take longest to detach), tokio-console,
    /// the kernel samplers, the database, and the stack-copy ring last, so
    /// that it drains what the samplers sent before they stopped.
    fn finish_order(&self) -> u8;

    /// Called every `kernel::stack_copy::DRAIN_INTERVAL` while the target
    /// runs; collectors with a task of their own do nothing here.
    fn drain(&mut self, _maps: &mut MapsSnapshot) {}

    /// Stops collecting and puts what was gathered into `cx.raw`.
    fn finish<'a>(self: Box<Self>, cx: &'a mut Finish<'_>) -> Finishing<'a>;

    /// The overhead budget was passed: switch off this collector's costly
    /// optional part and say what, or `None` if it has none (left). The
    /// engine asks in [`BACK_OFF_ORDER`].
    fn back_off(&mut self, _session: &mut KernelSession) -> Option<String> {
        None
    }
}

/// Who backs off first when the audit passes its overhead budget: the
/// allocator probes (a uprobe trap on every allocation, the costliest per
/// event), then the database wire tracer (a payload copy on every write to
/// the database). CPU sampling keeps its rate: the report's time figures
/// are computed from it, and at 99 Hz it is the cheapest.
pub const BACK_OFF_ORDER: [&str; 2] = ["memory", "database"];

/// perf_event CPU sampling; in frame-pointer mode its stacks are
/// aggregated in the kernel and read here.
pub struct CpuSampling {
    /// Stacks come from the stack copy ring instead (dwarf mode).
    pub copied: bool,
}

impl CpuSampling {
    pub fn start(session: &mut KernelSession, frequency_hz: u64, copied: bool) -> Result<Box<dyn Collector>> {
        session.start_cpu_sampling(frequency_hz)?;
        Ok(Box::new(CpuSampling { copied }))
    }
}

impl Collector for CpuSampling {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn finish_order(&self) -> u8 {
        2
    }

    fn finish<'a>(self: Box<Self>, cx: &'a mut Finish<'_>) -> Finishing<'a> {
        Box::pin(async move {
            cx.session.stop_cpu_sampling();
            if !self.copied {
                let pid = cx.pid;
                cx.raw.cpu = cx.session.read_cpu_stacks()?.into_iter().filter(|s| s.tgid == pid).collect();
            }
            Ok(())
        })
    }
}

/// sched_switch: per-thread on-CPU, blocked and run-queue time.
pub struct OffCpu(OffCpuAttach);

impl OffCpu {
    pub fn start(session: &mut KernelSession) -> Result<Box<dyn Collector>> {
        Ok(Box::new(OffCpu(session.start_offcpu()?)))
    }
}

impl Collector for OffCpu {
    fn name(&self) -> &'static str {
        "off-cpu"
    }

    fn finish_order(&self) -> u8 {
        3
    }

    fn finish<'a>(self: Box<Self>, cx: &'a mut Finish<'_>) -> Finishing<'a> {
        Box::pin(async move {
            cx.session.stop_offcpu();
            cx.raw.sched_totals = cx.session.sched_totals(cx.pid)?;
            cx.raw.offcpu_tracepoints = Some(self.0.describe());
            Ok(())
        })
    }
}

/// The stack-copy ring: CPU samples (dwarf mode), off-CPU blocks and the
/// memory events, unwound as they arrive.
pub struct StackCopy {
    pub collector: StackCopyCollector,
    /// CPU stacks come from here (dwarf mode), not from the kernel's map.
    pub cpu: bool,
}

impl Collector for StackCopy {
    fn name(&self) -> &'static str {
        "stack-copy"
    }

    fn finish_order(&self) -> u8 {
        5
    }

    fn drain(&mut self, maps: &mut MapsSnapshot) {
        self.collector.drain(maps);
    }

    fn finish<'a>(self: Box<Self>, cx: &'a mut Finish<'_>) -> Finishing<'a> {
        Box::pin(async move {
            let StackCopy { mut collector, cpu } = *self;
            collector.drain(cx.maps);
            let copied = cx.session.finish_stack_copy(collector)?;
            let pid = cx.pid;
            if cpu {
                cx.raw.cpu = copied.cpu.into_iter().filter(|s| s.tgid == pid).collect();
                cx.raw.records = copied.records;
            }
            cx.raw.offcpu = copied.offcpu;
            Ok(())
        })
    }
}

/// The database profile (statistics snapshots and the wire).
pub struct Database(pub DatabaseCollector);

impl Collector for Database {
    fn name(&self) -> &'static str {
        "database"
    }

    fn finish_order(&self) -> u8 {
        4
    }

    fn finish<'a>(self: Box<Self>, cx: &'a mut Finish<'_>) -> Finishing<'a> {
        Box::pin(async move {
            cx.raw.database = Some(self.0.finish(cx.session, cx.symbolizer).await);
            Ok(())
        })
    }

    fn back_off(&mut self, session: &mut KernelSession) -> Option<String> {
        session.db_tracing().then(|| {
            session.stop_db_tracing();
            "database wire tracer detached (no more call sites or N+1 detection from here on; pg_stat_statements is still read)".to_string()
        })
    }
}

/// The memory profile's task.
pub struct Memory(pub MemoryCollector);

impl Collector for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn finish_order(&self) -> u8 {
        0
    }

    fn finish<'a>(self: Box<Self>, cx: &'a mut Finish<'_>) -> Finishing<'a> {
        Box::pin(async move {
            cx.raw.memory = Some(self.0.finish().await?);
            Ok(())
        })
    }

    fn back_off(&mut self, _session: &mut KernelSession) -> Option<String> {
        self.0.back_off()
    }
}

/// tokio-console's gRPC stream, when the target runs console-subscriber.
pub struct Console {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::result::Result<ConsoleSummary, String>>,
}

impl Console {
    pub fn start(addr: &str) -> Box<dyn Collector> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let addr = addr.to_string();
        let task = tokio::spawn(async move {
            crate::console::watch(&addr, async {
                let _ = stopped.await;
            })
            .await
        });
        Box::new(Console { stop, task })
    }
}

impl Collector for Console {
    fn name(&self) -> &'static str {
        "console"
    }

    fn finish_order(&self) -> u8 {
        1
    }

    fn finish<'a>(self: Box<Self>, cx: &'a mut Finish<'_>) -> Finishing<'a> {
        Box::pin(async move {
            let _ = self.stop.send(());
            let read = self.task.await.map_err(|e| Error::internal(format!("the console reader panicked: {e}")))?;
            cx.raw.console = Some(read);
            Ok(())
        })
    }
}

/// Finishes every collector in the order given, each into `raw`.
pub async fn finish_all(collectors: Vec<Box<dyn Collector>>, cx: &mut Finish<'_>) -> Result<()> {
    for collector in collectors {
        collector.finish(cx).await?;
    }
    Ok(())
}
