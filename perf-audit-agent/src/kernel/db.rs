//! Database wire tracing: attaching `db_write`/`db_sendto`/`db_writev`/`db_sendmsg` to
//! the syscall tracepoints, keeping the in-kernel set of database sockets
//! (`DB_FDS`) current, telling the stack fingerprint where the target's code
//! is (`DB_TEXT`), and reading back the small `DbWriteRecord`s (payload
//! prefix + stack fingerprint, one per write) and the `DbStackEvent`s (one
//! per new fingerprint) through the common [`RingReader`], each stack
//! unwound at once. No protocol parsing here: that is the database
//! module's job.

use std::{collections::BTreeSet, path::Path};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, RingBuf},
    programs::{TracePoint, trace_point::TracePointLinkId},
};
use perf_audit_common::{DB_FDS_CAPACITY, DB_TEXT_RANGES, DB_WALK_COMPLETE, DbFdKey, DbIoEvent, DbStackEvent, DbWriteRecord, NO_ANSWER, db_io, memory::TextRange, names};
use tokio::io::unix::AsyncFd;

use super::{load_error, missing, ring::RingReader};
use crate::{
    error::{Error, ErrorKind, Result},
    target::MapsSnapshot,
    unwind::{SharedUnwinder, UnwindEnd},
};


pub(super) struct DbTracing {
    links: Vec<(&'static str, TracePointLinkId)>,
}

impl DbTracing {
    pub(super) fn attach(ebpf: &mut Ebpf) -> Result<DbTracing> {
        ensure_tracefs()?;
        let mut links = Vec::new();
        for (name, tracepoint) in names::DB_TRACEPOINTS {
            let program: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| missing(name))?
                .try_into()
                .map_err(|e| Error::internal(format!("{name} is not a tracepoint program: {e}")))?;
            if program.fd().is_err() {
                program.load().map_err(|e| load_error(&format!("loading {name}"), &e))?;
            }
            let link = program
                .attach("syscalls", tracepoint)
                .map_err(|e| load_error(&format!("attaching {name} to syscalls:{tracepoint}"), &e))?;
            links.push((name, link));
        }
        Ok(DbTracing { links })
    }

    pub(super) fn detach(self, ebpf: &mut Ebpf) {
        for (name, link) in self.links {
            if let Some(program) = ebpf.program_mut(name) {
                let program: std::result::Result<&mut TracePoint, _> = program.try_into();
                if let Ok(program) = program {
                    let _ = program.detach(link);
                }
            }
        }
    }
}

/// Mounts tracefs at /sys/kernel/tracing when no tracefs is mounted (the
/// tracepoints are found through it).
pub fn ensure_tracefs() -> Result<()> {
    const MOUNT_POINT: &str = "/sys/kernel/tracing";
    if Path::new("/sys/kernel/tracing/events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (source, target, fstype) = (c("nodev"), c(MOUNT_POINT), c("tracefs"));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::new(
            ErrorKind::KernelUnsupported,
            format!(
                "tracefs is not mounted and mounting it at {MOUNT_POINT} failed ({err}): run `mount -t tracefs nodev {MOUNT_POINT}`"
            ),
        ));
    }
    Ok(())
}

/// The in-kernel set of database sockets of one process.
pub struct DbFdSet {
    map: BpfHashMap<MapData, DbFdKey, u8>,
    tgid: u32,
    current: BTreeSet<u32>,
    /// Sockets that could not be added because the map was full.
    pub rejected: u64,
}

impl DbFdSet {
    /// Makes the kernel set equal to `fds`; returns the fds newly added.
    pub fn sync(&mut self, fds: &BTreeSet<u32>) -> Vec<u32> {
        let stale: Vec<u32> = self.current.difference(fds).copied().collect();
        for fd in stale {
            let _ = self.map.remove(&DbFdKey { tgid: self.tgid, fd });
            self.current.remove(&fd);
        }
        let mut added = Vec::new();
        for fd in fds.difference(&self.current.clone()) {
            if self.current.len() as u32 >= DB_FDS_CAPACITY
                || self.map.insert(DbFdKey { tgid: self.tgid, fd: *fd }, 1, 0).is_err()
            {
                self.rejected += 1;
                continue;
            }
            self.current.insert(*fd);
            added.push(*fd);
        }
        added
    }

