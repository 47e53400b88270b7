//! Reading the policy directory: which files, in which order, and which are trusted.
//!
//! Order: `policy.toml`, then every `policy.d/<name>.toml` sorted by the
//! bytes of its file name. Names starting with `.` and names not ending in
//! `.toml` are skipped (editor and package-manager leftovers such as
//! `x.toml.dpkg-old`). The directory, `policy.d` and each file must pass
//! [`check_secure_dir`] / [`check_secure_file`]: root-owned, not group- or
//! world-writable, no symbolic links, trusted ancestors.

use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::compile::{Builder, Compiled};
use super::error::{PolicyError, MAX_FILE};
use crate::secure_fs::{check_secure_dir, check_secure_file};

/// Loads and validates the whole policy under `dir`.
pub fn load_dir(dir: &Path) -> Result<Compiled, PolicyError> {
    let mut builder = Builder::default();
    if !exists(dir)? {
        return builder.finish();
    }
    check_dir(dir)?;
    let main = dir.join("policy.toml");
    if exists(&main)? {
        builder.add_file(&main, &read_trusted(&main)?)?;
    }
    let drop_in = dir.join("policy.d");
    if exists(&drop_in)? {
        check_dir(&drop_in)?;
        for file in drop_in_files(&drop_in)? {
            builder.add_file(&file, &read_trusted(&file)?)?;
        }
    }
    builder.finish()
}

/// Like `Path::exists`, but a symbolic link counts (and is refused later)
/// and errors other than "not found" are reported, not taken as absence.
fn exists(path: &Path) -> Result<bool, PolicyError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(PolicyError::StatDir {
            path: path.into(),
            source,
        }),
    }
}

fn check_dir(dir: &Path) -> Result<(), PolicyError> {
    check_secure_dir(dir).map_err(|source| PolicyError::InsecureDir {
        path: dir.into(),
        source,
    })
}

/// `policy.d` entries to load, in merge order.
fn drop_in_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let list_err = |source| PolicyError::ListDir {
        path: dir.into(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_err)? {
        let name = entry.map_err(list_err)?.file_name();
        let bytes = name.as_bytes();
        if bytes.ends_with(b".toml") && !bytes.starts_with(b".") {
            names.push(name);
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

fn read_trusted(path: &Path) -> Result<String, PolicyError> {
    check_secure_file(path).map_err(|source| PolicyError::InsecureFile {
        path: path.into(),
        source,
    })?;
    let read_err = |source| PolicyError::Read {
        path: path.into(),
        source,
    };
    let file = fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_FILE {
        return Err(PolicyError::TooLarge { path: path.into() });
    }
    Ok(text)
}
