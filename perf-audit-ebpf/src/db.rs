//! Database wire tracing: the target's writes to its database connections.
//!
//! Three syscall tracepoints (`write`, `sendto`, `writev`: Rust's
//! `TcpStream` writes with `send`, which is `sendto(2)`; `UnixStream` and
//! vectored writes use the others). Each filters first on the target pid
//! (`TARGET_PIDS`), then on the (tgid, fd) pair being a database connection
//! (`DB_FDS`, kept current by the agent from /proc), so every other write on
//! the machine costs two map lookups at most. A matching write reserves one
//! `DbWriteEvent` in `DB_EVENTS` and fills it in place: the first
//! `DB_PAYLOAD_BYTES` written (PostgreSQL frontend messages, parsed by the
//! agent) and the user registers and stack (unwound by the agent), so each
//! query is tied to the code that sent it. A full ring drops the write and
//! counts it.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns, generated::bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::{HashMap, RingBuf},
    programs::TracePointContext,
};
use perf_audit_common::{
    Counter, DB_EVENTS_RING_BYTES, DB_FDS_CAPACITY, DB_PAYLOAD_BYTES, DB_STACK_COPY_BYTES, DbFdKey, DbWriteEvent,
    TASK_COMM_LEN, db_syscall,
};

use crate::{
    maps::{bump, current_target_thread},
    stack,
};

/// Offsets of the arguments in the `syscalls:sys_enter_*` records (after
/// the 8-byte common header and the syscall number): fd, buffer, length.
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;

#[map(name = "DB_FDS")]
static DB_FDS: HashMap<DbFdKey, u8> = HashMap::with_max_entries(DB_FDS_CAPACITY, 0);

#[map(name = "DB_EVENTS")]
static DB_EVENTS: RingBuf = RingBuf::with_byte_size(DB_EVENTS_RING_BYTES, 0);

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

#[inline(always)]
fn on_write(ctx: &TracePointContext, syscall: u32) -> u32 {
    let Some((tgid, tid)) = current_target_thread() else {
        return 0;
    };
    // SAFETY: reads inside the tracepoint record.
    let fd: u64 = unsafe { ctx.read_at(ARG0) }.unwrap_or(u64::MAX);
    let key = DbFdKey { tgid, fd: fd as u32 };
    if DB_FDS.get_ptr(&key).is_none() {
        return 0;
    }
    bump(Counter::DbWrites);
    // SAFETY: as above.
    let (mut data, mut len): (u64, u64) =
        unsafe { (ctx.read_at(ARG1).unwrap_or(0), ctx.read_at(ARG2).unwrap_or(0)) };
    if syscall == db_syscall::WRITEV {
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

    let Some(mut entry) = DB_EVENTS.reserve::<DbWriteEvent>(0) else {
        bump(Counter::DbWritesDroppedRingFull);
        return 0;
    };
    let event = entry.as_mut_ptr();
    let comm = bpf_get_current_comm().unwrap_or([0u8; TASK_COMM_LEN]);
    // SAFETY: `event` points at a reserved record of the right size; every
    // write below stays inside its fields.
    unsafe {
        let payload = core::ptr::addr_of_mut!((*event).payload) as *mut u8;
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
        let (ip, sp, bp, stack_len) = match &regs {
            Some(r) => {
                let mut ip = r.ip;
                let n = stack::copy_user_stack::<DB_STACK_COPY_BYTES>(core::ptr::addr_of_mut!((*event).stack) as *mut u8, r.sp, &mut ip);
                (ip, r.sp, r.bp, n as u32)
            }
            None => (0, 0, 0, 0),
        };
        if stack_len == 0 {
            bump(Counter::DbUserStackCopyFailed);
        }
        core::ptr::addr_of_mut!((*event).tgid).write(tgid);
        core::ptr::addr_of_mut!((*event).tid).write(tid);
        core::ptr::addr_of_mut!((*event).fd).write(fd as u32);
        core::ptr::addr_of_mut!((*event).syscall).write(syscall);
        core::ptr::addr_of_mut!((*event).len).write(len);
        core::ptr::addr_of_mut!((*event).ts_ns).write(bpf_ktime_get_ns());
        core::ptr::addr_of_mut!((*event).ip).write(ip);
        core::ptr::addr_of_mut!((*event).sp).write(sp);
        core::ptr::addr_of_mut!((*event).bp).write(bp);
        core::ptr::addr_of_mut!((*event).payload_len).write(copied);
        core::ptr::addr_of_mut!((*event).stack_len).write(stack_len);
        core::ptr::addr_of_mut!((*event).comm).write(comm);
    }
    entry.submit(0);
    0
}
