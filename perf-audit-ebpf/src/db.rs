//! Database wire tracing: the target's writes to its database connections.
//!
//! Four syscall tracepoints (`write`, `sendto`, `writev`, `sendmsg`: Rust's
//! `TcpStream` writes with `send`, which is `sendto(2)`; `UnixStream` and
//! vectored writes use `write`/`writev`; `sendmsg` only the first iovec). Each filters first on the target pid
//! (`TARGET_PIDS`), then on the (tgid, fd) pair being a database connection
//! (`DB_FDS`, kept current by the agent from /proc), so every other write on
//! the machine costs two map lookups at most. A matching write reserves one
//! small `DbWriteRecord` in `DB_EVENTS` and fills it in place: the first
//! `DB_PAYLOAD_BYTES` written (PostgreSQL frontend messages, parsed by the
//! agent) and a fingerprint of its user stack (the code addresses in the
//! `DB_FINGERPRINT_BYTES` above the stack pointer, as the memory profile
//! keys allocation sites), mixed with the statement's identity (the first
//! message's type and statement name, see `statement_identity`) and the
//! connection: two call sites whose innermost 1 KiB are the same I/O
//! frames, as through sqlx, still differ by what they run. The stack itself is copied only for a
//! key not seen before (`DB_KNOWN_STACKS`, LRU): one `DbStackEvent`
//! in `DB_STACKS` per call site, unwound by the agent, so each query is
//! tied to the code that sent it without a 32 KiB copy per write. A full
//! ring drops the write (or the new site's stack, retried on the next write
//! from it) and counts it.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns, generated::bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use perf_audit_common::{
    Counter, DB_EVENTS_RING_BYTES, DB_FDS_CAPACITY, DB_FINGERPRINT_BYTES, DB_KNOWN_STACKS_CAPACITY, DB_PAYLOAD_BYTES,
    DB_IO_RING_BYTES, DB_STACK_COPY_BYTES, DB_STACKS_RING_BYTES, DB_TEXT_RANGES, DB_THREADS_CAPACITY, DB_WALK_COMPLETE, DB_WALK_HOPS,
    DB_WALK_INCOMPLETE, DB_WALK_NONE, DbFdKey, DbIoEvent, DbStackEvent, DbThread, DbWriteRecord, NO_ANSWER, TASK_COMM_LEN, db_io,
    db_syscall, memory::TextRange,
};

use crate::{
    maps::{bump, current_target_thread},
    stack::{self, in_range, mix},
};

/// Offsets of the arguments in the `syscalls:sys_enter_*` records (after
/// the 8-byte common header and the syscall number): fd, buffer, length.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;

const BPF_NOEXIST: u64 = 1;
const BPF_RB_NO_WAKEUP: u64 = 1;
const SCAN_WORDS: usize = DB_FINGERPRINT_BYTES / 8;

#[map(name = "DB_FDS")]
static DB_FDS: HashMap<DbFdKey, u8> = HashMap::with_max_entries(DB_FDS_CAPACITY, 0);

#[map(name = "DB_EVENTS")]
static DB_EVENTS: RingBuf = RingBuf::with_byte_size(DB_EVENTS_RING_BYTES, 0);

#[map(name = "DB_STACKS")]
static DB_STACKS: RingBuf = RingBuf::with_byte_size(DB_STACKS_RING_BYTES, 0);

/// Answers (each read that ends with ReadyForQuery: the server's
/// transaction status) and other sockets' I/O inside transactions.
#[map(name = "DB_IO")]
static DB_IO: RingBuf = RingBuf::with_byte_size(DB_IO_RING_BYTES, 0);

#[map(name = "DB_KNOWN_STACKS")]
static DB_KNOWN_STACKS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(DB_KNOWN_STACKS_CAPACITY, 0);

/// The target's code ranges (its executable first), set by the agent.
#[map(name = "DB_TEXT")]
static DB_TEXT: Array<TextRange> = Array::with_max_entries(DB_TEXT_RANGES, 0);

/// Per thread: the database connection whose answer it read last, and the
/// one being read (see "What a write waited for" below).
#[map(name = "DB_THREADS")]
static DB_THREADS: LruHashMap<u32, DbThread> = LruHashMap::with_max_entries(DB_THREADS_CAPACITY, 0);

