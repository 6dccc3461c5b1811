//! Opening files the target names (its binaries, debug links, source
//! paths): only regular files, never blocking on a FIFO or device.

use std::{fs::File, io, os::unix::fs::OpenOptionsExt as _, path::Path};

/// Opens `path` read-only without blocking (`O_NONBLOCK`: a FIFO or a
/// device never hangs the open) and refuses anything but a regular file
/// (checked with `fstat` on the opened descriptor, so a swap of the path
/// after a check cannot slip another file in).
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    if file.metadata()?.file_type().is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a regular file", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_regular(&fifo).is_err());
        assert!(open_regular(dir.path()).is_err());
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        assert!(open_regular(&f).is_ok());
    }
}
