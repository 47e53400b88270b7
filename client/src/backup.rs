//! `vaultctl secrets backup` and `secrets restore`: the daemon builds and
//! opens the encrypted blob; this side only writes it to a file and reads
//! it back. No value is ever decrypted here.
//!
//! A backup file is created 0600 under a temporary name in the target's
//! directory, written and synced, then linked to its name only if that name
//! is free: an existing file is never replaced, and no partial file is
//! left under the name on any error.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aivault_client::cli::ConflictArg;
use aivault_client::ClientError;
use aivault_proto::{ImportConflict, Reply, RequestBody, RestoreReport};
use serde_json::json;

use crate::endpoint::Endpoint;
use crate::error::{usage, CtlError};
use crate::report::{print_json, Ui};

/// Largest backup the daemon makes or takes: one frame, less room for the
/// request around it (the daemon's `ops::backup::MAX_BACKUP`).
const MAX_BACKUP: u64 = (aivault_proto::MAX_FRAME - 1024) as u64;

pub fn backup(ep: &Endpoint, ui: Ui, file: &Path, all: bool) -> Result<i32, CtlError> {
    let (dir, tmp) = temp_beside(file)?;
    if file.symlink_metadata().is_ok() {
        return Err(usage(format!(
            "{} exists; refusing to overwrite it",
            file.display()
        )));
    }
    let mut c = ep.open()?;
    let Reply::Backup { blob, count } = c.call(RequestBody::SecretBackup { all })? else {
        return Err(ClientError::Protocol.into());
    };
    write_new(&dir, &tmp, file, &blob)?;
    if ui.json {
        print_json(
            &json!({ "file": file.display().to_string(), "secrets": count, "bytes": blob.len() }),
        );
    }
    ui.info(&format!(
        "backed up {count} secrets to {} ({} bytes, encrypted)",
        file.display(),
        blob.len()
    ));
    Ok(0)
}

pub fn restore(
    ep: &Endpoint,
    ui: Ui,
    file: &Path,
    verify_only: bool,
    conflict: ConflictArg,
) -> Result<i32, CtlError> {
    let blob = read_blob(file)?;
    let mut c = ep.open()?;
    let Reply::Restored(r) = c.call(RequestBody::SecretRestore {
        blob,
        verify_only,
        conflict: match conflict {
            ConflictArg::Error => ImportConflict::Error,
            ConflictArg::Skip => ImportConflict::Skip,
            ConflictArg::Overwrite => ImportConflict::Overwrite,
        },
    })?
    else {
        return Err(ClientError::Protocol.into());
    };
    if ui.json {
        print_json(&json!({
            "verify_only": r.verify_only, "created": r.created,
            "overwritten": r.overwritten, "skipped": r.skipped, "scopes": r.scopes,
        }));
    }
    ui.info(&summary(&r));
    Ok(0)
}

fn summary(r: &RestoreReport) -> String {
    let counts = format!(
        "{} new, {} overwritten, {} skipped",
        r.created, r.overwritten, r.skipped
    );
    if r.verify_only {
        format!("backup verified; a restore would write {counts} (nothing was written)")
    } else {
        format!("restored {counts}")
    }
}

/// The target's directory and a temporary name in it.
fn temp_beside(file: &Path) -> Result<(PathBuf, PathBuf), CtlError> {
    let name = file
        .file_name()
        .ok_or_else(|| usage(format!("{} names no file", file.display())))?;
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    Ok((dir.clone(), dir.join(tmp_name)))
}

/// Writes `blob` to `tmp` (new, 0600), syncs it, and links it to `file`
/// only if that name is still free; the temporary name is removed either way.
fn write_new(dir: &Path, tmp: &Path, file: &Path, blob: &[u8]) -> Result<(), CtlError> {
    let cannot =
        |what: &str, e: std::io::Error| usage(format!("cannot {what} {}: {e}", file.display()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| cannot("create", e))?;
    let written = f.write_all(blob).and_then(|()| f.sync_all());
    drop(f);
    let linked = written.map_err(|e| cannot("write", e)).and_then(|()| {
        match std::fs::hard_link(tmp, file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(usage(format!(
                "{} exists; refusing to overwrite it",
                file.display()
            ))),
            Err(e) => Err(cannot("create", e)),
        }
    });
    let _ = std::fs::remove_file(tmp);
    linked?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_blob(file: &Path) -> Result<Vec<u8>, CtlError> {
    let cannot = |e: std::io::Error| usage(format!("cannot read {}: {e}", file.display()));
    let mut buf = Vec::new();
    File::open(file)
        .map_err(cannot)?
        .take(MAX_BACKUP + 1)
        .read_to_end(&mut buf)
        .map_err(cannot)?;
    if buf.len() as u64 > MAX_BACKUP {
        return Err(usage(format!(
            "{} is larger than any backup ({MAX_BACKUP} bytes)",
            file.display()
        )));
    }
    Ok(buf)
}
