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
//!    every `[[pin]]` of a delivered secret names the command; a rule's
//!    patterns (`aws/*`) select among the secrets that exist in the caller's
//!    own scope (or the system's, for granted ones), and an asked pattern
//!    selects among what the rule gives; no two secrets share a variable;
//! 7. the working directory is given only in a mode the rule allows.
//!
//! If no rule passes, the denial explains the check that failed on the rule
//! that got furthest (the first such rule on a tie).

use std::collections::HashSet;

use nix::unistd::{Uid, User};

use super::args::any_matches;
use super::compile::{Compiled, Rule};
use super::env::check_env_name;
use super::interp::danger;
use super::{
    CommandSummary, Decision, Denial, RunQuery, SandboxSummary, SecretGrant, SecretPattern,
    SecretScope, Who,
};
use crate::names::{self as secret_names, Glob};

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
        .and_then(|n| danger(&n.to_string_lossy()));
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
    if q.cwd_writable && !rule.sandbox.cwd_writable {
        return Err((
            6,
            format!(
                "rule {} does not let the command change the caller's working directory (workdir = \"read-write\")",
                rule.name
            ),
        ));
    }
    let mut sandbox = rule.sandbox.clone();
    sandbox.cwd_readable = q.cwd_readable || q.cwd_writable;
    sandbox.cwd_writable = q.cwd_writable;
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

/// The secrets a run gets: every one the rule offers when the caller asks
/// for none, else the ones asked for by name or by pattern. Whatever the
/// choice, no two go to the same variable.
fn pick_secrets(p: &Compiled, rule: &Rule, q: &RunQuery) -> Result<Vec<SecretGrant>, String> {
    let visible =
        |s: &SecretGrant| s.scope == SecretScope::User || system_granted(p, &s.name, &q.who);
    let selected = glob_selected(p, rule, q)?;
    if q.secrets.is_empty() {
        let mut out: Vec<SecretGrant> = rule
            .secrets
            .iter()
            .filter(|s| visible(s))
            .cloned()
            .collect();
        out.extend(selected);
        distinct_variables(rule, &out)?;
        return Ok(out);
    }
    let mut seen = HashSet::new();
    let mut out: Vec<SecretGrant> = Vec::new();
    let add = |out: &mut Vec<SecretGrant>, g: &SecretGrant| {
        if !out.iter().any(|o| o.name == g.name && o.scope == g.scope) {
            out.push(g.clone());
        }
    };
    for ask in &q.secrets {
        if !seen.insert(ask.name.as_str()) {
            return Err(format!("secret {} is asked for twice", ask.name));
        }
        if secret_names::is_glob(&ask.name) {
            let glob =
                Glob::parse(&ask.name).map_err(|m| format!("secret pattern {}: {m}", ask.name))?;
            if ask.env.is_some() {
                return Err(format!(
                    "secret pattern {glob} selects several secrets, so it takes no variable"
                ));
            }
            let offered = rule.secrets.iter().filter(|s| visible(s)).chain(&selected);
            let hits: Vec<&SecretGrant> = offered.filter(|s| glob.matches(&s.name)).collect();
            if hits.is_empty() {
                return Err(format!(
                    "no secret that rule {} gives matches {glob}",
                    rule.name
                ));
            }
            for h in hits {
                add(&mut out, h);
            }
            continue;
        }
        let grant = match rule.secrets.iter().find(|s| s.name == ask.name) {
            Some(g) => {
                if !visible(g) {
                    return Err(format!(
                        "system secret {} is not granted to {}",
                        g.name,
                        who_label(&q.who)
                    ));
                }
                g
            }
            None => match selected.iter().find(|s| s.name == ask.name) {
                Some(g) => g,
                None => return Err(not_granted(rule, &ask.name)),
            },
        };
        if let Some(env) = ask.env.as_deref().filter(|e| *e != grant.env) {
            return Err(format!(
                "rule {} gives secret {} as {}, not {env}",
                rule.name, grant.name, grant.env
            ));
        }
        add(&mut out, grant);
    }
    distinct_variables(rule, &out)?;
    Ok(out)
}

/// Why a name the caller asked for is not given, naming the pattern that
/// would have selected it had it been set.
fn not_granted(rule: &Rule, name: &str) -> String {
    match rule.secret_globs.iter().find(|g| g.glob.matches(name)) {
        Some(g) => format!(
            "secret {name} matches pattern {} of rule {} but is not set",
            g.glob, rule.name
        ),
        None => format!("secret {name} is not granted by rule {}", rule.name),
    }
}

/// The secrets the rule's patterns select: among the names that exist in
/// each pattern's scope (the caller's own, or the system's — never another
/// user's), those it matches, without the ones the rule names itself,
/// system secrets not granted to the caller, and secrets pinned to other
/// commands. Each goes to its name's default variable, which must be one
/// the policy accepts.
fn glob_selected(p: &Compiled, rule: &Rule, q: &RunQuery) -> Result<Vec<SecretGrant>, String> {
    let mut out: Vec<SecretGrant> = Vec::new();
    for g in &rule.secret_globs {
        let pool = match g.scope {
            SecretScope::User => &q.existing.own,
            SecretScope::System => &q.existing.system,
        };
        let mut hits: Vec<&String> = pool.iter().filter(|n| g.glob.matches(n)).collect();
        hits.sort();
        for name in hits {
            let known = |s: &SecretGrant| s.name == *name && s.scope == g.scope;
            if rule.secrets.iter().any(known) || out.iter().any(known) {
                continue;
            }
            if g.scope == SecretScope::System && !system_granted(p, name, &q.who) {
                continue;
            }
            let pinned_elsewhere = p
                .pins
                .iter()
                .filter(|pin| pin.secret == *name && pin.scope == g.scope)
                .any(|pin| !pin.commands.contains(&q.command));
            if pinned_elsewhere {
                continue;
            }
            let env = secret_names::default_env(name);
            check_env_name(&env).map_err(|why| {
                format!(
                    "{} secret {name}, selected by pattern {} of rule {}, cannot be given: {why}",
                    g.scope, g.glob, rule.name
                )
            })?;
            if g.envs
                .as_ref()
                .is_some_and(|allowed| !allowed.contains(&env))
            {
                return Err(format!(
                    "{} secret {name}, selected by pattern {} of rule {}, would set variable {env}, which the pattern's envs do not list",
                    g.scope, g.glob, rule.name
                ));
            }
            out.push(SecretGrant {
                name: name.clone(),
                scope: g.scope,
                env,
            });
        }
    }
    Ok(out)
}

/// Refuses two secrets for one variable, or a secret for a variable the
/// rule passes through from the caller.
fn distinct_variables(rule: &Rule, list: &[SecretGrant]) -> Result<(), String> {
    for (i, a) in list.iter().enumerate() {
        if let Some(b) = list[..i].iter().find(|b| b.env == a.env) {
            return Err(format!(
                "secrets {} and {} would both go to variable {}; rename one, or name it in rule {} with its own env",
                b.name, a.name, a.env, rule.name
            ));
        }
        if rule.pass_env.contains(&a.env) {
            return Err(format!(
                "secret {} would go to variable {}, which rule {} passes through from the caller",
                a.name, a.env, rule.name
            ));
        }
    }
    Ok(())
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
            secret_patterns: r
                .secret_globs
                .iter()
                .map(|g| SecretPattern {
                    pattern: g.glob.to_string(),
                    scope: g.scope,
                })
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
