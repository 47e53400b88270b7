//! `aivault-broker`: the HTTP capability broker process of one caller uid.
//! Started by the daemon through the jail host under a fresh uid, with its
//! control socket at descriptor 3 (`aivault_proto::broker`). It reads its
//! init, prepares (capabilities compiled, DNS configuration read), confines
//! itself, answers `Confined`, and only then starts its runtime (whose
//! threads inherit the confinement) to serve.

use aivault_broker::{confine, control, serve::Service};
use aivault_proto::broker::{FromBroker, ToBroker, CONTROL_FD};

fn main() -> std::process::ExitCode {
    tracing_subscriber_init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aivault-broker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, which the jail host collects (warnings and above
/// unless `RUST_LOG` says otherwise); nothing logged carries a credential.
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run() -> Result<(), String> {
    let fd = control::adopt_inherited(CONTROL_FD)
        .map_err(|e| format!("descriptor {CONTROL_FD} is not usable: {e}"))?;
    let init = match control::recv_blocking(&fd) {
        Ok(Some(r)) => match r.msg {
            ToBroker::Init(init) => init,
            _ => return Err("the first control message is not an init".into()),
        },
        Ok(None) => return Err("the daemon closed the control socket".into()),
        Err(e) => return Err(format!("the init cannot be read: {e}")),
    };
    let refuse = |fd: &std::os::fd::OwnedFd, why: String| {
        let _ = control::send_blocking(fd, &FromBroker::Confined(Err(why.clone())));
        why
    };
    let service = Service::prepare(&init).map_err(|e| refuse(&fd, e.to_string()))?;
    let enforcement = confine::confine(&init).map_err(|e| refuse(&fd, e.to_string()))?;
    control::send_blocking(&fd, &FromBroker::Confined(Ok(enforcement)))
        .map_err(|e| format!("the confinement report cannot be sent: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("the runtime cannot start: {e}"))?;
    runtime.block_on(service.run(fd)).map_err(|e| e.to_string())
}
