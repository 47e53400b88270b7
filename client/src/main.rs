//! `vaultctl`: the per-user command-line client of aivaultd.

mod approvals;
mod audit;
mod backup;
mod commands;
mod endpoint;
mod error;
mod gateway;
mod http_cmd;
mod report;
mod run;
mod secrets;
mod text;
mod time;

use clap::Parser;

fn main() {
    let cli = match aivault_client::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go out as clap prints them; so do usage errors,
        // unless the command line asked for JSON.
        Err(e) if e.use_stderr() && report::asks_for_json(std::env::args_os()) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let msg = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("{}", report::error_json("usage", msg));
            std::process::exit(2);
        }
        Err(e) => e.exit(),
    };
    let ui = report::Ui {
        json: cli.json,
        quiet: cli.quiet,
    };
    let code = match commands::run(cli, ui) {
        Ok(code) => code,
        Err(e) => {
            ui.error(&e);
            e.exit_code()
        }
    };
    std::process::exit(code);
}
