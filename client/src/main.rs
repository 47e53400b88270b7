//! `vaultctl`: the per-user command-line client of aivaultd.

mod audit;
mod commands;
mod error;
mod run;
mod text;

use clap::Parser;

fn main() {
    let cli = aivault_client::cli::Cli::parse();
    let code = match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vaultctl: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}
