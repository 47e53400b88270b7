//! What each `vaultctl` subcommand does (`secrets` in [`crate::secrets`],
//! `audit list` in [`crate::audit`], `run` in [`crate::run`]). Output goes
//! to stdout, diagnostics to stderr; no code path prints a value.

use aivault_client::ClientError;
use aivault_proto::{Reply, RequestBody, SecretBytes};
use serde_json::json;

use aivault_client::cli::{AuditCmd, Cli, Command, GatewayCmd, PolicyCmd};

use crate::endpoint::Endpoint;
use crate::error::CtlError;
use crate::report::{print_json, Ui};

pub fn run(cli: Cli, ui: Ui) -> Result<i32, CtlError> {
    let ep = Endpoint::new(&cli)?;
    let path = ep.path.clone();
    let json = cli.json;
    // Read local input before connecting, so a slow typist holds no daemon slot.
    match cli.command {
        Command::Secrets(cmd) => crate::secrets::run(&ep, ui, cmd),
        Command::Run(args) => crate::run::run(&ep, ui, args),
        Command::Mcp => Ok(aivault_client::mcp::serve(&path)),
        Command::Approvals(cmd) => crate::approvals::run(&ep, ui, json, cmd),
        Command::Http(args) => crate::http_cmd::run(&ep, ui, args),
        Command::Capabilities => crate::http_cmd::capabilities(&ep, json),
        Command::McpGateway { cmd: None } => crate::gateway::run(&ep),
        Command::McpGateway {
            cmd: Some(GatewayCmd::Pin { server }),
        } => crate::gateway::pin(&ep, server),
        Command::Policy(PolicyCmd::Reload { force }) => {
            let mut c = ep.open()?;
            let Reply::Done { .. } = c.call(if force {
                RequestBody::PolicyReloadForced
            } else {
                RequestBody::PolicyReload
            })?
            else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(&json!({ "reloaded": true }));
            }
            ui.info("policy reloaded");
            Ok(0)
        }
        Command::Policy(cmd) => {
            let check = matches!(cmd, PolicyCmd::Check);
            let list = ep.open()?.policy_list(check)?;
            let items = list
                .items
                .iter()
                .map(|i| serde_json::from_str(i).map_err(|_| ClientError::Protocol))
                .collect::<Result<Vec<serde_json::Value>, _>>()?;
            // The documents the unpaged requests answered.
            let v = match (check, list.ok) {
                (false, _) => serde_json::Value::Array(items),
                (true, true) => json!({ "ok": true, "rules": items }),
                (true, false) => json!({ "ok": false, "error": list.error }),
            };
            if json {
                print_json(&v);
            } else {
                print_policy(&v);
            }
            Ok(if list.ok { 0 } else { 1 })
        }
        Command::Status => {
            let mut c = ep.open()?;
            let Reply::Status(s) = c.call(RequestBody::Status)? else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(&json!({
                    "daemon_version": s.daemon_version, "protocol": s.protocol,
                    "sealed": s.sealed, "key_provider": s.key_provider,
                    "caller_uid": s.caller_uid, "caller_gid": s.caller_gid,
                    "own_secrets": s.own_secrets, "system_secrets": s.system_secrets,
                    "connections": s.connections,
                    "warm_runner_uids": s.warm_runner_uids,
                    "runs_active": s.runs_active, "quiescent": s.quiescent,
                    "open_fds": s.open_fds,
                }));
            } else {
                println!(
                    "daemon:       {} (protocol {})",
                    s.daemon_version, s.protocol
                );
                println!(
                    "state:        {}",
                    if s.sealed { "sealed" } else { "unsealed" }
                );
                println!("key provider: {}", s.key_provider);
                println!("you are:      uid {} gid {}", s.caller_uid, s.caller_gid);
                println!("your secrets: {}", s.own_secrets);
                println!("system:       {}", s.system_secrets);
                if s.caller_uid == 0 {
                    println!("warm runners: {}", s.warm_runner_uids.len());
                    println!("active runs:  {}", s.runs_active);
                }
            }
            Ok(0)
        }
        Command::Unlock => {
            let pass = crate::secrets::read_value("Vault passphrase: ", false)?;
            let mut c = ep.open()?;
            c.call(RequestBody::Unlock {
                passphrase: SecretBytes::new(pass.to_vec()),
            })?;
            if json {
                print_json(&json!({ "unsealed": true }));
            }
            ui.info("vault unsealed");
            Ok(0)
        }
        Command::Audit(AuditCmd::List {
            limit,
            since,
            user,
            op,
            follow,
        }) => crate::audit::list(
            &ep,
            crate::audit::ListArgs {
                limit,
                since,
                user,
                op,
                follow,
                json,
            },
        ),
        Command::Audit(AuditCmd::Rotate) => crate::audit::rotate(&ep, json),
        Command::Audit(AuditCmd::Verify { archives }) => {
            let mut c = ep.open()?;
            let req = if archives {
                RequestBody::AuditVerifyArchives
            } else {
                RequestBody::AuditVerify
            };
            let Reply::AuditVerified(r) = c.call(req)? else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(
                    &json!({"ok": r.ok, "records": r.records, "last_seq": r.last_seq, "problems": r.problems}),
                );
            } else {
                for p in &r.problems {
                    println!("problem: {p}");
                }
                println!(
                    "{}: {} records, last sequence {}",
                    if r.ok { "ok" } else { "FAILED" },
                    r.records,
                    r.last_seq
                );
            }
            Ok(if r.ok { 0 } else { 1 })
        }
    }
}

