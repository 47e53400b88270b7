//! Rendering: one roff page per command and subcommand (git style:
//! `vaultctl-secrets-set(1)`), and one completion script per shell.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap_complete::Shell;

/// Where each shell's completion for `name` is installed (Debian layout).
pub fn completion_path(shell: Shell, name: &str) -> Option<String> {
    match shell {
        Shell::Bash => Some(format!("usr/share/bash-completion/completions/{name}")),
        Shell::Zsh => Some(format!("usr/share/zsh/vendor-completions/_{name}")),
        Shell::Fish => Some(format!("usr/share/fish/vendor_completions.d/{name}.fish")),
        _ => None,
    }
}

/// Writes the bash, zsh and fish completions of `cmd` under `root`.
pub fn completions(mut cmd: clap::Command, root: &Path) -> Result<Vec<PathBuf>> {
    let name = cmd.get_name().to_string();
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let Some(rel) = completion_path(shell, &name) else {
            continue;
        };
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, &name, &mut buf);
        written.push(write(&root.join(rel), &buf)?);
    }
    Ok(written)
}

/// Writes the page of `cmd` and, recursively, of each visible subcommand
/// into `dir`. Once built, clap names subcommands `parent-sub`, which
/// becomes both the page name and the file name.
pub fn man_pages(cmd: clap::Command, section: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    page(&cmd, section, dir, &mut written)?;
    Ok(written)
}

fn page(cmd: &clap::Command, section: &str, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .manual(if section == "8" {
            "System Administration"
        } else {
            "User Commands"
        })
        .source(format!("aivault {}", env!("CARGO_PKG_VERSION")));
    let mut buf = Vec::new();
    man.render(&mut buf)
        .with_context(|| format!("rendering {}", man.get_filename()))?;
    written.push(write(&dir.join(man.get_filename()), &buf)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(sub, section, dir, written)?;
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn every_subcommand_gets_a_page_that_documents_its_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = crate::generate_all(dir.path()).expect("generate");
        let man1 = dir.path().join("usr/share/man/man1");
        let man8 = dir.path().join("usr/share/man/man8");
        for page in [
            "vaultctl.1",
            "vaultctl-secrets.1",
            "vaultctl-secrets-set.1",
            "vaultctl-run.1",
            "vaultctl-audit-verify.1",
            "vaultctl-policy-reload.1",
        ] {
            assert!(man1.join(page).is_file(), "missing {page}");
        }
        for page in ["aivaultd.8", "aivaultd-init.8", "aivaultd-rekey.8"] {
            assert!(man8.join(page).is_file(), "missing {page}");
        }
        assert!(!man1.join("vaultctl-help.1").exists());
        let top = read(&man8.join("aivaultd.8"));
        assert!(top.contains(".TH aivaultd 8"), "{top}");
        assert!(top.contains("key\\-provider"), "{top}");
        let set = read(&man1.join("vaultctl-secrets-set.1"));
        assert!(set.contains("never taken from the command line"), "{set}");
        let client = read(&man1.join("vaultctl.1"));
        assert!(client.contains("Exit status"), "{client}");
        assert!(written.iter().all(|p| p.starts_with(dir.path())));
    }

    #[test]
    fn completions_land_where_debian_shells_look() {
        let dir = tempfile::tempdir().expect("tempdir");
        crate::generate_all(dir.path()).expect("generate");
        let bash = read(
            &dir.path()
                .join("usr/share/bash-completion/completions/vaultctl"),
        );
        assert!(bash.contains("complete -F _vaultctl"), "{bash}");
        assert!(bash.contains("secrets"));
        let zsh = read(
            &dir.path()
                .join("usr/share/zsh/vendor-completions/_vaultctl"),
        );
        assert!(zsh.starts_with("#compdef vaultctl"), "{zsh}");
        let fish = read(
            &dir.path()
                .join("usr/share/fish/vendor_completions.d/aivaultd.fish"),
        );
        assert!(fish.contains("complete -c aivaultd"), "{fish}");
    }
}