/// The thread's entry, when it has one (a lock-free lookup).
#[inline(always)]
fn thread_entry(tid: u32) -> Option<*mut DbThread> {
    DB_THREADS.get_ptr_mut(&tid)
}

/// The thread no longer waits for any answer.
#[inline(always)]
fn forget_answer(tid: u32) {
    if let Some(t) = thread_entry(tid) {
        // SAFETY: a value of this map; only this thread writes its entry.
        unsafe { (*t).answer_fd = NO_ANSWER };
    }
}

/// One `DbIoEvent` (dropped, not counted, when the ring is full: the
/// agent's transaction spans then miss an answer and say less).
#[inline(always)]
fn send_io(tgid: u32, tid: u32, fd: u32, xact_fd: u32, kind: u8, status: u8) {
    // SAFETY: a helper without arguments.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let event = DbIoEvent { ts_ns, tgid, tid, fd, xact_fd, kind, status, _pad: [0; 6] };
    let _ = DB_IO.output::<DbIoEvent>(&event, BPF_RB_NO_WAKEUP);
}

/// A send to or receive from a socket that is not a database connection:
/// the thread no longer waits for an answer, and when its last database
/// answer was inside a transaction, the transaction's connection is told
/// (an HTTP call, a Redis call made while a transaction stays open).
#[inline(always)]
fn other_socket_io(tgid: u32, tid: u32, fd: u32, kind: u8) {
    if let Some(t) = thread_entry(tid) {
        // SAFETY: as in `forget_answer`.
        let xact = unsafe {
            (*t).answer_fd = NO_ANSWER;
            (*t).xact_fd
        };
        if xact != NO_ANSWER {
            send_io(tgid, tid, fd, xact, kind, 0);
        }
    }
}

