//! `vaultctl approvals list|approve|deny`, and what `vaultctl run` says
//! while its run waits for a person.
//!
//! The daemon judges who approves from the kernel (the uid and login
//! session of this process), never from anything said here. With
//! `--polkit` on a terminal this process first starts polkit's text agent
//! for itself (`pkttyagent --process <own pid>`, as `pkexec` does), so polkit
//! asks for the password on this terminal; elsewhere polkit asks through the
//! session's own agent (a desktop's), if it has one. With `--code` it
//! gives back the one-time code the daemon sent to the person's desktop
//! notifier.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aivault_client::cli::ApprovalsCmd;
use aivault_client::ClientError;
use aivault_proto::approval::{format_id, parse_id};
use aivault_proto::{ApprovalChannel, ApprovalRequest, PendingApproval, Reply, RequestBody};
use serde_json::json;

use crate::endpoint::Endpoint;
use crate::error::{usage, CtlError};
use crate::report::{print_json, Ui};

/// polkit's text authentication agent.
const PKTTYAGENT: &str = "/usr/bin/pkttyagent";
/// How long the text agent may take to register.
const AGENT_START: Duration = Duration::from_secs(5);

pub fn run(ep: &Endpoint, ui: Ui, json: bool, cmd: ApprovalsCmd) -> Result<i32, CtlError> {
    match cmd {
        ApprovalsCmd::List => {
            let mut c = ep.open()?;
            let Reply::Approvals(list) = c.call(RequestBody::Approvals(ApprovalRequest::List))?
            else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(&serde_json::Value::Array(
                    list.iter().map(as_json).collect(),
                ));
            } else if list.is_empty() {
                println!("no run is waiting for your approval");
            } else {
                for p in &list {
                    println!(
                        "{}  rule {}  uid {}  pid {}  {} s left\n    {}",
                        format_id(p.id),
                        p.rule,
                        p.requester_uid,
                        p.requester_pid,
                        p.expires_in_ms / 1000,
                        p.argv.join(" ")
                    );
                }
            }
            Ok(0)
        }
        ApprovalsCmd::Approve {
            id,
            code: Some(code),
            ..
        } => {
            let id = id_arg(&id)?;
            let mut c = ep.open()?;
            c.call(RequestBody::Approvals(ApprovalRequest::ApproveCode {
                id,
                code,
            }))?;
            decided(ui, json, id, "approved")
        }
        ApprovalsCmd::Approve { id, polkit, .. } => {
            let id = id_arg(&id)?;
            let channel = if polkit {
                ApprovalChannel::Polkit
            } else {
                ApprovalChannel::Session
            };
            // The agent lives until the answer: polkit asks through it.
            let on_tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
            let agent = if polkit && on_tty {
                Some(start_agent(ui))
            } else {
                None
            };
            let mut c = ep.open()?;
            if polkit {
                // A person is typing: the daemon bounds the wait.
                c.set_timeout(None)
                    .map_err(|e| CtlError::Local(e.to_string()))?;
            }
            let answer = c.call(RequestBody::Approvals(ApprovalRequest::Approve {
                id,
                channel,
            }));
            if let Some(Some(mut child)) = agent {
                let _ = child.kill();
                let _ = child.wait();
            }
            answer?;
            decided(ui, json, id, "approved")
        }
        ApprovalsCmd::Deny { id } => {
            let id = id_arg(&id)?;
            let mut c = ep.open()?;
            c.call(RequestBody::Approvals(ApprovalRequest::Deny { id }))?;
            decided(ui, json, id, "denied")
        }
    }
}

fn id_arg(text: &str) -> Result<u64, CtlError> {
    parse_id(text).ok_or_else(|| {
        usage(format!(
            "invalid request id {:?}: use the 16 hexadecimal digits `vaultctl approvals list` shows",
            crate::text::escape(text)
        ))
    })
}

fn decided(ui: Ui, json: bool, id: u64, what: &str) -> Result<i32, CtlError> {
    if json {
        print_json(&json!({ "id": format_id(id), "decision": what }));
    }
    ui.info(&format!("request {} {what}", format_id(id)));
    Ok(0)
}

fn as_json(p: &PendingApproval) -> serde_json::Value {
    json!({
        "id": format_id(p.id),
        "rule": p.rule,
        "argv": p.argv,
        "requester_uid": p.requester_uid,
        "requester_pid": p.requester_pid,
        "expires_in_ms": p.expires_in_ms,
    })
}

/// Starts polkit's text agent for this process and waits (bounded) until
/// it has registered (it closes its notify descriptor, here its stdout) or
/// has given up. Registered for this process alone, it takes precedence
/// over the session's agent for this one check. `None` if it cannot be
/// started; polkit then asks through whatever agent the session has, or
/// refuses.
fn start_agent(ui: Ui) -> Option<Child> {
    let me = std::process::id().to_string();
    let spawned = Command::new(PKTTYAGENT)
        .args(["--process", &me, "--notify-fd", "1"])
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            ui.warn(&format!(
                "cannot start {PKTTYAGENT} ({e}): polkit asks through the session's own agent, if any"
            ));
            return None;
        }
    };
    let mut notify = child.stdout.take()?;
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        while matches!(notify.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    if rx
        .recv_timeout(AGENT_START.saturating_sub(started.elapsed()))
        .is_err()
    {
        ui.warn("polkit's text agent did not register in time");
    }
    Some(child)
}

/// What `vaultctl run` says when its run waits for approval.
pub fn say_waiting(ui: Ui, p: &PendingApproval) {
    let id = format_id(p.id);
    if ui.json {
        eprintln!(
            "{}",
            json!({ "awaiting_approval": { "id": id, "rule": p.rule, "expires_in_ms": p.expires_in_ms } })
        );
    } else {
        eprintln!(
            "vaultctl: rule {} requires approval: waiting up to {} s for request {id}; approve it from another login session with `vaultctl approvals approve {id}` (add --polkit to authenticate through polkit)",
            p.rule,
            p.expires_in_ms.div_ceil(1000),
        );
    }
}
