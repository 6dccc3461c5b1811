//! One reader for every ring buffer of user-stack copies: CPU, off-CPU and
//! memory-event samples (`USER_STACK_SAMPLES`), new database call sites
//! (`DB_STACKS`) and new allocation sites (`MEM_STACKS`).
//!
//! Each record is read where the kernel wrote it: the ring item is viewed
//! as the record's `#[repr(C)]` struct (size and alignment checked) and the
//! stack copy is borrowed from it, never copied out (a record is 32-64 KiB).
//! Records of other processes are skipped; the rest are handed to the
//! collector's closure with an [`Unwind`] that unwinds the copy, on demand,
//! through the audit's [`SharedUnwinder`]. Aggregation stays with each
//! collector.

use std::marker::PhantomData;

use aya::maps::{MapData, RingBuf};
use perf_audit_common::{DbStackEvent, UserStackSample, memory::MemStackSample};
use tokio::io::unix::AsyncFd;

use crate::{
    error::{Error, Result},
    target::MapsSnapshot,
    unwind::{SharedUnwinder, UnwindEnd, Unwinding},
};

/// A ring record that carries user registers and a copy of the user stack.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs of integers and integer arrays,
/// written whole by an eBPF program: every bit pattern is a valid value,
/// so a ring item of at least `size_of::<Self>()` bytes may be viewed as one.
pub unsafe trait StackRecord {
    /// The process the record belongs to.
    fn tgid(&self) -> u32;
    /// User registers where the copy starts: (ip, sp, bp).
    fn regs(&self) -> (u64, u64, u64);
    /// The copied bytes of user stack, from `sp` up.
    fn stack(&self) -> &[u8];
}

/// The three stack-copy records share their header fields' names.
macro_rules! stack_record {
    ($($record:ty),*) => {$(
        // SAFETY: `#[repr(C)]`, integers and byte arrays only (perf-audit-common).
        unsafe impl StackRecord for $record {
            fn tgid(&self) -> u32 {
                self.tgid
            }
            fn regs(&self) -> (u64, u64, u64) {
                (self.ip, self.sp, self.bp)
            }
            fn stack(&self) -> &[u8] {
                &self.stack[..(self.stack_len as usize).min(self.stack.len())]
            }
        }
    )*};
}

stack_record!(UserStackSample, DbStackEvent, MemStackSample);

/// The ring item viewed as a `T`, when it is large enough and aligned (the
/// kernel aligns ring records to 8 bytes, so this never fails in practice).
fn view<T: StackRecord>(item: &[u8]) -> Option<&T> {
    if item.len() < std::mem::size_of::<T>() || item.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
        return None;
    }
    // SAFETY: size and alignment checked; every bit pattern is a valid `T`
    // (`StackRecord`'s contract); the item stays mapped and unchanged for
    // the borrow (the kernel reuses its space only after it is consumed).
    Some(unsafe { &*item.as_ptr().cast::<T>() })
}

/// Unwinding of one record's stack, done only if the collector asks.
pub struct Unwind<'a> {
    state: &'a mut Unwinding,
    maps: &'a mut MapsSnapshot,
    refreshed: &'a mut bool,
    pid: u32,
    regs: (u64, u64, u64),
    stack: &'a [u8],
}

impl Unwind<'_> {
    /// The user frames, leaf first, and how the walk ended. When the
    /// instruction pointer lies in code mapped after `maps` was taken, the
    /// snapshot is refreshed first (at most once per drain).
    pub fn frames(self) -> (Vec<u64>, UnwindEnd) {
        self.state.unwind_copied(self.maps, self.pid, self.refreshed, self.regs, self.stack)
    }
}

/// Reads one ring buffer of `T` records for one process (or, built with
/// [`RingReader::system_wide`], of every process: the daemon).
pub struct RingReader<T> {
    ring: AsyncFd<RingBuf<MapData>>,
    /// None: system-wide, the caller unwinds ([`RingReader::drain_all`]).
    unwinder: Option<SharedUnwinder>,
    /// Items too short for a `T` (a stale build) or misaligned: skipped.
    pub malformed: u64,
    record: PhantomData<fn() -> T>,
}