/// Per-CPU scratch for the fingerprint's stack read.
#[map(name = "DB_SCRATCH")]
static DB_SCRATCH: PerCpuArray<[u64; SCAN_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Hash of the code addresses in the `DB_FINGERPRINT_BYTES` above `sp`
/// (the return addresses of the frames down to the owner's code, and
/// whatever else code-like lies there: a call site may get a few
/// fingerprints, never one for two sites). Near the top of the stack, the
/// first 512 bytes.
#[inline(always)]
fn fingerprint(sp: u64) -> u64 {
    let Some(scratch) = DB_SCRATCH.get_ptr_mut(0) else { return 1 };
    // SAFETY: reads user memory into our per-CPU scratch of the same size.
    let mut read = unsafe { bpf_probe_read_user(scratch.cast(), DB_FINGERPRINT_BYTES as u32, sp as *const _) };
    let mut words_read = SCAN_WORDS;
    if read != 0 {
        // SAFETY: as above, a prefix of the scratch.
        read = unsafe { bpf_probe_read_user(scratch.cast(), 512, sp as *const _) };
        words_read = 64;
        if read != 0 {
            return 1;
        }
    }
    let empty = TextRange { start: 0, end: 0 };
    let r0 = *DB_TEXT.get(0).unwrap_or(&empty);
    let r1 = *DB_TEXT.get(1).unwrap_or(&empty);
    let r2 = *DB_TEXT.get(2).unwrap_or(&empty);
    let r3 = *DB_TEXT.get(3).unwrap_or(&empty);
    // SAFETY: the scratch slot is this CPU's and was just filled (up to `words_read`).
    let words = unsafe { &*scratch };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    // No early exit: every iteration ends in the same verifier state.
    while i < SCAN_WORDS {
        let v = words[i];
        if i < words_read && (in_range(v, &r0) || in_range(v, &r1) || in_range(v, &r2) || in_range(v, &r3)) {
            h = mix(h, v);
        }
        i += 1;
    }
    h | 1
}

#[tracepoint]
pub fn db_write(ctx: TracePointContext) -> u32 {
    on_write(&ctx, db_syscall::WRITE)
}

#[tracepoint]
pub fn db_sendto(ctx: TracePointContext) -> u32 {
    on_write(&ctx, db_syscall::SENDTO)
}

#[tracepoint]
pub fn db_writev(ctx: TracePointContext) -> u32 {
    on_write(&ctx, db_syscall::WRITEV)
}

#[tracepoint]
pub fn db_sendmsg(ctx: TracePointContext) -> u32 {
    on_write(&ctx, db_syscall::SENDMSG)
}

// What a write waited for. A loop of queries is one task sending a
// statement, waiting for its answer, and sending the next: on the thread
// that runs it, the read that returns an answer is followed by the next
// write with nothing in between. Independent requests are not: a thread
// serving a new request first reads that request from another socket (or
// sleeps, waiting for work). So each thread remembers the database
// connection whose answer it read last (`DB_THREADS`, set when a
// `read`/`recvfrom` on a database socket returns data), forgotten when it
// `recvfrom`s another socket, `sendto`/`sendmsg`/`writev`s another fd, or
// waits on a futex; the next
// write to the database carries it (`answer_fd`) and consumes it. The agent chains writes by it,
// whatever the database's distance or the load.

const FUTEX_CMD_MASK: u64 = !(128 | 256);
const FUTEX_WAIT: u64 = 0;
const FUTEX_LOCK_PI: u64 = 6;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAIT_REQUEUE_PI: u64 = 11;
const FUTEX_LOCK_PI2: u64 = 13;
/// `ret` in the `syscalls:sys_exit_*` records.
const RET: usize = 16;

#[tracepoint]
pub fn db_read_enter(ctx: TracePointContext) -> u32 {
    on_read_enter(&ctx, false)
}

#[tracepoint]
pub fn db_recvfrom_enter(ctx: TracePointContext) -> u32 {
    on_read_enter(&ctx, true)
}

#[tracepoint]
pub fn db_read_exit(ctx: TracePointContext) -> u32 {
    on_read_exit(&ctx)
}

#[tracepoint]
pub fn db_recvfrom_exit(ctx: TracePointContext) -> u32 {
    on_read_exit(&ctx)
}

/// A wait on a futex (a lock, a condition variable, a parked thread): the
/// thread stops running what it ran; what it sends next did not wait for
/// the last answer alone.
#[tracepoint]
pub fn db_futex(ctx: TracePointContext) -> u32 {
    let Some((_, tid)) = current_target_thread() else {
        return 0;
    };
    // SAFETY: a read inside the tracepoint record.
    let op: u64 = unsafe { ctx.read_at(ARG1) }.unwrap_or(0) & FUTEX_CMD_MASK;
    if matches!(op, FUTEX_WAIT | FUTEX_WAIT_BITSET | FUTEX_LOCK_PI | FUTEX_LOCK_PI2 | FUTEX_WAIT_REQUEUE_PI) {
        forget_answer(tid);
    }
    0
}

/// A read starts: from a database socket, remembered until it returns; a
/// `recvfrom` on any other socket (a request read by a server) ends what
/// the thread was doing. `read` on other fds (files, eventfds) does not.
#[inline(always)]
fn on_read_enter(ctx: &TracePointContext, socket_call: bool) -> u32 {
    let Some((tgid, tid)) = current_target_thread() else {
        return 0;
    };
    // SAFETY: a read inside the tracepoint record.
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.unwrap_or(u64::MAX);
    // SAFETY: as above.
    let buf: u64 = unsafe { ctx.read_at(ARG1) }.unwrap_or(0);
    if DB_FDS.get_ptr(&DbFdKey { tgid, fd: fd as u32 }).is_some() {
        match thread_entry(tid) {
            // SAFETY: as in `forget_answer`.
            Some(t) => unsafe {
                (*t).reading_fd = fd as u32;
                (*t).read_buf = buf;
            },
            None => {
                let entry = DbThread { answer_fd: NO_ANSWER, reading_fd: fd as u32, xact_fd: NO_ANSWER, _pad: 0, read_buf: buf };
                let _ = DB_THREADS.insert(&tid, &entry, 0);
            }
        }
    } else if socket_call {
        other_socket_io(tgid, tid, fd as u32, db_io::OTHER_RECV);
    }
    0
}

/// A database read returns: with data, that connection's answer is what
/// the thread read last.
#[inline(always)]
fn on_read_exit(ctx: &TracePointContext) -> u32 {
    let Some((tgid, tid)) = current_target_thread() else {
        return 0;
    };
    let Some(t) = thread_entry(tid) else {
        return 0;
    };
    // SAFETY: as in `forget_answer`; a read inside the tracepoint record.
    let (fd, ret, buf) = unsafe {
        let fd = (*t).reading_fd;
        if fd == NO_ANSWER {
            return 0;
        }
        (*t).reading_fd = NO_ANSWER;
        let ret: i64 = ctx.read_at(RET).unwrap_or(-1);
        if ret > 0 {
            (*t).answer_fd = fd;
        }
        (fd, ret, (*t).read_buf)
    };
    // An answer ends with ReadyForQuery (`Z`, length 5, the transaction
    // status): the last 6 bytes read. Other reads (a part of a long
    // answer) end otherwise and are not reported.
    if ret < 6 || buf == 0 {
        return 0;
    }
    let mut tail = [0u8; 6];
    // SAFETY: a user read into a local array of the right size.
    let rc = unsafe { bpf_probe_read_user(tail.as_mut_ptr().cast(), 6, (buf + ret as u64 - 6) as *const _) };
    if rc != 0 || tail[0] != b'Z' || tail[1] != 0 || tail[2] != 0 || tail[3] != 0 || tail[4] != 5 {
        return 0;
    }
    let status = tail[5];
    // SAFETY: as in `forget_answer`.
    unsafe { (*t).xact_fd = if status == b'T' || status == b'E' { fd } else { NO_ANSWER } };
    send_io(tgid, tid, fd, NO_ANSWER, db_io::ANSWER, status);
    0
}

#[inline(always)]
fn on_write(ctx: &TracePointContext, syscall: u32) -> u32 {
    let Some((tgid, tid)) = current_target_thread() else {
        return 0;
    };
    // SAFETY: reads inside the tracepoint record.
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.unwrap_or(u64::MAX);
    let key = DbFdKey { tgid, fd: fd as u32 };
    if DB_FDS.get_ptr(&key).is_none() {
        // A send to another socket (a response to a client, a call to
        // another service): the thread moved on.
        // (`writev` too: hyper writes its responses with it; plain `write`
        // is not, as tokio's wake-ups write to an eventfd mid-task.)
        if syscall != db_syscall::WRITE {
            other_socket_io(tgid, tid, fd as u32, db_io::OTHER_SEND);
        }
        return 0;
    }
    // One answer, one write: a second write with no new answer read (another
    // task polled on this thread) did not wait for it. A write to another
    // database connection than the thread's open transaction's is another
    // task's: the transaction is no longer what the thread runs.
    let answer = match thread_entry(tid) {
        // SAFETY: as in `forget_answer`.
        Some(t) => unsafe {
            if (*t).xact_fd != fd as u32 {
                (*t).xact_fd = NO_ANSWER;
            }
            let fd = (*t).answer_fd;
            (*t).answer_fd = NO_ANSWER;
            fd
        },
        None => NO_ANSWER,
    };
    bump(Counter::DbWrites);
    // SAFETY: as above.
    let (mut data, mut len): (u64, u64) =
        unsafe { (ctx.read_at(ARG1).unwrap_or(0), ctx.read_at(ARG2).unwrap_or(0)) };
    if syscall == db_syscall::SENDMSG {
        // `struct msghdr { void *name; int namelen; struct iovec *iov;
        // size_t iovlen; ... }`: its iovec array, then as for writev.
        let mut iov_ptr = 0u64;
        // SAFETY: a user read into a local of the right size.
        let rc = unsafe { bpf_probe_read_user((&mut iov_ptr as *mut u64).cast(), 8, (data + 16) as *const _) };
        if rc != 0 {
            bump(Counter::DbPayloadReadFailed);
            return 0;
        }
        data = iov_ptr;
    }
    if syscall == db_syscall::WRITEV || syscall == db_syscall::SENDMSG {
        // The first `struct iovec { void *base; size_t len; }`.
        let mut iov = [0u64; 2];
        // SAFETY: a user read into a local array of the right size.
        let rc = unsafe { bpf_probe_read_user(iov.as_mut_ptr().cast(), 16, data as *const _) };
        if rc != 0 {
            bump(Counter::DbPayloadReadFailed);
            return 0;
        }
        data = iov[0];
        len = iov[1];
    }
    let regs = stack::user_regs();

    let Some(mut entry) = DB_EVENTS.reserve::<DbWriteRecord>(0) else {
        bump(Counter::DbWritesDroppedRingFull);
        return 0;
    };
    let record = entry.as_mut_ptr();
    let comm = bpf_get_current_comm().unwrap_or([0u8; TASK_COMM_LEN]);
    // SAFETY: `record` points at a reserved record of the right size; every
    // write below stays inside its fields.
    let identity = unsafe {
        let payload = core::ptr::addr_of_mut!((*record).payload) as *mut u8;
        // Read a full prefix; when the buffer ends within an unmapped page,
        // read exactly `len` (bounded for the verifier).
        let mut copied: u32 = 0;
        if len > 0 {
            if bpf_probe_read_user(payload.cast(), DB_PAYLOAD_BYTES as u32, data as *const _) == 0 {
                copied = if len < DB_PAYLOAD_BYTES as u64 { len as u32 } else { DB_PAYLOAD_BYTES as u32 };
            } else if len < DB_PAYLOAD_BYTES as u64 {
                let n = (len as u32) & (DB_PAYLOAD_BYTES as u32 - 1);
                if bpf_probe_read_user(payload.cast(), n, data as *const _) == 0 {
                    copied = n;
                }
            }
            if copied == 0 {
                bump(Counter::DbPayloadReadFailed);
            }
        }
        core::ptr::addr_of_mut!((*record).tgid).write(tgid);
        core::ptr::addr_of_mut!((*record).tid).write(tid);
        core::ptr::addr_of_mut!((*record).fd).write(fd as u32);
        core::ptr::addr_of_mut!((*record).syscall).write(syscall);
        core::ptr::addr_of_mut!((*record).len).write(len);
        core::ptr::addr_of_mut!((*record).ts_ns).write(bpf_ktime_get_ns());
        core::ptr::addr_of_mut!((*record).payload_len).write(copied);
        core::ptr::addr_of_mut!((*record).answer_fd).write(answer);
        let (executes, walk) = if len > copied as u64 && copied > 0 { count_executes(data, len) } else { (0, DB_WALK_NONE) };
        core::ptr::addr_of_mut!((*record).executes).write(executes);
        core::ptr::addr_of_mut!((*record).walk).write(walk);
        core::ptr::addr_of_mut!((*record).comm).write(comm);
        // A lone Sync (`S`, length 4: what sqlx sends to check a
        // connection on acquiring and releasing it, half of its writes)
        // runs no statement: it needs no call site.
        if copied == 5 && *payload == b'S' {
            None
        } else {
            Some(statement_identity(payload, copied))
        }
    };
    let Some(identity) = identity else {
        // SAFETY: as above, a field of the reserved record.
        unsafe { core::ptr::addr_of_mut!((*record).site).write(0) };
        entry.submit(BPF_RB_NO_WAKEUP);
        return 0;
    };
    // Call sites whose stack fingerprints collide (through sqlx, the
    // innermost 1 KiB of two call sites can be the same I/O frames) still
    // get one stack each when they run different statements. Statement
    // names are numbered per connection (`sqlx_s_3` is one statement on
    // one connection and another elsewhere), so the connection is in the
    // key too: one stack copy per call site, statement and connection, the
    // first time only. The fingerprint comes last: its loop has the most
    // verifier paths, and less code after it keeps the program under the
    // verifier's budget.
    let site = match &regs {
        Some(r) => mix(mix(fingerprint(r.sp), identity), fd) | 1,
        None => 0,
    };
    // SAFETY: as above, a field of the reserved record.
    unsafe { core::ptr::addr_of_mut!((*record).site).write(site) };
    // No wake-up per write: at thousands of writes a second, waking the
    // agent for each one costs the target more than the tracing itself;
    // the agent drains the ring on a short timer instead.
    entry.submit(BPF_RB_NO_WAKEUP);

    // A new call site: its stack, once.
    // A lookup first: an LRU insert takes a free node (and locks) even
    // when the key exists.
    if let Some(r) = &regs
        && DB_KNOWN_STACKS.get_ptr(&site).is_none()
        && DB_KNOWN_STACKS.insert(&site, &1, BPF_NOEXIST).is_ok()
        && !send_stack(r, tgid, tid, site, comm)
    {
        bump(Counter::DbUserStackCopyFailed);
        let _ = DB_KNOWN_STACKS.remove(&site);
    }
    0
}

/// The statement a write is about, as far as its first message tells: its
/// type, then its body up to the end of the statement's name (a Bind:
/// `portal\0statement\0`; a Parse: `statement\0` and the start of the
/// text; a simple Query: the start of the text), at most `SPAN` bytes.
/// Parameter values never enter it (they follow the name), so one
/// statement on one connection is one identity, whatever it is bound to.
///
/// # Safety
/// Execute messages in the `len` bytes at user address `data`, hopping
/// from header (type byte, big-endian length counting itself) to header:
/// at most `DB_WALK_HOPS` 5-byte reads, whatever the write holds.
fn count_executes(data: u64, len: u64) -> (u32, u32) {
    let mut off: u64 = 0;
    let mut executes: u32 = 0;
    for _ in 0..DB_WALK_HOPS {
        if off >= len {
            return (executes, DB_WALK_COMPLETE);
        }
        let mut header = [0u8; 5];
        // SAFETY: a user read into a local array of the right size.
        if unsafe { bpf_probe_read_user(header.as_mut_ptr().cast(), 5, (data + off) as *const _) } != 0 {
            return (executes, DB_WALK_INCOMPLETE);
        }
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as u64;
        if !header[0].is_ascii_alphabetic() || length < 4 {
            return (executes, DB_WALK_INCOMPLETE);
        }
        if header[0] == b'E' {
            executes += 1;
        }
        off += 1 + length;
    }
    if off >= len { (executes, DB_WALK_COMPLETE) } else { (executes, DB_WALK_INCOMPLETE) }
}

/// `payload` points at `DB_PAYLOAD_BYTES` readable bytes, `copied` of them
/// valid.
#[inline(always)]
unsafe fn statement_identity(payload: *const u8, copied: u32) -> u64 {
    const SPAN: usize = 24;
    // SAFETY: offset 0 < DB_PAYLOAD_BYTES.
    let kind = unsafe { *payload };
    let names: i64 = if kind == b'B' || kind == b'P' { 2 } else { 1 };
    let mut h = mix(0x9e37_79b9_7f4a_7c15, u64::from(kind));
    let mut nuls: i64 = 0;
    let mut i = 5usize;
    // Arithmetic only, no branch per byte (the verifier's paths would
    // multiply with each one): `keep` is 1 while the byte was copied and
    // the name has not ended; bytes past that mix in as 0.
    while i < 5 + SPAN {
        // SAFETY: i < 5 + SPAN < DB_PAYLOAD_BYTES.
        let b = u64::from(unsafe { *payload.add(i) });
        let inside = ((i as i64 - i64::from(copied)) >> 63) & 1;
        let live = (((names - nuls - 1) >> 63) & 1) ^ 1;
        let keep = inside & live;
        h = mix(h, b * keep as u64);
        // A NUL ends a name: (b + 255) >> 8 is 1 for b > 0, 0 for b = 0.
        nuls += (1 - ((b as i64 + 255) >> 8)) * keep;
        i += 1;
    }
    h
}

/// Registers and up to `DB_STACK_COPY_BYTES` of user stack for `site`.
#[inline(always)]
fn send_stack(regs: &stack::UserRegs, tgid: u32, tid: u32, site: u64, comm: [u8; TASK_COMM_LEN]) -> bool {
    let Some(mut entry) = DB_STACKS.reserve::<DbStackEvent>(0) else {
        return false;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: the copy stays inside the reserved record's `stack` array;
    // the header writes are fields of that record.
    let copied = unsafe {
        let mut ip = regs.ip;
        let n = stack::copy_user_stack::<DB_STACK_COPY_BYTES>(core::ptr::addr_of_mut!((*event).stack) as *mut u8, regs.sp, &mut ip);
        core::ptr::addr_of_mut!((*event).tgid).write(tgid);
        core::ptr::addr_of_mut!((*event).tid).write(tid);
        core::ptr::addr_of_mut!((*event).site).write(site);
        core::ptr::addr_of_mut!((*event).ip).write(ip);
        core::ptr::addr_of_mut!((*event).sp).write(regs.sp);
        core::ptr::addr_of_mut!((*event).bp).write(regs.bp);
        core::ptr::addr_of_mut!((*event).stack_len).write(n as u32);
        core::ptr::addr_of_mut!((*event).comm).write(comm);
        n
    };
    if copied == 0 {
        entry.discard(0);
        return false;
    }
    entry.submit(0);
    true
}
