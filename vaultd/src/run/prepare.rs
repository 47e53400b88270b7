//! Everything decided before a run starts: the binary, the rule, the
//! secrets, the environment. Runs on a blocking thread; writes the audit
//! record of the decision before anything takes effect.

use std::time::Duration;

use aivault_proto::{ErrorCode, RunRequest, SecretBytes, WireError, WorkdirMode};
use serde_json::json;

use super::RunHost;
use crate::audit::gate::Entry;
use crate::caller::Caller;
use crate::policy::{self, Decision, Isolation, RunQuery, SecretScope, Who};
use crate::store::{Scope, MAX_NAME_LEN};
use crate::wire_error::{bounded, excerpt};

/// Most arguments, and most bytes over all arguments and environment entries.
pub const MAX_ARGS: usize = 4096;
pub const MAX_ARG_BYTES: usize = 128 * 1024;
/// Most characters of argv the audit records show, all arguments together:
/// even escaped six-fold as JSON they stay well within a record's limit.
const RECORDED_ARGV_CHARS: usize = 4096;
/// Variables passed from the caller's environment when their value is plain.
const LOCALE_VARS: &[&str] = &["LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TERM", "TZ"];
/// The command's `PATH`: trusted system directories only.
pub const RUN_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A run the policy allowed, with everything needed to start it.
pub struct PreparedRun {
    pub caller: Caller,
    pub command: policy::resolve::ResolvedCommand,
    pub argv: Vec<String>,
    /// argv with any secret value replaced, for audit and logs; bounded
    /// (see `recorded_argv`).
    pub argv_redacted: Vec<String>,
    pub decision: Decision,
    /// (secret name, environment variable, value)
    pub secrets: Vec<(String, String, SecretBytes)>,
    /// Caller-supplied variables the rule lets through, plus safe locale ones.
    pub env: Vec<(String, String)>,
    /// The caller's working directory, if it asked and the rule allows it.
    pub workdir: Option<super::workdir::Workdir>,
    pub timeout: Duration,
    /// For `isolation = "caller"`: the identity to run as, from the
    /// account database. None for a fresh-uid run.
    pub as_caller: Option<CallerIdentity>,
    /// The audit record of the decision, written by
    /// [`record_run_decision`].
    pub record: serde_json::Value,
}

/// The caller's identity for a caller-mode run: its uid (from
/// `SO_PEERCRED`), and its primary gid and groups from the account database,
/// never from anything the caller says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Tasks (processes and threads) the caller's uid runs at decision
    /// time: `RLIMIT_NPROC` counts them against the run's limit.
    pub running_tasks: u64,
}

/// The identity of a caller-mode run, or why there is none.
fn caller_identity(uid: u32) -> Result<CallerIdentity, String> {
    if uid == 0 {
        return Err("isolation `caller` never runs a command as root".into());
    }
    let (gid, groups) = crate::sys::account(uid)
        .ok_or_else(|| format!("isolation `caller` needs an account for uid {uid}"))?;
    if gid == 0 || groups.contains(&0) {
        return Err("isolation `caller` refuses accounts in group 0".into());
    }
    Ok(CallerIdentity {
        uid,
        gid,
        groups,
        running_tasks: super::uidpool::tasks_of(uid),
    })
}

impl std::fmt::Debug for PreparedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRun")
            .field("argv", &self.argv_redacted)
            .field("rule", &self.decision.rule)
            .finish_non_exhaustive()
    }
}

fn denied(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::PermissionDenied, message)
}

fn bad(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::BadRequest, message)
}

fn plain_value(v: &str) -> bool {
    v.len() <= 256
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-@:+/=".contains(&b))
}

fn check_shape(req: &RunRequest) -> Result<(), WireError> {
    if req.argv.is_empty() || req.argv[0].is_empty() {
        return Err(bad("no command given"));
    }
    let bytes: usize = req.argv.iter().map(String::len).sum::<usize>()
        + req
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    if req.argv.len() > MAX_ARGS || bytes > MAX_ARG_BYTES {
        return Err(bad("arguments and environment exceed 128 KiB"));
    }
    let long = |n: &str| n.len() > MAX_NAME_LEN;
    if req
        .secrets
        .iter()
        .any(|s| long(&s.name) || s.env.as_deref().is_some_and(long))
    {
        return Err(WireError::new(
            ErrorCode::InvalidName,
            "secret names and the variables they go to are at most 128 bytes long",
        ));
    }
    let nul = |s: &String| s.as_bytes().contains(&0);
    if req.argv.iter().any(nul) || req.env.iter().any(|(k, v)| nul(k) || nul(v)) {
        return Err(bad("arguments and environment may not contain NUL bytes"));
    }
    Ok(())
}

