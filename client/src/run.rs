//! `vaultctl run`: stream stdin to the command, its redacted output back,
//! forward SIGINT/SIGTERM/SIGHUP, and exit with the command's status.

use std::io::{Read, Write};

use aivault_client::{socket_path, Client, ClientError};
use aivault_proto::{RunEvent, RunInput, RunRequest, SecretAsk, Stream};
use nix::sys::signal::{SigSet, Signal};

use crate::commands::CtlError;
use aivault_client::cli::RunArgs;

/// `30s`, `5m`, `1h`, `500ms` or plain seconds, as milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, CtlError> {
    let bad = || CtlError::Usage(format!("invalid duration {s:?}: use e.g. 30s, 5m, 500ms"));
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1_000)
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    match n.checked_mul(mult) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad()),
    }
}

fn secret_asks(specs: &[String]) -> Result<Vec<SecretAsk>, CtlError> {
    specs
        .iter()
        .map(|s| {
            let (name, env) = match s.split_once('=') {
                Some((n, e)) => (n, Some(e.to_string())),
                None => (s.as_str(), None),
            };
            if name.is_empty() || env.as_deref() == Some("") {
                return Err(CtlError::Usage(format!(
                    "invalid --secret {s:?}: use NAME or NAME=ENV"
                )));
            }
            Ok(SecretAsk {
                name: name.to_string(),
                env,
            })
        })
        .collect()
}

pub fn run(socket: Option<&std::path::Path>, args: RunArgs) -> Result<i32, CtlError> {
    let timeout_ms = args.timeout.as_deref().map(parse_duration_ms).transpose()?;
    let cwd = if args.cwd_readable {
        let dir = std::env::current_dir()
            .map_err(|e| CtlError::Usage(format!("cannot determine the current directory: {e}")))?;
        Some(dir.to_string_lossy().into_owned())
    } else {
        None
    };
    let req = RunRequest {
        argv: args.command,
        secrets: secret_asks(&args.secrets)?,
        timeout_ms,
        cwd,
        cwd_readable: args.cwd_readable,
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
    };

    // Block the forwarded signals before any thread starts, so only the
    // forwarding thread receives them.
    let mut forwarded = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        forwarded.add(s);
    }
    let _ = forwarded.thread_block();

    let path = socket_path(socket);
    let mut session = Client::connect(&path)?.start_run(req)?;

    let input = session.input();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = input.send(&RunInput::StdinEof);
                    return;
                }
                Ok(n) => {
                    if input.send(&RunInput::Stdin(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let input = session.input();
    std::thread::spawn(move || loop {
        match forwarded.wait() {
            Ok(sig) => {
                if input.send(&RunInput::Signal(sig as i32)).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    });

    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    loop {
        match session.next_event() {
            Ok(RunEvent::Output { stream, data }) => {
                let w: &mut dyn Write = match stream {
                    Stream::Stdout => &mut out,
                    Stream::Stderr => &mut err,
                };
                // A closed stdout (e.g. `| head`) must not stop the run's bookkeeping.
                let _ = w.write_all(&data).and_then(|()| w.flush());
            }
            Ok(RunEvent::Exit(exit)) => {
                if let Some(m) = exit.message {
                    eprintln!("vaultctl: {m}");
                }
                return Ok(exit.code);
            }
            Err(ClientError::Daemon(e)) => return Err(ClientError::Daemon(e).into()),
            Err(e) => {
                eprintln!("vaultctl: the run's connection failed: {e}");
                return Ok(crate::commands::EXIT_RUN_LOST);
            }
        }
    }
}
