//! Reading VEX documents from files and directories (the CLI's input side).
//!
//! Invariants: directories are walked recursively and their `*.json` files are read in
//! byte order of their paths, so the same tree always yields the same sequence; every
//! failure names the path. A `<file>.asc` beside a document is its detached OpenPGP
//! signature ([`read_signature_beside`]), never a document.
//! failure names the path. Only regular files are read, and never more than the limit
//! plus one byte whatever size the filesystem reports ([`read_limited`]): a FIFO, a
//! socket or a device (also behind a symlink) is refused without blocking, a file that
//! grows past the limit while it is read is refused, and one whose size or modification
//! time changed during the read is reported as [`InputError::Changed`].

use std::path::{Path, PathBuf};

/// An input path could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// `size` is the reported size, or the bytes read (`limit + 1`) when the file held
    /// more than it reported (a growing file, `/dev/zero` behind a symlink).
    #[error("{path}: file is {size} bytes or more, over the {limit}-byte limit")]
    TooLarge { path: String, size: u64, limit: usize },
    /// A FIFO, socket, character or block device, or a directory: never read.
    #[error("{path}: not a regular file ({kind}); only regular files are read")]
    NotRegular { path: String, kind: &'static str },
    /// The file's size or modification time changed while it was read (a writer is still
    /// at work): the bytes are not used; read it again once it is stable.
    #[error("{path}: changed while it was read ({detail})")]
    Changed { path: String, detail: String },
}

/// What kind of file `ft` is, for [`InputError::NotRegular`].
pub fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else {
        "unknown file type"
    }
}

/// Expands files and directories into the sorted list of files to read.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| InputError::Io { path: p.display().to_string(), source: e })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let rd = std::fs::read_dir(dir).map_err(|e| InputError::Io { path: dir.display().to_string(), source: e })?;
    for entry in rd {
        let entry = entry.map_err(|e| InputError::Io { path: dir.display().to_string(), source: e })?;
        let path = entry.path();
        let ft = entry.file_type().map_err(|e| InputError::Io { path: path.display().to_string(), source: e })?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            out.push(path);
        }
    }
    Ok(())
}

/// The detached OpenPGP signature beside a document: `<path>.asc` (e.g. `doc.json.asc`),
/// if there is one. At most `crypto::openpgp::MAX_SIGNATURE_BYTES` + 1 bytes are read (a
/// longer file is judged `malformed_signature`, not read whole); one that exists but
/// cannot be read is an empty signature (also `malformed_signature`): the document is
/// still read, never dead-lettered for its signature.
pub fn read_signature_beside(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut asc = path.as_os_str().to_owned();
    asc.push(".asc");
    let asc = PathBuf::from(asc);
    if !asc.is_file() {
        return None;
    }
    let limit = crate::crypto::openpgp::MAX_SIGNATURE_BYTES as u64 + 1;
    let mut out = Vec::new();
    match std::fs::File::open(&asc).and_then(|f| f.take(limit).read_to_end(&mut out)) {
        Ok(_) => Some(out),
        Err(_) => Some(Vec::new()),
    }
}

/// Reads a regular file of at most `limit` bytes: the type is checked before opening (a
/// symlink is judged by its target), the file is opened non-blocking (a FIFO swapped in
/// after the check does not block the open) and checked again on the open descriptor,
/// then at most `limit + 1` bytes are read, whatever size the filesystem reports. A file
/// whose size or modification time differ between the open and the end of the read, or
/// whose length differs from the bytes read, is [`InputError::Changed`].
pub fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>, InputError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let name = || path.display().to_string();
    let io = |e| InputError::Io { path: name(), source: e };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(InputError::NotRegular { path: name(), kind: file_kind(meta.file_type()) });
    }
    if meta.len() > limit as u64 {
        return Err(InputError::TooLarge { path: name(), size: meta.len(), limit });
    }
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let before = file.metadata().map_err(io)?;
    if !before.file_type().is_file() {
        return Err(InputError::NotRegular { path: name(), kind: file_kind(before.file_type()) });
    }
    let mut out = Vec::with_capacity(before.len().min(limit as u64) as usize);
    (&file).take(limit as u64 + 1).read_to_end(&mut out).map_err(io)?;
    if out.len() > limit {
        return Err(InputError::TooLarge { path: name(), size: out.len() as u64, limit });
    }
    let after = file.metadata().map_err(io)?;
    if before.len() != after.len() || before.modified().ok() != after.modified().ok() {
        return Err(InputError::Changed {
            path: name(),
            detail: format!("{} bytes when opened, {} after the read", before.len(), after.len()),
        });
    }
    if out.len() as u64 != after.len() {
        return Err(InputError::Changed {
            path: name(),
            detail: format!("{} bytes read of the {} reported", out.len(), after.len()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(read_limited(&p, 2).unwrap(), b"{}");
        assert!(matches!(read_limited(&p, 1), Err(InputError::TooLarge { size: 2, limit: 1, .. })));
    }

    #[test]
    fn a_device_behind_a_symlink_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        let e = read_limited(&p, 1 << 20).unwrap_err();
        assert!(matches!(e, InputError::NotRegular { kind: "character device", .. }), "{e}");
        assert!(e.to_string().contains("zero.json"), "{e}");
    }

    #[test]
    fn the_reported_size_is_not_trusted() {
        // /proc files report 0 bytes and hold more: at most limit + 1 bytes are read.
        let e = read_limited(Path::new("/proc/self/maps"), 16).unwrap_err();
        assert!(matches!(e, InputError::TooLarge { size: 17, limit: 16, .. }), "{e}");
        // Within the limit, bytes read that differ from the reported size are refused.
        let e = read_limited(Path::new("/proc/self/maps"), 1 << 24).unwrap_err();
        assert!(matches!(e, InputError::Changed { .. }), "{e}");
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipe.json");
        assert!(std::process::Command::new("mkfifo").arg(&p).status().unwrap().success());
        let e = read_limited(&p, 1 << 20).unwrap_err();
        assert!(matches!(e, InputError::NotRegular { kind: "fifo", .. }), "{e}");
    }
}
