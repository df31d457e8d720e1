//! Reading VEX documents from files and directories (the CLI's input side).
//!
//! Invariants: directories are walked recursively and their `*.json` files are read in
//! byte order of their paths, so the same tree always yields the same sequence; every
//! failure names the path. A `<file>.asc` beside a document is its detached OpenPGP
//! signature ([`read_signature_beside`]), never a document.

use std::path::{Path, PathBuf};

/// An input path could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: file is {size} bytes, over the {limit}-byte limit")]
    TooLarge { path: String, size: u64, limit: usize },
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

/// Reads a file, refusing files over `limit` bytes before reading them.
pub fn read_limited(path: &Path, limit: usize) -> Result<Vec<u8>, InputError> {
    let meta = std::fs::metadata(path).map_err(|e| InputError::Io { path: path.display().to_string(), source: e })?;
    if meta.len() > limit as u64 {
        return Err(InputError::TooLarge { path: path.display().to_string(), size: meta.len(), limit });
    }
    std::fs::read(path).map_err(|e| InputError::Io { path: path.display().to_string(), source: e })
}