/// Human form of `policy show` (a list) and `policy check` (an object).
fn print_policy(v: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    if let Some(list) = v.as_array() {
        if list.is_empty() {
            println!("the policy lets you run nothing");
        }
        for c in list {
            // An HTTP capability (after the commands).
            if let Some(name) = c["capability"].as_str() {
                let words = |v: &serde_json::Value| -> Vec<String> {
                    v.as_array().into_iter().flatten().map(s).collect()
                };
                println!("http capability {name}  (https://{})", s(&c["host"]));
                println!(
                    "    requests:  {} {}",
                    words(&c["methods"]).join(", "),
                    words(&c["paths"]).join(", ")
                );
                let scope = if c["scope"] == "system" {
                    "system "
                } else {
                    ""
                };
                println!("    secret:    {scope}{}", s(&c["secret"]));
                continue;
            }
            let mut secrets: Vec<String> = c["secrets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|g| format!("{} as ${}", s(&g["name"]), s(&g["env"])))
                        .collect()
                })
                .unwrap_or_default();
            // Patterns select secrets when a run starts.
            secrets.extend(
                c["secret_patterns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        let scope = if g["scope"] == "system" {
                            "system "
                        } else {
                            ""
                        };
                        format!("{scope}{} (each as its name's variable)", s(&g["pattern"]))
                    }),
            );
            println!("{}  (rule {})", s(&c["command"]), s(&c["rule"]));
            if let Some(args) = c["args"].as_array().filter(|a| !a.is_empty()) {
                let args: Vec<String> = args.iter().map(s).collect();
                println!("    arguments: {}", args.join("; "));
            }
            if !secrets.is_empty() {
                println!("    secrets:   {}", secrets.join(", "));
            }
        }
        return;
    }
    if v["ok"] == false {
        println!("policy INVALID: {}", s(&v["error"]));
        return;
    }
    for r in v["rules"].as_array().into_iter().flatten() {
        println!(
            "{} ({}): {}",
            s(&r["rule"]),
            s(&r["source"]),
            s(&r["effect"])
        );
        for w in r["warnings"].as_array().into_iter().flatten() {
            println!("    warning: {}", s(w));
        }
    }
    println!("policy ok");
}