    pub fn current(&self) -> &BTreeSet<u32> {
        &self.current
    }
}

/// One write to a database socket and its stack fingerprint.
#[derive(Debug, Clone)]
pub struct RawDbWrite {
    /// Monotonic nanoseconds (CLOCK_MONOTONIC, as `bpf_ktime_get_ns`).
    pub ts_ns: u64,
    pub tid: u32,
    pub fd: u32,
    /// A `perf_audit_common::db_syscall` value.
    pub syscall: u32,
    /// Bytes the syscall was asked to write.
    pub len: u64,
    /// Stack fingerprint: the key of a [`RawDbStack`] (0: none).
    pub site: u64,
    /// The first bytes written (at most `DB_PAYLOAD_BYTES`).
    pub payload: Vec<u8>,
    /// The database connection (fd) whose answer this write waited for;
    /// `None` for a write that did not directly follow one.
    pub answer: Option<u32>,
    /// Execute messages in the whole write, counted in the kernel past the
    /// prefix; `None` when the write fit in the prefix or the count is
    /// incomplete (see `DbWriteRecord::executes`).
    pub executes: Option<u32>,
}

/// An answer of the server or another socket's I/O inside a transaction
/// (`perf_audit_common::DbIoEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDbIo {
    pub ts_ns: u64,
    pub tid: u32,
    /// The database connection (an answer) or the other socket.
    pub fd: u32,
    pub kind: RawDbIoKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawDbIoKind {
    /// ReadyForQuery with this transaction status byte.
    Answer(u8),
    /// A send to another socket while the thread's transaction on `xact_fd` is open.
    OtherSend { xact_fd: u32 },
    OtherRecv { xact_fd: u32 },
}

/// The stack of the first write seen with a fingerprint, unwound.
#[derive(Debug, Clone)]
pub struct RawDbStack {
    pub site: u64,
    /// User frames, leaf first (as `RawCpuStack::user`).
    pub user: Vec<u64>,
    pub truncated: bool,
}

/// Reads `DB_EVENTS` (writes, submitted without a wake-up: drained on the
/// collector's timer) and `DB_STACKS` (new call sites' stacks, unwound on
/// arrival).
pub struct DbWriteReader {
    writes: AsyncFd<RingBuf<MapData>>,
    stacks: RingReader<DbStackEvent>,
    io: RingBuf<MapData>,
    unwinder: SharedUnwinder,
    /// Items too short for a record (a stale build): skipped.
    pub malformed: u64,
}

impl DbWriteReader {
    /// Parses the unwind tables of every object mapped in the target now,
    /// so that the first stacks are unwound without delay.
    pub fn warm_up(&mut self, maps: &MapsSnapshot) {
        self.unwinder.warm_up(maps);
    }

    /// Hands over every new stack, then every write, in the rings now.
    /// Answers and other sockets' I/O (`DB_IO`), in the ring now.
    pub fn drain_io(&mut self, mut io: impl FnMut(RawDbIo)) {
        let pid = self.unwinder.pid();
        while let Some(item) = self.io.next() {
            if item.len() < std::mem::size_of::<DbIoEvent>() {
                self.malformed += 1;
                continue;
            }
            // SAFETY: long enough; plain data, read unaligned.
            let e: DbIoEvent = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            if e.tgid != pid {
                continue;
            }
            let kind = match e.kind {
                db_io::ANSWER => RawDbIoKind::Answer(e.status),
                db_io::OTHER_SEND => RawDbIoKind::OtherSend { xact_fd: e.xact_fd },
                db_io::OTHER_RECV => RawDbIoKind::OtherRecv { xact_fd: e.xact_fd },
                _ => {
                    self.malformed += 1;
                    continue;
                }
            };
            io(RawDbIo { ts_ns: e.ts_ns, tid: e.tid, fd: e.fd, kind });
        }
    }

