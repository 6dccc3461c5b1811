//! Database wire tracing: attaching `db_write`/`db_sendto`/`db_writev` to
//! the syscall tracepoints, keeping the in-kernel set of database sockets
//! (`DB_FDS`) current, and reading `DbWriteEvent`s back through the common
//! [`RingReader`], each with its user stack unwound at once (like the CPU
//! stack-copy collector) so that the 33 KiB records never pile up. No protocol parsing here: that is the
//! database module's job.

use std::{collections::BTreeSet, path::Path};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::{TracePoint, trace_point::TracePointLinkId},
};
use perf_audit_common::{DB_FDS_CAPACITY, DbFdKey, DbWriteEvent, names};

use super::{load_error, missing, ring::RingReader};
use crate::{
    error::{Error, ErrorKind, Result},
    target::MapsSnapshot,
    unwind::{SharedUnwinder, UnwindEnd},
};

/// (program, tracepoint) pairs: every syscall a socket write may use.
const PROGRAMS: [(&str, &str); 3] = [
    (names::DB_WRITE_PROGRAM, "sys_enter_write"),
    (names::DB_SENDTO_PROGRAM, "sys_enter_sendto"),
    (names::DB_WRITEV_PROGRAM, "sys_enter_writev"),
];

pub(super) struct DbTracing {
    links: Vec<(&'static str, TracePointLinkId)>,
}

impl DbTracing {
    pub(super) fn attach(ebpf: &mut Ebpf) -> Result<DbTracing> {
        ensure_tracefs()?;
        let mut links = Vec::new();
        for (name, tracepoint) in PROGRAMS {
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

/// One write to a database socket, its stack unwound to addresses.
#[derive(Debug, Clone)]
pub struct RawDbWrite {
    /// Monotonic nanoseconds (CLOCK_MONOTONIC, as `bpf_ktime_get_ns`).
    pub ts_ns: u64,
    pub tid: u32,
    pub thread_name: String,
    pub fd: u32,
    /// A `perf_audit_common::db_syscall` value.
    pub syscall: u32,
    /// Bytes the syscall was asked to write.
    pub len: u64,
    /// The first bytes written (at most `DB_PAYLOAD_BYTES`).
    pub payload: Vec<u8>,
    /// User frames, leaf first (as `RawCpuStack::user`).
    pub user: Vec<u64>,
    pub stack_truncated: bool,
}

/// Reads `DB_EVENTS` as writes arrive and unwinds each one.
pub struct DbWriteReader {
    reader: RingReader<DbWriteEvent>,
    unwinder: SharedUnwinder,
}

impl DbWriteReader {
    /// Parses the unwind tables of every object mapped in the target now,
    /// so that the first writes are not dropped while the reader is busy
    /// loading them.
    pub fn warm_up(&mut self, maps: &MapsSnapshot) {
        self.unwinder.warm_up(maps);
    }

    /// Waits until the ring has records.
    pub async fn readable(&mut self) {
        self.reader.readable().await;
    }

    /// Unwinds and hands over every record in the ring now.
    pub fn drain(&mut self, maps: &mut MapsSnapshot, mut out: impl FnMut(RawDbWrite)) {
        self.reader.drain(maps, |event, unwind| {
            let (user, end) = if event.stack_len == 0 { (Vec::new(), UnwindEnd::Truncated) } else { unwind.frames() };
            let payload_len = (event.payload_len as usize).min(event.payload.len());
            out(RawDbWrite {
                ts_ns: event.ts_ns,
                tid: event.tid,
                thread_name: super::cpu::comm_to_string(&event.comm),
                fd: event.fd,
                syscall: event.syscall,
                len: event.len,
                payload: event.payload[..payload_len].to_vec(),
                user,
                stack_truncated: end == UnwindEnd::Truncated,
            });
        });
    }
}

/// Takes `DB_FDS` and `DB_EVENTS` out of the object for the unwinder's process.
pub(super) fn take_parts(ebpf: &mut Ebpf, unwinder: &SharedUnwinder) -> Result<(DbFdSet, DbWriteReader)> {
    let pid = unwinder.pid();
    let fds = ebpf.take_map(names::DB_FDS).ok_or_else(|| missing(names::DB_FDS))?;
    let map = BpfHashMap::try_from(fds).map_err(|e| Error::internal(format!("DB_FDS: {e}")))?;
    let events = ebpf.take_map(names::DB_EVENTS).ok_or_else(|| missing(names::DB_EVENTS))?;
    let ring = RingBuf::try_from(events).map_err(|e| Error::internal(format!("DB_EVENTS: {e}")))?;
    Ok((
        DbFdSet { map, tgid: pid, current: BTreeSet::new(), rejected: 0 },
        DbWriteReader { reader: RingReader::new(ring, unwinder.clone(), names::DB_EVENTS)?, unwinder: unwinder.clone() },
    ))
}
