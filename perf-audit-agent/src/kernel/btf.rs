//! The few kernel struct offsets the eBPF programs need, read from the
//! running kernel's BTF (`/sys/kernel/btf/vmlinux`) and handed to them as a
//! global before load: aya-ebpf programs written in Rust cannot carry CO-RE
//! relocations, so the agent resolves the offsets instead.
//!
//! [`UretprobeOffsets`]: where a thread's pending uretprobes keep the
//! return addresses they replaced (see `perf-audit-ebpf/src/stack.rs`);
//! and [`task_pid_offset_for_raw_sched_switch`]: what the off-CPU
//! collector's raw `sched_switch` program needs (see `perf-audit-ebpf/src/offcpu.rs`).

use std::sync::OnceLock;

use perf_audit_common::UretprobeOffsets;

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_TYPE_TAG: u32 = 18;

fn kernel_btf() -> Option<&'static [u8]> {
    static DATA: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    DATA.get_or_init(|| std::fs::read("/sys/kernel/btf/vmlinux").ok()).as_deref()
}

/// `task_struct.pid`, when this kernel's `sched_switch` passes raw
/// tracepoint programs `(preempt, prev, next, prev_state)` (5.18+: the
/// typedef `btf_trace_sched_switch` takes those four after its context);
/// `None` sends the off-CPU collector to the classic tracepoint.
pub fn task_pid_offset_for_raw_sched_switch() -> Option<u32> {
    static OFFSET: OnceLock<Option<u32>> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        let btf = Btf::parse(kernel_btf()?)?;
        if btf.typedef_params("btf_trace_sched_switch")? != 5 {
            return None;
        }
        btf.member_offset("task_struct", "pid").filter(|o| *o != 0)
    })
}

/// The offsets for this kernel, read once; all zero (the fix off) when the
/// kernel has no BTF or its structs lack one of the fields.
pub fn uretprobe_offsets() -> UretprobeOffsets {
    static OFFSETS: OnceLock<UretprobeOffsets> = OnceLock::new();
    *OFFSETS.get_or_init(|| {
        kernel_btf().and_then(|data| Btf::parse(data).and_then(|btf| uretprobe_offsets_in(&btf))).unwrap_or_default()
    })
}

/// The offsets through which the off-CPU program reads what a blocked
/// syscall's fd refers to; all zero (not read) when the kernel has no BTF
/// or its structs lack one of the fields.
pub fn fd_offsets() -> perf_audit_common::FdOffsets {
    static OFFSETS: OnceLock<perf_audit_common::FdOffsets> = OnceLock::new();
    *OFFSETS.get_or_init(|| kernel_btf().and_then(|data| Btf::parse(data).and_then(|btf| fd_offsets_in(&btf))).unwrap_or_default())
}

fn fd_offsets_in(btf: &Btf<'_>) -> Option<perf_audit_common::FdOffsets> {
    Some(perf_audit_common::FdOffsets {
        task_files: btf.member_offset("task_struct", "files").filter(|o| *o != 0)?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdt_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdt_fd: btf.member_offset("fdtable", "fd")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        inode_mode: btf.member_offset("inode", "i_mode")?,
        inode_rdev: btf.member_offset("inode", "i_rdev")?,
    })
}

fn uretprobe_offsets_in(btf: &Btf<'_>) -> Option<UretprobeOffsets> {
    Some(UretprobeOffsets {
        task_utask: btf.member_offset("task_struct", "utask")?,
        utask_return_instances: btf.member_offset("uprobe_task", "return_instances")?,
        ri_stack: btf.member_offset("return_instance", "stack")?,
        ri_orig_ret_vaddr: btf.member_offset("return_instance", "orig_ret_vaddr")?,
        ri_next: btf.member_offset("return_instance", "next")?,
    })
}