    pub fn drain(&mut self, maps: &mut MapsSnapshot, mut stack: impl FnMut(RawDbStack), mut write: impl FnMut(RawDbWrite)) {
        self.stacks.drain(maps, |event, unwind| {
            let (user, end) = if event.stack_len == 0 { (Vec::new(), UnwindEnd::Truncated) } else { unwind.frames() };
            stack(RawDbStack { site: event.site, user, truncated: end == UnwindEnd::Truncated });
        });
        let pid = self.unwinder.pid();
        let ring = self.writes.get_mut();
        while let Some(item) = ring.next() {
            if item.len() < std::mem::size_of::<DbWriteRecord>() {
                self.malformed += 1;
                continue;
            }
            // SAFETY: long enough; `DbWriteRecord` is plain data (any bit
            // pattern valid); read unaligned, copied out (584 bytes).
            let r: DbWriteRecord = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            if r.tgid != pid {
                continue;
            }
            let payload_len = (r.payload_len as usize).min(r.payload.len());
            write(RawDbWrite {
                ts_ns: r.ts_ns,
                tid: r.tid,
                fd: r.fd,
                syscall: r.syscall,
                len: r.len,
                site: r.site,
                payload: r.payload[..payload_len].to_vec(),
                answer: (r.answer_fd != NO_ANSWER).then_some(r.answer_fd),
                executes: (r.walk == DB_WALK_COMPLETE).then_some(r.executes),
            });
        }
    }
}

/// Takes `DB_FDS`, `DB_EVENTS` and `DB_STACKS` out of the object for the
/// unwinder's process and writes the target's code ranges (`text`, its
/// executable first) into `DB_TEXT`.
pub(super) fn take_parts(ebpf: &mut Ebpf, unwinder: &SharedUnwinder, text: &[(u64, u64)]) -> Result<(DbFdSet, DbWriteReader)> {
    let pid = unwinder.pid();
    {
        let mut ranges: Array<_, TextRange> =
            Array::try_from(ebpf.map_mut(names::DB_TEXT).ok_or_else(|| missing(names::DB_TEXT))?).map_err(|e| Error::internal(format!("DB_TEXT: {e}")))?;
        for (i, (start, end)) in text.iter().take(DB_TEXT_RANGES as usize).enumerate() {
            ranges.set(i as u32, TextRange { start: *start, end: *end }, 0).map_err(|e| Error::internal(format!("DB_TEXT: {e}")))?;
        }
    }
    let fds = ebpf.take_map(names::DB_FDS).ok_or_else(|| missing(names::DB_FDS))?;
    let map = BpfHashMap::try_from(fds).map_err(|e| Error::internal(format!("DB_FDS: {e}")))?;
    let events = ebpf.take_map(names::DB_EVENTS).ok_or_else(|| missing(names::DB_EVENTS))?;
    let ring = RingBuf::try_from(events).map_err(|e| Error::internal(format!("DB_EVENTS: {e}")))?;
    // SAFETY: the ring buffer owns its fd, open for as long as the AsyncFd owns the ring.
    let writes = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::internal(format!("cannot poll the ring buffer DB_EVENTS: {e}")))?;
    let stacks = ebpf.take_map(names::DB_STACKS).ok_or_else(|| missing(names::DB_STACKS))?;
    let stacks = RingBuf::try_from(stacks).map_err(|e| Error::internal(format!("DB_STACKS: {e}")))?;
    let io = ebpf.take_map(names::DB_IO).ok_or_else(|| missing(names::DB_IO))?;
    let io = RingBuf::try_from(io).map_err(|e| Error::internal(format!("DB_IO: {e}")))?;
    Ok((
        DbFdSet { map, tgid: pid, current: BTreeSet::new(), rejected: 0 },
        DbWriteReader {
            writes,
            stacks: RingReader::new(stacks, unwinder.clone(), names::DB_STACKS)?,
            io,
            unwinder: unwinder.clone(),
            malformed: 0,
        },
    ))
}
