//! `aivault-gen`: writes the man pages and shell completions of `aivaultd`
//! and `vaultctl` into a staging tree, laid out as they are installed:
//!
//! ```text
//! OUT/usr/share/man/man8/aivaultd.8, aivaultd-<sub>.8        (uncompressed)
//! OUT/usr/share/man/man1/vaultctl.1, vaultctl-<sub>[-<sub>].1
//! OUT/usr/share/bash-completion/completions/{aivaultd,vaultctl}
//! OUT/usr/share/zsh/vendor-completions/{_aivaultd,_vaultctl}
//! OUT/usr/share/fish/vendor_completions.d/{aivaultd,vaultctl}.fish
//! ```
//!
//! Everything comes from `aivaultd::cli::Cli` and `aivault_client::cli::Cli`,
//! the same definitions that produce `--help`; nothing is written by hand.
//! `packaging/build-deb.sh` runs it and compresses the pages.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::CommandFactory;

mod generate;

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: aivault-gen OUT_DIR");
    };
    let out = PathBuf::from(out);
    let written = generate_all(&out)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// One program whose documentation is generated.
struct Program {
    cmd: clap::Command,
    /// Man page section: 8 for the daemon (administration), 1 for the client.
    section: &'static str,
}

fn programs() -> [Program; 2] {
    [
        Program {
            cmd: aivaultd::cli::Cli::command(),
            section: "8",
        },
        Program {
            cmd: aivault_client::cli::Cli::command(),
            section: "1",
        },
    ]
}

/// Writes every page and completion under `out`; returns the files written.
pub fn generate_all(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for p in programs() {
        let man_dir = out.join(format!("usr/share/man/man{}", p.section));
        written.extend(
            generate::man_pages(p.cmd.clone(), p.section, &man_dir)
                .with_context(|| format!("man pages of {}", p.cmd.get_name()))?,
        );
        written.extend(
            generate::completions(p.cmd.clone(), out)
                .with_context(|| format!("completions of {}", p.cmd.get_name()))?,
        );
    }
    Ok(written)
}
