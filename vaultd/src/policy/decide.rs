//! Matching a run request against the rules.
//!
//! Rules are tried in merge order; the first that passes every check wins:
//! 1. it names the command (as written, or where that path led at load time);
//! 2. the caller's uid is in `users`, or its primary or a supplementary
//!    group is in `groups`;
//! 3. the argument list matches one of its `args` alternatives;
//! 4. the file's sha256 matches the rule's pin, if any;
//! 5. the command is not a shell, interpreter, compiler or launcher
//!    (`interp.rs`), unless the rule allows one;
//! 6. it grants every secret asked for (under the asked variable, if one was
//!    named); a system secret also needs a `[[grant]]` covering the caller;
//!    every `[[pin]]` of a delivered secret names the command;
//! 7. the working directory is readable only if the rule allows it.
//!
//! If no rule passes, the denial explains the check that failed on the rule
//! that got furthest (the first such rule on a tie).

use std::collections::HashSet;

use nix::unistd::{Uid, User};

use super::args::any_matches;
use super::compile::{Compiled, Rule};
use super::interp::danger;
use super::{
    CommandSummary, Decision, Denial, RunQuery, SandboxSummary, SecretGrant, SecretScope, Who,
};

/// How far a rule got before it failed, and why.
type Miss = (u8, String);

pub fn decide(p: &Compiled, q: &RunQuery) -> Result<Decision, Denial> {
    let mut best: Option<Miss> = None;
    for rule in &p.rules {
        match try_rule(p, rule, q) {
            Ok(decision) => return Ok(decision),
            Err(miss) => {
                if best.as_ref().is_none_or(|(stage, _)| miss.0 > *stage) {
                    best = Some(miss);
                }
            }
        }
    }
    let reason = match best {
        Some((stage, reason)) if stage > 0 => reason,
        _ if p.rules.is_empty() => format!(
            "no rule allows {} (the policy has no rules)",
            q.command.display()
        ),
        _ => format!("no rule allows {}", q.command.display()),
    };
    Err(Denial { reason })
}

fn try_rule(p: &Compiled, rule: &Rule, q: &RunQuery) -> Result<Decision, Miss> {
    let cmd = q.command.display();
    if !rule.names_command(&q.command) {
        return Err((0, String::new()));
    }
    if !caller_allowed(&rule.users, &rule.groups, &q.who) {
        return Err((1, format!("no rule allows {cmd} for {}", who_label(&q.who))));
    }
    if !any_matches(rule.args.as_deref(), &q.args) {
        return Err((
            2,
            format!("argument list does not match rule {}", rule.name),
        ));
    }
    if rule.sha256.is_some_and(|pin| pin != q.sha256) {
        return Err((
            3,
            format!(
                "sha256 of {cmd} does not match the pin of rule {}",
                rule.name
            ),
        ));
    }
    let file_danger = q
        .command
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(danger);
    if let (Some(reason), false) = (file_danger, rule.allow_interpreter) {
        return Err((
            4,
            format!(
                "rule {} does not allow_interpreter, and {cmd} is {reason}",
                rule.name
            ),
        ));
    }
    let secrets = pick_secrets(p, rule, q).map_err(|r| (5, r))?;
    for s in &secrets {
        let pinned_elsewhere = p
            .pins
            .iter()
            .filter(|pin| pin.secret == s.name && pin.scope == s.scope)
            .any(|pin| !pin.commands.contains(&q.command));
        if pinned_elsewhere {
            return Err((
                5,
                format!("{} secret {} is pinned to other commands", s.scope, s.name),
            ));
        }
    }
    if q.cwd_readable && !rule.sandbox.cwd_readable {
        return Err((
            6,
            format!(
                "rule {} does not let the command read the caller's working directory",
                rule.name
            ),
        ));
    }
    let mut sandbox = rule.sandbox.clone();
    sandbox.cwd_readable = q.cwd_readable;
    Ok(Decision {
        rule: rule.name.clone(),
        secrets,
        sandbox,
        isolation: rule.isolation,
        pass_env: rule.pass_env.clone(),
        allow_interpreter: rule.allow_interpreter,
        allow_expired: rule.allow_expired,
        approval: rule.approval.clone(),
    })
}

fn pick_secrets(p: &Compiled, rule: &Rule, q: &RunQuery) -> Result<Vec<SecretGrant>, String> {
    let visible =
        |s: &SecretGrant| s.scope == SecretScope::User || system_granted(p, &s.name, &q.who);
    if q.secrets.is_empty() {
        return Ok(rule
            .secrets
            .iter()
            .filter(|s| visible(s))
            .cloned()
            .collect());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for ask in &q.secrets {
        if !seen.insert(ask.name.as_str()) {
            return Err(format!("secret {} is asked for twice", ask.name));
        }
        let Some(grant) = rule.secrets.iter().find(|s| s.name == ask.name) else {
            return Err(format!(
                "secret {} is not granted by rule {}",
                ask.name, rule.name
            ));
        };
        if let Some(env) = ask.env.as_deref().filter(|e| *e != grant.env) {
            return Err(format!(
                "rule {} gives secret {} as {}, not {env}",
                rule.name, grant.name, grant.env
            ));
        }
        if !visible(grant) {
            return Err(format!(
                "system secret {} is not granted to {}",
                grant.name,
                who_label(&q.who)
            ));
        }
        out.push(grant.clone());
    }
    Ok(out)
}

fn caller_allowed(users: &[u32], groups: &[u32], who: &Who) -> bool {
    users.contains(&who.uid)
        || groups.contains(&who.gid)
        || who.groups.iter().any(|g| groups.contains(g))
}

fn system_granted(p: &Compiled, secret: &str, who: &Who) -> bool {
    p.grants
        .iter()
        .any(|g| g.secret == secret && caller_allowed(&g.users, &g.groups, who))
}

/// `user alice (uid 1000)`, or `uid 1000` when the account has no name.
fn who_label(who: &Who) -> String {
    match User::from_uid(Uid::from_raw(who.uid)) {
        Ok(Some(u)) => format!("user {} (uid {})", u.name, who.uid),
        _ => format!("uid {}", who.uid),
    }
}

pub fn commands_for(p: &Compiled, who: &Who) -> Vec<CommandSummary> {
    p.rules
        .iter()
        .filter(|r| caller_allowed(&r.users, &r.groups, who))
        .map(|r| CommandSummary {
            rule: r.name.clone(),
            command: r.command.clone(),
            args: match &r.args {
                None => vec!["any".to_owned()],
                Some(alts) => alts.iter().map(|a| a.describe()).collect(),
            },
            secrets: r
                .secrets
                .iter()
                .filter(|s| s.scope == SecretScope::User || system_granted(p, &s.name, who))
                .cloned()
                .collect(),
            pass_env: r.pass_env.clone(),
            isolation: r.isolation,
            allow_interpreter: r.allow_interpreter,
            cwd_readable: r.sandbox.cwd_readable,
            arg_patterns: r
                .args
                .as_ref()
                .map(|alts| alts.iter().map(|a| a.summary()).collect()),
            sandbox: SandboxSummary::of(&r.sandbox),
        })
        .collect()
}