impl<T: StackRecord> RingReader<T> {
    /// Wraps `ring` (registered for readiness, for rings whose programs
    /// wake the reader); records of other processes than the unwinder's
    /// are skipped.
    pub fn new(ring: RingBuf<MapData>, unwinder: SharedUnwinder, name: &str) -> Result<RingReader<T>> {
        // SAFETY: the ring buffer owns its fd, open for as long as the
        // AsyncFd owns the ring.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| Error::internal(format!("cannot poll the ring buffer {name}: {e}")))?;
        Ok(RingReader { ring, unwinder: Some(unwinder), malformed: 0, record: PhantomData })
    }

    /// A reader of every process's records, for a caller that keeps one
    /// unwinder per process itself (the daemon); drained with
    /// [`RingReader::drain_all`].
    pub fn system_wide(ring: RingBuf<MapData>, name: &str) -> Result<RingReader<T>> {
        // SAFETY: as in `new`.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| Error::internal(format!("cannot poll the ring buffer {name}: {e}")))?;
        Ok(RingReader { ring, unwinder: None, malformed: 0, record: PhantomData })
    }

    /// Hands every record now in the ring to `each`, in place, whatever its
    /// process.
    pub fn drain_all(&mut self, mut each: impl FnMut(&T)) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            match view::<T>(&item) {
                Some(record) => each(record),
                None => self.malformed += 1,
            }
        }
    }

    /// Waits until the ring has records (for programs that submit with a
    /// wake-up; the stack-sample ring is drained on a timer instead).
    pub async fn readable(&mut self) {
        if let Ok(mut guard) = self.ring.readable_mut().await {
            guard.clear_ready();
        }
    }

    /// Hands every record of the process now in the ring to `each`, in
    /// place, with the unwinding of its stack.
    pub fn drain(&mut self, maps: &mut MapsSnapshot, mut each: impl FnMut(&T, Unwind<'_>)) {
        let Some(unwinder) = &self.unwinder else { return };
        let pid = unwinder.pid();
        let mut state = unwinder.lock();
        let mut refreshed = false;
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            let Some(record) = view::<T>(&item) else {
                self.malformed += 1;
                continue;
            };
            if record.tgid() != pid {
                continue;
            }
            let unwind = Unwind {
                state: &mut state,
                maps: &mut *maps,
                refreshed: &mut refreshed,
                pid,
                regs: record.regs(),
                stack: record.stack(),
            };
            each(record, unwind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_viewed_in_place_only_when_whole_and_aligned() {
        // Backing store aligned for u64 like the kernel's ring records.
        let words = vec![0u64; std::mem::size_of::<MemStackSample>() / 8 + 1];
        // SAFETY: a byte view of the vector's own memory.
        let bytes = unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), words.len() * 8) };
        let whole = &bytes[..std::mem::size_of::<MemStackSample>()];
        let sample = view::<MemStackSample>(whole).expect("whole and aligned");
        assert!(std::ptr::eq(sample.stack().as_ptr(), whole[std::mem::offset_of!(MemStackSample, stack)..].as_ptr()));
        assert!(view::<MemStackSample>(&whole[..whole.len() - 1]).is_none(), "short");
        assert!(view::<MemStackSample>(&bytes[4..4 + whole.len()]).is_none(), "misaligned");
    }

    #[test]
    fn the_stack_slice_is_cut_at_the_copied_length() {
        // SAFETY: all-zero is a valid DbStackEvent (integers and arrays).
        let mut sample: Box<DbStackEvent> = Box::new(unsafe { std::mem::zeroed() });
        sample.stack_len = 24;
        assert_eq!(sample.stack().len(), 24);
        sample.stack_len = u32::MAX;
        assert_eq!(sample.stack().len(), sample.stack.len());
    }
}
