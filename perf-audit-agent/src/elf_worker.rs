//! blazesym over one ELF file, on a worker thread with a deadline
//! (issue 24): a read that never returns (a FIFO swapped in after the
//! checks, a hung network file system) costs the audit that object's names,
//! not the audit. A worker past its deadline is abandoned (it holds only
//! its own symbolizer); the caller keeps `<object>+0x..` names and says
//! which object timed out.
//!
//! With DWARF allowed, a lookup that fails (blazesym's error, a panic) or
//! leaves addresses unnamed that the symbol table names means the DWARF is
//! damaged: those addresses are named from the symbol table and the answer
//! says the object lost its line info (row 6).

use std::{
    path::PathBuf,
    sync::mpsc,
    time::Duration,
};

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Source},
};

/// How addresses are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    FileOffset,
    VirtOffset,
}

/// One object's lookup (with inlined functions and file:line).
#[derive(Debug, Clone)]
pub struct ElfJob {
    pub path: PathBuf,
    /// blazesym may read the file's DWARF (see `safe_file::dwarf_hazard`).
    pub dwarf: bool,
    pub lookup: Lookup,
    pub addrs: Vec<u64>,
}

/// Per address: its converted symbol, or `None` when nothing names it.
#[derive(Debug)]
pub struct ElfAnswer<T> {
    pub items: Vec<Option<T>>,
    /// Why the DWARF was given up for the symbol table, when it was.
    pub dwarf_lost: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    /// The worker did not answer within the deadline.
    TimedOut(Duration),
    /// blazesym refused the file (its message).
    Failed(String),
}

impl std::fmt::Display for ElfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElfError::TimedOut(d) => write!(f, "symbolization did not finish within {:.0} s", d.as_secs_f64()),
            ElfError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Time one object may take to symbolize. A big binary's DWARF takes a few
/// seconds on a loaded machine; more than this is a stuck read.
pub const OBJECT_DEADLINE: Duration = Duration::from_secs(20);

fn symbolizer() -> Symbolizer {
    Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .enable_auto_reload(false)
        // The agent finds debug files itself (debuginfo::find_debug_file):
        // blazesym gets no directory to search.
        .set_debug_dirs(Some(&[] as &[PathBuf]))
        .build()
}

fn named(sym: &Symbolized<'_>) -> bool {
    matches!(sym, Symbolized::Sym(s) if !s.name.is_empty())
}

type Task = Box<dyn FnOnce(&Symbolizer) + Send>;

/// A worker thread owning one blazesym symbolizer (which keeps the files
/// and DWARF it parsed for the next job), replaced by a fresh one when a
/// job passes its deadline (the stuck thread is abandoned). Dropping it
/// ends the thread once its current job is done.
#[derive(Default)]
pub struct ElfWorker {
    tx: Option<mpsc::Sender<Task>>,
}

impl ElfWorker {
    pub fn new() -> Self {
        Self::default()
    }

    fn spawn() -> Result<mpsc::Sender<Task>, ElfError> {
        let (tx, rx) = mpsc::channel::<Task>();
        std::thread::Builder::new()
            .name("symbolize".into())
            .spawn(move || {
                let inner = symbolizer();
                while let Ok(task) = rx.recv() {
                    task(&inner);
                }
            })
            .map_err(|e| ElfError::Failed(format!("cannot start a symbolization thread: {e}")))?;
        Ok(tx)
    }

    /// Runs `job`; `convert` turns each named address's symbol into what
    /// the caller keeps (it runs on the worker).
    pub fn symbolize<T, F>(&mut self, job: ElfJob, deadline: Duration, convert: F) -> Result<ElfAnswer<T>, ElfError>
    where
        T: Send + 'static,
        F: Fn(Symbolized<'_>) -> T + Send + 'static,
    {
        let (answer_tx, answer_rx) = mpsc::sync_channel(1);
        let task: Task = Box::new(move |inner: &Symbolizer| {
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(inner, &job, &convert)))
                .unwrap_or_else(|_| Err(ElfError::Failed("blazesym panicked on this file".into())));
            let _ = answer_tx.send(answer);
        });
        let tx = match self.tx.take() {
            Some(tx) => tx,
            None => Self::spawn()?,
        };
        if let Err(mpsc::SendError(task)) = tx.send(task) {
            // The thread ended (it cannot, short of a bug): a new one.
            let tx = Self::spawn()?;
            let _ = tx.send(task);
            self.tx = Some(tx);
        } else {
            self.tx = Some(tx);
        }
        match answer_rx.recv_timeout(deadline) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Abandon the stuck worker: the next job gets a new one.
                self.tx = None;
                Err(ElfError::TimedOut(deadline))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.tx = None;
                Err(ElfError::Failed("the symbolization thread ended without an answer".into()))
            }
        }
    }
}

