//! Kernel side of perf-audit.
//!
//! Every program here is written to cost the target as little as possible
//! and never to block it: filters run first (a target-pid lookup), work is
//! aggregated in maps rather than streamed when the agent only needs counts,
//! and every failure path bumps a counter in `COUNTERS` instead of being
//! lost. Maps are bounded; the capacities live in `perf-audit-common`.
#![no_std]
#![no_main]

mod cpu;
mod db;
mod maps;
mod mem_events;
mod memory;
mod offcpu;
mod stack;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // eBPF programs cannot panic at run time: the verifier rejects any path
    // that could reach here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
