//! The target's files are untrusted input (issue 24): a `.gnu_debuglink`
//! may name a FIFO (an `open()` that never returns), a section header may
//! claim a terabyte of compressed DWARF. Every object file the agent reads
//! is opened here ([`open_regular`]: `O_NONBLOCK`, `fstat` after open, only
//! regular files), and [`dwarf_hazard`] decides whether blazesym may read
//! an object's DWARF itself (it follows debug links, `.dwp` files and
//! decompresses sections on its own), or only its symbol table.

use std::{
    fs::File,
    io,
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::Path,
};

use object::{Object as _, ObjectSection as _};

/// A compressed section may claim at most this many times its file's size,
/// uncompressed (DWARF compresses 3-10x; zlib's own bound is ~1000x).
pub const MAX_INFLATION: u64 = 64;
/// And never more than this, whatever the file's size.
pub const MAX_UNCOMPRESSED_SECTION: u64 = 4 << 30;

/// Opens `path` for reading without blocking on a FIFO or device, and only
/// if it is a regular file (checked on the open file, not the path).
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is {what}, not a regular file", path.display())));
    }
    Ok(file)
}

/// `path` read-only mapped, if it is a regular file.
pub fn map_regular(path: &Path) -> Option<memmap2::Mmap> {
    let file = open_regular(path).ok()?;
    // SAFETY: a read-only mapping of a regular file we only read; a
    // concurrent truncation could fault, as for every profiler reading
    // binaries.
    unsafe { memmap2::Mmap::map(&file) }.ok()
}

/// Whether `path` names something that is not a regular file (a FIFO, a
/// device, a directory) that a library opening it by name would block on
/// or fail with.
pub fn is_hazard(path: &Path) -> bool {
    match std::fs::symlink_metadata(path).and_then(|_| std::fs::metadata(path)) {
        Ok(m) => !m.file_type().is_file(),
        Err(e) => e.kind() != io::ErrorKind::NotFound,
    }
}

/// The uncompressed size a compressed section claims: ELF `SHF_COMPRESSED`
/// (`Elf64_Chdr`/`Elf32_Chdr`) or a GNU `.zdebug_*` section (`ZLIB` + 8
/// bytes big-endian).
pub fn claimed_uncompressed_size(data: &[u8], shf_compressed: bool, is64: bool, little_endian: bool) -> Option<u64> {
    let u32_at = |at: usize| -> Option<u64> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(if little_endian { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) }))
    };
    let u64_at = |at: usize| -> Option<u64> {
        let b: [u8; 8] = data.get(at..at + 8)?.try_into().ok()?;
        Some(if little_endian { u64::from_le_bytes(b) } else { u64::from_be_bytes(b) })
    };
    if shf_compressed {
        // Elf64_Chdr: ch_type u32, reserved u32, ch_size u64, ch_addralign u64.
        // Elf32_Chdr: ch_type u32, ch_size u32, ch_addralign u32.
        return if is64 { u64_at(8) } else { u32_at(4) };
    }
    let rest = data.strip_prefix(b"ZLIB")?;
    Some(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?))
}

/// The first compressed section of `elf` whose claimed uncompressed size is
/// over the ceiling (`MAX_INFLATION` x `file_len`, at most
/// `MAX_UNCOMPRESSED_SECTION`), as `(name, claimed size)`.
pub fn oversized_compressed_section(elf: &object::File<'_>, file_len: u64) -> Option<(String, u64)> {
    let ceiling = file_len.saturating_mul(MAX_INFLATION).min(MAX_UNCOMPRESSED_SECTION);
    let is64 = elf.is_64();
    let little = elf.is_little_endian();
    for section in elf.sections() {
        let flags = match section.flags() {
            object::SectionFlags::Elf { sh_flags } => sh_flags,
            _ => 0,
        };
        let compressed = flags & u64::from(object::elf::SHF_COMPRESSED) != 0;
        let name = section.name().unwrap_or_default();
        if !compressed && !name.starts_with(".zdebug") {
            continue;
        }
        let data = section.data().unwrap_or_default();
        match claimed_uncompressed_size(data, compressed, is64, little) {
            Some(size) if size <= ceiling => {}
            // A compressed section without a readable header is as bad.
            claimed => return Some((name.to_string(), claimed.unwrap_or(u64::MAX))),
        }
    }
    None
}

/// Why blazesym must not read `path`'s DWARF itself (it would then use only
/// the symbol table), or `None` when it may: a compressed section over the
/// ceiling; a `.gnu_debuglink`, `.gnu_debugaltlink` or `.debug_sup` (blazesym
/// opens the file they name by itself, past any check: the agent looks up
/// the debug file on its own, see `debuginfo::find_debug_file`); a
/// `PATH.dwp` that is not a regular file.
pub fn dwarf_hazard(path: &Path) -> Option<String> {
    let Some(map) = map_regular(path) else { return Some("it is not a readable regular file".into()) };
    let Ok(elf) = object::File::parse(&map[..]) else { return Some("it is not a valid ELF file".into()) };
    if let Some((name, size)) = oversized_compressed_section(&elf, map.len() as u64) {
        return Some(format!(
            "its compressed section `{name}` claims {} uncompressed (ceiling: {}x the file's size, at most {} GiB)",
            human_size(size),
            MAX_INFLATION,
            MAX_UNCOMPRESSED_SECTION >> 30
        ));
    }
    for link in [".gnu_debuglink", ".gnu_debugaltlink", ".debug_sup"] {
        if elf.section_by_name(link).is_some() {
            return Some(format!("it has a `{link}` section (the debug file it names is looked up by the agent)"));
        }
    }
    let mut dwp = path.as_os_str().to_os_string();
    dwp.push(".dwp");
    if is_hazard(Path::new(&dwp)) {
        return Some(format!("{} is not a regular file", Path::new(&dwp).display()));
    }
    None
}

fn human_size(bytes: u64) -> String {
    match bytes {
        u64::MAX => "an unreadable size".to_string(),
        b if b >= 1 << 30 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("perf-audit-safe-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("svc.debug");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open_regular(&fifo).unwrap_err();
        assert!(err.to_string().contains("a FIFO, not a regular file"), "{err}");
        assert!(is_hazard(&fifo));
        assert!(map_regular(&fifo).is_none());
        assert!(open_regular(&dir).is_err());
        assert!(!is_hazard(&dir.join("absent")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compressed_headers_give_their_claimed_size() {
        let mut chdr64 = vec![1, 0, 0, 0, 0, 0, 0, 0];
        chdr64.extend_from_slice(&(1u64 << 40).to_le_bytes());
        chdr64.extend_from_slice(&1u64.to_le_bytes());
        assert_eq!(claimed_uncompressed_size(&chdr64, true, true, true), Some(1 << 40));
        assert_eq!(claimed_uncompressed_size(&chdr64[..12], true, true, true), None);
        let chdr32 = [1, 0, 0, 0, 0, 16, 0, 0, 1, 0, 0, 0];
        assert_eq!(claimed_uncompressed_size(&chdr32, true, false, true), Some(0x1000));
        let mut z = b"ZLIB".to_vec();
        z.extend_from_slice(&4096u64.to_be_bytes());
        assert_eq!(claimed_uncompressed_size(&z, false, true, true), Some(4096));
        assert_eq!(claimed_uncompressed_size(b"ZLI", false, true, true), None);
    }

    #[test]
    fn our_own_test_binary_has_no_dwarf_hazard() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(dwarf_hazard(&exe), None);
    }
}