/// Decides a run request: resolves the binary, applies the policy and
/// fetches the granted secrets. Denials are audited here; the record of
/// an allowed run is written by [`record_run_decision`], which
/// the run path awaits before anything reaches the runner.
pub fn prepare_run(
    host: &dyn RunHost,
    caller: &Caller,
    req: RunRequest,
    workdir: Option<std::os::fd::OwnedFd>,
) -> Result<PreparedRun, WireError> {
    const OP: &str = "run";
    let deny = |e: WireError, detail: serde_json::Value| -> WireError {
        host.audit()
            .deny(Entry::new(caller, OP).detail(detail), bounded(e))
    };
    let shown = || json!({ "argv0": req.argv.first().map(|a| excerpt(a)) });
    // Sealed first: without an audit key no decision may be recorded.
    if host.is_sealed() {
        return Err(WireError::new(
            ErrorCode::Sealed,
            "the vault is sealed; root must run `vaultctl unlock`",
        ));
    }
    check_shape(&req).map_err(|e| deny(e, shown()))?;
    let policy = host.policy();
    if !policy.mentions_command(&req.argv[0]) {
        return Err(deny(
            denied(format!("no rule allows {}", excerpt(&req.argv[0]))),
            shown(),
        ));
    }
    let command = policy::resolve_command(&req.argv[0], policy.search_path())
        .map_err(|e| deny(denied(e.to_string()), shown()))?;
    let who = Who {
        uid: caller.uid,
        gid: caller.gid,
        groups: if policy.uses_groups() {
            crate::sys::account_groups(caller.uid, caller.gid)
        } else {
            Vec::new()
        },
    };
    let query = RunQuery {
        who,
        command: command.path.clone(),
        sha256: command.sha256,
        args: req.argv[1..].to_vec(),
        secrets: req
            .secrets
            .iter()
            .map(|s| policy::SecretAsk {
                name: s.name.clone(),
                env: s.env.clone(),
            })
            .collect(),
        cwd_readable: req.workdir.is_some(),
        cwd_writable: req.workdir == Some(WorkdirMode::ReadWrite),
        // Only the caller's own scope and the system's: a rule's pattern
        // can never select another user's secrets.
        existing: if policy.uses_secret_globs() {
            policy::ExistingSecrets {
                own: host.secret_names(Scope::User(caller.uid)),
                system: host.secret_names(Scope::System),
            }
        } else {
            policy::ExistingSecrets::default()
        },
    };
    let command_text = command.path.display().to_string();
    let decision = policy
        .decide(&query)
        .map_err(|d| deny(denied(d.reason), json!({ "command": command_text })))?;
    let as_caller = match decision.isolation {
        Isolation::DynamicUid => None,
        Isolation::Caller => {
            let detail =
                || json!({ "command": command_text, "rule": decision.rule, "isolation": "caller" });
            // Fail closed: without a cgroup to kill, the run could not
            // be ended completely.
            if let Err(e) = host.runs().cgroups.base() {
                return Err(deny(
                    denied(format!("isolation `caller` needs a cgroup v2 hierarchy the daemon can manage ({e}); refused")),
                    detail(),
                ));
            }
            Some(caller_identity(caller.uid).map_err(|why| deny(denied(why), detail()))?)
        }
    };
    let workdir = match (req.workdir, workdir) {
        (None, _) => None,
        (Some(mode), Some(fd)) => {
            let detail = || json!({ "command": command_text, "rule": decision.rule, "workdir": mode.as_str() });
            // Files the run creates in it would be root's: never.
            if caller.uid == 0 || caller.gid == 0 {
                return Err(deny(
                    denied("root's working directory is never given to a run"),
                    detail(),
                ));
            }
            Some(
                super::workdir::check(fd, mode, (caller.uid, caller.gid))
                    .map_err(|why| deny(bad(why), detail()))?,
            )
        }
        (Some(_), None) => {
            return Err(deny(
                bad("the working directory's descriptor is missing"),
                shown(),
            ))
        }
    };

    let mut secrets = Vec::with_capacity(decision.secrets.len());
    for grant in &decision.secrets {
        let scope = match grant.scope {
            SecretScope::User => Scope::User(caller.uid),
            SecretScope::System => Scope::System,
        };
        let detail =
            || json!({ "command": command_text, "rule": decision.rule, "secret": grant.name });
        if !decision.allow_expired {
            if let Some(expired) = expired_at(host.secret_expiry(scope, &grant.name), now()) {
                return Err(deny(
                    denied(format!("secret {} expired at {expired}", grant.name)),
                    detail(),
                ));
            }
        }
        let value = host
            .secret_for_run(scope, &grant.name)
            .map_err(|e| deny(e, detail()))?;
        secrets.push((grant.name.clone(), grant.env.clone(), value));
    }

    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in &req.env {
        let locale = LOCALE_VARS.contains(&k.as_str()) && plain_value(v);
        if locale || decision.pass_env.iter().any(|p| p == k) {
            env.push((k.clone(), v.clone()));
        }
    }

    let argv_redacted = recorded_argv(redacted_argv(&secrets, &req.argv).into_iter());
    let mut argv = req.argv;
    argv[0] = command_text.clone();
    let timeout = req
        .timeout_ms
        .map(Duration::from_millis)
        .map_or(decision.sandbox.timeout, |t| {
            t.min(decision.sandbox.timeout)
        });
    let record = json!({
        "command": command_text,
        "argv": argv_redacted,
        "rule": decision.rule,
        "secrets": secrets.iter().map(|(n, e, _)| json!({"name": n, "env": e})).collect::<Vec<_>>(),
        "isolation": decision.isolation,
        "timeout_ms": timeout.as_millis() as u64,
    });
    let mut record = record;
    if let Some(w) = &workdir {
        record["workdir"] = json!({ "path": w.path, "mode": w.mode.as_str() });
    }
    Ok(PreparedRun {
        caller: *caller,
        command,
        argv,
        argv_redacted,
        decision,
        secrets,
        env,
        workdir,
        timeout,
        as_caller,
        record,
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The RFC 3339 time a secret expired at, if `expires` is not after `now`.
fn expired_at(expires: Option<u64>, now: u64) -> Option<String> {
    let at = expires.filter(|&e| e <= now)?;
    Some(crate::audit::rfc3339_utc(
        std::time::UNIX_EPOCH + Duration::from_secs(at),
    ))
}

/// The arguments as the audit records show them: whole up to
/// `RECORDED_ARGV_CHARS` characters in all; past that the argument that
/// crosses the bound ends in "…" and a last entry counts the ones left out.
fn recorded_argv(argv: impl ExactSizeIterator<Item = String>) -> Vec<String> {
    let total = argv.len();
    let mut left = RECORDED_ARGV_CHARS;
    let mut shown = Vec::new();
    for a in argv {
        if left == 0 {
            break;
        }
        match a.char_indices().nth(left) {
            None => {
                left -= a.chars().count();
                shown.push(a);
            }
            Some((end, _)) => {
                shown.push(format!("{}…", &a[..end]));
                left = 0;
            }
        }
    }
    if shown.len() < total {
        shown.push(format!("… {} more arguments", total - shown.len()));
    }
    shown
}

/// Makes the decision of an allowed run durable in the audit log. The
/// run path starts the (still empty-handed) runner meanwhile, and sends
/// it the job — secrets, command — only once this returned `Ok`.
pub fn record_run_decision(host: &dyn RunHost, prepared: &PreparedRun) -> Result<(), WireError> {
    record_run_decision_then(host, prepared, || {})
}

/// [`record_run_decision`], calling `durable` as soon as the record is
/// durable in the log (the anchor follows in this call).
pub fn record_run_decision_then(
    host: &dyn RunHost,
    prepared: &PreparedRun,
    durable: impl FnOnce(),
) -> Result<(), WireError> {
    let entry = Entry::new(&prepared.caller, "run")
        .name(Some(&prepared.decision.rule))
        .detail(prepared.record.clone());
    host.audit().record_then(entry, durable)
}

/// `argv` with every form of every secret in it redacted, for the audit
/// record. Only the forms that occur in the arguments are compiled (usually
/// none): the runner compiles the whole set for the output, and the daemon
/// would spend as much again per run on patterns it never uses. Arguments
/// the patterns cannot be built for are not recorded (fail closed; the
/// runner refuses such secrets too).
fn redacted_argv(secrets: &[(String, String, SecretBytes)], argv: &[String]) -> Vec<String> {
    if secrets.is_empty() {
        return argv.to_vec();
    }
    let list: Vec<aivault_redact::Secret> = secrets
        .iter()
        .map(|(n, _, v)| aivault_redact::Secret::new(n.clone(), v.as_bytes().to_vec()))
        .collect();
    let texts: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
    match aivault_redact::Patterns::occurring_in(&list, &texts) {
        Ok(p) if p.is_empty() => argv.to_vec(),
        Ok(p) => argv
            .iter()
            .map(|a| {
                String::from_utf8_lossy(&aivault_redact::redact_all(&p, a.as_bytes())).into_owned()
            })
            .collect(),
        Err(e) => vec![format!("[arguments not recorded: {e}]")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_expired_from_its_expiry_second_on() {
        assert_eq!(expired_at(None, 100), None);
        assert_eq!(expired_at(Some(101), 100), None);
        assert_eq!(
            expired_at(Some(100), 100).as_deref(),
            Some("1970-01-01T00:01:40.000Z")
        );
        assert!(expired_at(Some(0), 100).is_some());
    }

    #[test]
    fn argv_is_redacted_for_the_record_with_only_the_forms_it_holds() {
        let secret = |name: &str, value: &str| {
            (
                name.to_owned(),
                name.to_owned(),
                SecretBytes::new(value.as_bytes().to_vec()),
            )
        };
        let secrets = vec![
            secret("TOKEN", "tok-0123456789abcdef"),
            secret("OTHER", "other-secret-value"),
        ];
        let argv: Vec<String> = [
            "curl",
            "-H",
            "Authorization: Bearer tok-0123456789abcdef",
            // base64 of "user:tok-0123456789abcdef"
            "dXNlcjp0b2stMDEyMzQ1Njc4OWFiY2RlZg==",
            "plain",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            redacted_argv(&secrets, &argv),
            [
                "curl",
                "-H",
                "Authorization: Bearer [REDACTED:TOKEN]",
                "dXNlcjp[REDACTED:TOKEN:base64]",
                "plain"
            ]
        );
        let clean: Vec<String> = vec!["ls".into(), "-l".into()];
        assert_eq!(redacted_argv(&secrets, &clean), clean);
        assert_eq!(redacted_argv(&[], &argv), argv);
        let bad = vec![secret("BAD NAME", "tok-0123456789abcdef")];
        let shown = redacted_argv(&bad, &argv);
        assert_eq!(shown.len(), 1);
        assert!(
            shown[0].starts_with("[arguments not recorded:"),
            "{shown:?}"
        );
        assert!(!shown[0].contains("tok-"), "{shown:?}");
    }

    #[test]
    fn recorded_argv_is_whole_when_short_and_bounded_otherwise() {
        let short = vec!["ls".to_string(), "-l".to_string()];
        assert_eq!(recorded_argv(short.clone().into_iter()), short);
        let long = vec!["a".repeat(RECORDED_ARGV_CHARS), "b".into(), "c".into()];
        let shown = recorded_argv(long.into_iter());
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert_eq!(shown[0].len(), RECORDED_ARGV_CHARS);
        assert_eq!(shown[1], "… 2 more arguments");
        let many = vec!["é".repeat(1000); 10];
        let shown = recorded_argv(many.into_iter());
        assert_eq!(shown.len(), 6, "{shown:?}");
        assert!(shown[4].ends_with('…') && shown[4].chars().count() == 97);
        assert_eq!(shown[5], "… 5 more arguments");
    }
}