/// [`ElfWorker::symbolize`] on a worker of its own.
pub fn symbolize<T, F>(job: ElfJob, deadline: Duration, convert: F) -> Result<ElfAnswer<T>, ElfError>
where
    T: Send + 'static,
    F: Fn(Symbolized<'_>) -> T + Send + 'static,
{
    ElfWorker::new().symbolize(job, deadline, convert)
}

fn run<T>(inner: &Symbolizer, job: &ElfJob, convert: &dyn Fn(Symbolized<'_>) -> T) -> Result<ElfAnswer<T>, ElfError> {
    let lookup = |dwarf: bool, addrs: &[u64]| -> Result<Vec<Symbolized<'_>>, String> {
        let mut elf = Elf::new(&job.path);
        elf.debug_syms = dwarf;
        let source = Source::Elf(elf);
        let input = match job.lookup {
            Lookup::FileOffset => Input::FileOffset(addrs),
            Lookup::VirtOffset => Input::VirtOffset(addrs),
        };
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.symbolize(&source, input)));
        match caught {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(_) => Err("blazesym panicked".into()),
        }
    };
    let to_items = |syms: Vec<Symbolized<'_>>| -> Vec<Option<T>> {
        syms.into_iter().map(|s| if named(&s) { Some(convert(s)) } else { None }).collect()
    };
    if !job.dwarf {
        return lookup(false, &job.addrs).map(|s| ElfAnswer { items: to_items(s), dwarf_lost: None }).map_err(ElfError::Failed);
    }
    let first = match lookup(true, &job.addrs) {
        Ok(syms) => syms,
        Err(dwarf_error) => {
            let syms = lookup(false, &job.addrs).map_err(ElfError::Failed)?;
            return Ok(ElfAnswer { items: to_items(syms), dwarf_lost: Some(format!("its DWARF could not be read ({dwarf_error})")) });
        }
    };
    let mut items = to_items(first);
    let missing: Vec<usize> = (0..items.len()).filter(|i| items[*i].is_none()).collect();
    if missing.is_empty() {
        return Ok(ElfAnswer { items, dwarf_lost: None });
    }
    let addrs: Vec<u64> = missing.iter().map(|i| job.addrs[*i]).collect();
    let Ok(retry) = lookup(false, &addrs) else { return Ok(ElfAnswer { items, dwarf_lost: None }) };
    let mut recovered = 0usize;
    for (i, sym) in missing.iter().zip(retry) {
        if named(&sym) {
            items[*i] = Some(convert(sym));
            recovered += 1;
        }
    }
    let dwarf_lost = (recovered > 0).then(|| {
        format!("its DWARF is damaged: {recovered} of {} addresses it left unnamed were named from the symbol table", job.addrs.len())
    });
    Ok(ElfAnswer { items, dwarf_lost })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_whose_open_never_returns_times_out() {
        let dir = std::env::temp_dir().join(format!("perf-audit-elf-worker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("svc");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let job = ElfJob { path: fifo.clone(), dwarf: false, lookup: Lookup::FileOffset, addrs: vec![0x1000] };
        let start = std::time::Instant::now();
        let answer = symbolize(job, Duration::from_millis(300), |s| format!("{s:?}"));
        assert_eq!(answer.unwrap_err(), ElfError::TimedOut(Duration::from_millis(300)));
        assert!(start.elapsed() < Duration::from_secs(2));
        // Unblock the abandoned worker (it opened the FIFO for reading).
        let _ = std::fs::OpenOptions::new().write(true).custom_flags_nonblock().open(&fifo);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    trait NonBlock {
        fn custom_flags_nonblock(&mut self) -> &mut Self;
    }
    impl NonBlock for std::fs::OpenOptions {
        fn custom_flags_nonblock(&mut self) -> &mut Self {
            use std::os::unix::fs::OpenOptionsExt as _;
            self.custom_flags(libc::O_NONBLOCK)
        }
    }

    #[test]
    fn our_own_test_binary_is_named_through_the_worker() {
        let exe = std::env::current_exe().unwrap();
        let facts = crate::debuginfo::ObjectFacts::read(&exe).unwrap();
        let offset = crate::debuginfo::function_file_offset(&exe, "perf_audit_agent::debuginfo::crate_facts").unwrap();
        let _ = facts;
        let job = ElfJob { path: exe, dwarf: true, lookup: Lookup::FileOffset, addrs: vec![offset, u64::MAX - 1] };
        let answer = symbolize(job, OBJECT_DEADLINE, |s| match s {
            Symbolized::Sym(s) => s.name.to_string(),
            Symbolized::Unknown(_) => String::new(),
        })
        .unwrap();
        assert!(answer.items[0].as_deref().is_some_and(|n| n.contains("crate_facts")), "{:?}", answer.items);
        assert!(answer.items[1].is_none());
        assert_eq!(answer.dwarf_lost, None);
    }
}