/// A parsed BTF blob: just enough to find a struct member's byte offset.
struct Btf<'a> {
    /// The type section.
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset of each type in `types`, by type id (id 0 is void).
    starts: Vec<usize>,
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Option<Btf<'a>> {
        if u16::from_le_bytes(data.get(0..2)?.try_into().ok()?) != BTF_MAGIC {
            return None;
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types = data.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
        let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
        let mut starts = vec![0];
        let mut at = 0;
        while at < types.len() {
            starts.push(at);
            let info = u32_at(types, at + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let extra = match kind {
                // int, var, decl_tag: one word; array: three.
                1 | 14 | 17 => 4,
                3 => 12,
                // struct, union, datasec, enum64: three words per member.
                4 | 5 | 15 | 19 => vlen * 12,
                // enum, func_proto: two words per member.
                6 | 13 => vlen * 8,
                _ => 0,
            };
            at += 12 + extra;
        }
        Some(Btf { types, strings, starts })
    }

    fn name(&self, offset: u32) -> &'a str {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    /// (kind, name offset, size-or-type, kind_flag, vlen, start) of type `id`.
    fn header(&self, id: u32) -> Option<(u32, u32, u32, bool, usize, usize)> {
        let at = *self.starts.get(id as usize)?;
        if id == 0 {
            return None;
        }
        let info = u32_at(self.types, at + 4)?;
        Some((
            (info >> 24) & 0x1f,
            u32_at(self.types, at)?,
            u32_at(self.types, at + 8)?,
            info >> 31 == 1,
            (info & 0xffff) as usize,
            at,
        ))
    }

    /// Type `id` with typedefs and qualifiers peeled off.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..16 {
            match self.header(id) {
                Some((KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG, _, next, ..)) => {
                    id = next
                }
                _ => break,
            }
        }
        id
    }

    /// How many parameters the function pointer typedef `name` takes.
    fn typedef_params(&self, name: &str) -> Option<usize> {
        let id = (1..self.starts.len() as u32)
            .find(|id| matches!(self.header(*id), Some((KIND_TYPEDEF, name_off, ..)) if self.name(name_off) == name))?;
        let (_, _, target, ..) = self.header(id)?;
        let (kind, _, proto, ..) = self.header(self.resolve(target))?;
        if kind != KIND_PTR {
            return None;
        }
        match self.header(self.resolve(proto))? {
            (KIND_FUNC_PROTO, _, _, _, vlen, _) => Some(vlen),
            _ => None,
        }
    }

    /// Byte offset of member `member` in struct `name` (looking into
    /// anonymous struct and union members).
    fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let id = (1..self.starts.len() as u32)
            .find(|id| matches!(self.header(*id), Some((KIND_STRUCT, name_off, ..)) if self.name(name_off) == name))?;
        self.find_member(id, member, 0).map(|bits| bits / 8)
    }

    /// Bit offset of `member` in composite type `id`, plus `base`.
    fn find_member(&self, id: u32, member: &str, base: u32) -> Option<u32> {
        let (kind, _, _, kind_flag, vlen, at) = self.header(id)?;
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return None;
        }
        for i in 0..vlen {
            let m = at + 12 + i * 12;
            let (name_off, ty, offset) =
                (u32_at(self.types, m)?, u32_at(self.types, m + 4)?, u32_at(self.types, m + 8)?);
            let bits = if kind_flag { offset & 0x00ff_ffff } else { offset };
            let name = self.name(name_off);
            if name == member {
                return Some(base + bits);
            }
            if name.is_empty()
                && let Some(found) = self.find_member(self.resolve(ty), member, base + bits)
            {
                return Some(found);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `struct outer { int a; union { long b; }; long c; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0outer\0a\0b\0c\0int\0long\0".to_vec();
        let s = |name: &str| {
            strings
                .windows(name.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=name.len()] == name.as_bytes() && w[name.len() + 1] == 0)
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend_from_slice(&w.to_le_bytes()));
        // 1: int (kind 1, 4 bytes, one extra word)
        push(&[s("int"), 1 << 24, 4, 32]);
        // 2: long
        push(&[s("long"), 1 << 24, 8, 64]);
        // 3: anonymous union { long b; } (kind 5, 1 member)
        push(&[0, (5 << 24) | 1, 8, s("b"), 2, 0]);
        // 4: struct outer (kind 4, 3 members): a at 0, union at 64, c at 128 bits
        push(&[s("outer"), (4 << 24) | 3, 24, s("a"), 1, 0, 0, 3, 64, s("c"), 2, 128]);
        with_header(&types, &strings)
    }

    /// A BTF blob of these type and string sections.
    fn with_header(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        data.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        data.extend_from_slice(&[1, 0]);
        for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            data.extend_from_slice(&w.to_le_bytes());
        }
        data.extend_from_slice(types);
        data.extend_from_slice(strings);
        data
    }

    #[test]
    fn member_offsets_are_found_also_in_anonymous_members() {
        let data = blob();
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.member_offset("outer", "a"), Some(0));
        assert_eq!(btf.member_offset("outer", "b"), Some(8));
        assert_eq!(btf.member_offset("outer", "c"), Some(16));
        assert_eq!(btf.member_offset("outer", "d"), None);
        assert_eq!(btf.member_offset("inner", "a"), None);
    }

    #[test]
    fn function_pointer_typedefs_give_their_parameter_count() {
        let strings = b"\0fp\0int\0".to_vec();
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend_from_slice(&w.to_le_bytes()));
        // 1: int; 2: func_proto (int, int) -> void; 3: pointer to 2; 4: typedef fp = 3
        push(&[5, 1 << 24, 4, 32]);
        push(&[0, (13 << 24) | 2, 0, 0, 1, 0, 1]);
        push(&[0, 2 << 24, 2]);
        push(&[1, 8 << 24, 3]);
        let data = with_header(&types, &strings);
        let btf = Btf::parse(&data).unwrap();
        assert_eq!(btf.typedef_params("fp"), Some(2));
        assert_eq!(btf.typedef_params("int"), None);
    }

    #[test]
    fn the_running_kernel_offers_the_raw_sched_switch_arguments() {
        // This machine's kernel (6.18, BTF) passes prev_state since 5.18.
        if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            let offset = task_pid_offset_for_raw_sched_switch();
            assert!(offset.is_some_and(|o| o > 0 && o < 16384), "{offset:?}");
        }
    }

    #[test]
    fn the_running_kernel_describes_its_uretprobe_bookkeeping() {
        // Kernels with BTF since uretprobes keep a return_instance list.
        if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            let off = uretprobe_offsets();
            assert_ne!(off.task_utask, 0, "{off:?}");
            assert_ne!(off.ri_orig_ret_vaddr, off.ri_stack, "{off:?}");
        }
    }

    #[test]
    fn the_running_kernel_describes_the_path_from_a_task_to_its_fds_inodes() {
        // This machine's kernel (6.18) has BTF: the off-CPU program must be
        // able to read an fd's kind at the syscall's exit.
        let off = fd_offsets();
        assert_ne!(off.task_files, 0, "{off:?}");
        assert_ne!(off.fdt_fd, off.fdt_max_fds, "{off:?}");
        assert_ne!(off.inode_rdev, off.inode_mode, "{off:?}");
    }
}
