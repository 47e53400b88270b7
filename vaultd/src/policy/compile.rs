//! Turning parsed files into validated rules, grants and pins (and, through
//! [`super::capability`], providers and capabilities).
//!
//! Everything that can be checked without a request is checked here, and any
//! failure invalidates the whole policy: paths, hashes, patterns, names,
//! users and groups, forbidden variables, interpreters, sandbox values, and
//! pins (a rule that would give a pinned secret to another command).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::args::ArgPattern;
use super::capability::{Capabilities, Pending};
use super::check::{
    identities, is_normal_absolute, parse_sha256, valid_rule_name, valid_secret_name,
};
use super::env::{check_env_name, is_plainly_harmless};
use super::error::{EntryError, PolicyError};
use super::interp::danger;
use super::mcp::McpServers;
use super::options;
use super::resolve::resolve_command;
use super::sandbox::SandboxProfile;
use super::schema::{decode, label, RawFile, RawGrant, RawPin, RawRule};
use super::{Isolation, SecretGrant, SecretScope, DEFAULT_SEARCH_PATH};
use crate::names::{self as secret_names, Glob};

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub source: PathBuf,
    /// As written in the policy.
    pub command: PathBuf,
    /// Where `command` led when the policy was loaded, if elsewhere.
    pub resolved: Option<PathBuf>,
    pub sha256: Option<[u8; 32]>,
    pub args: Option<Vec<ArgPattern>>,
    pub users: Vec<u32>,
    pub groups: Vec<u32>,
    /// `alice (uid 1000), group devs (gid 100)` for explanations.
    pub who_text: String,
    pub secrets: Vec<SecretGrant>,
    /// Patterns such as `aws/*`, expanded at run time over the secrets
    /// that exist in the grant's scope (the caller's own, or the system's).
    pub secret_globs: Vec<GlobGrant>,
    pub pass_env: Vec<String>,
    pub sandbox: SandboxProfile,
    pub isolation: Isolation,
    pub allow_interpreter: bool,
    /// Whether runs may use secrets past their expiry.
    pub allow_expired: bool,
    /// Whether a person must approve each run, and who.
    pub approval: Option<super::approval::ApprovalRule>,
    /// Why the command is a shell/interpreter/launcher, if it is one.
    pub danger: Option<&'static str>,
    pub warnings: Vec<String>,
}

impl Rule {
    pub fn names_command(&self, path: &Path) -> bool {
        self.command == path || self.resolved.as_deref() == Some(path)
    }

    /// Whether this rule could concern a command the caller named, judged by
    /// file name alone so the daemon can refuse unrelated names before it
    /// looks at the filesystem (which it does as root).
    pub fn mentions(&self, argv0: &str) -> bool {
        let wanted = Path::new(argv0).file_name();
        wanted.is_some()
            && (self.command.file_name() == wanted
                || self.resolved.as_deref().and_then(Path::file_name) == wanted)
    }
}

/// A rule's secret pattern and the scope it selects from.
#[derive(Debug, Clone)]
pub struct GlobGrant {
    pub glob: Glob,
    pub scope: SecretScope,
    /// The variables its secrets may set (always set for user scope).
    pub envs: Option<Vec<String>>,
}

/// A validated `[[grant]]`.
#[derive(Debug, Clone)]
pub struct Grant {
    pub secret: String,
    pub source: PathBuf,
    pub users: Vec<u32>,
    pub groups: Vec<u32>,
    pub who_text: String,
}

/// A validated `[[pin]]`; `commands` includes where each path led at load time.
#[derive(Debug, Clone)]
pub struct Pin {
    pub secret: String,
    pub scope: SecretScope,
    pub source: PathBuf,
    pub commands: Vec<PathBuf>,
}

/// The whole validated policy.
#[derive(Debug)]
pub struct Compiled {
    pub search_path: Vec<PathBuf>,
    pub rules: Vec<Rule>,
    pub grants: Vec<Grant>,
    pub pins: Vec<Pin>,
    /// `[[provider]]` and `[[capability]]` (`capability.rs`).
    pub broker: Capabilities,
    /// `[[mcp_server]]` (`mcp.rs`).
    pub mcp: McpServers,
}

impl Default for Compiled {
    fn default() -> Self {
        Compiled {
            search_path: DEFAULT_SEARCH_PATH.iter().map(PathBuf::from).collect(),
            rules: Vec::new(),
            grants: Vec::new(),
            pins: Vec::new(),
            broker: Capabilities::default(),
            mcp: McpServers::default(),
        }
    }
}

/// Accumulates files in merge order, then cross-checks them.
#[derive(Debug, Default)]
pub struct Builder {
    search_path: Option<(PathBuf, Vec<PathBuf>)>,
    rules: Vec<Rule>,
    grants: Vec<Grant>,
    pins: Vec<Pin>,
    broker: Pending,
    mcp: McpServers,
}

fn entry_err(path: &Path, entry: String, error: EntryError) -> PolicyError {
    PolicyError::Entry {
        path: path.into(),
        entry,
        error,
    }
}

impl Builder {
    pub fn add_file(&mut self, path: &Path, text: &str) -> Result<(), PolicyError> {
        let doc: toml::Table = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            path: path.into(),
            message: e.to_string(),
        })?;
        let file: RawFile = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| PolicyError::TopLevel {
                path: path.into(),
                message: e.message().to_owned(),
            })?;
        if let Some(sp) = file.search_path {
            self.set_search_path(path, sp)?;
        }
        for (i, v) in file.rule.iter().enumerate() {
            let entry = label("rule", "name", i, v);
            let rule = decode::<RawRule>(v)
                .and_then(|raw| self.rule(path, raw))
                .map_err(|e| entry_err(path, entry, e))?;
            self.rules.push(rule);
        }
        for (i, v) in file.grant.iter().enumerate() {
            let entry = label("grant of", "secret", i, v);
            let grant = decode::<RawGrant>(v)
                .and_then(|raw| grant(path, raw))
                .map_err(|e| entry_err(path, entry, e))?;
            self.grants.push(grant);
        }
        for (i, v) in file.pin.iter().enumerate() {
            let entry = label("pin of", "secret", i, v);
            let pin = decode::<RawPin>(v)
                .and_then(|raw| pin(path, raw))
                .map_err(|e| entry_err(path, entry, e))?;
            self.pins.push(pin);
        }
        self.broker.add_providers(path, &file.provider)?;
        self.broker.add_capabilities(path, &file.capability);
        self.mcp.add(path, &file.mcp_server)?;
        Ok(())
    }

    fn set_search_path(&mut self, path: &Path, dirs: Vec<PathBuf>) -> Result<(), PolicyError> {
        let top = |message: String| PolicyError::TopLevel {
            path: path.into(),
            message,
        };
        if let Some((first, _)) = &self.search_path {
            return Err(top(format!(
                "search_path is already set in {}",
                first.display()
            )));
        }
        if let Some(bad) = dirs.iter().find(|d| !is_normal_absolute(d)) {
            return Err(top(format!(
                "search_path entry {} is not a plain absolute path",
                bad.display()
            )));
        }
        self.search_path = Some((path.into(), dirs));
        Ok(())
    }

    fn rule(&self, source: &Path, raw: RawRule) -> Result<Rule, EntryError> {
        if !valid_rule_name(&raw.name) {
            return Err(EntryError::RuleName(raw.name));
        }
        if let Some(other) = self.rules.iter().find(|r| r.name == raw.name) {
            return Err(EntryError::DuplicateRule(other.source.clone()));
        }
        let command = raw.command;
        if !command.is_absolute() {
            return Err(EntryError::RelativeCommand(command));
        }
        if !is_normal_absolute(&command) {
            return Err(EntryError::UnnormalCommand(command));
        }
        let sha256 = raw.sha256.as_deref().map(parse_sha256).transpose()?;
        if raw.args.as_ref().is_some_and(Vec::is_empty) {
            return Err(EntryError::ArgPattern(
                "args = [] matches nothing; use [{ exact = [] }] for no arguments, or omit args"
                    .into(),
            ));
        }
        let args = raw
            .args
            .map(|alts| {
                alts.iter()
                    .map(ArgPattern::compile)
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
            .map_err(EntryError::ArgPattern)?;
        let (users, groups, who_text) = identities(&raw.users, &raw.groups)?;

        let mut envs = HashSet::new();
        let mut names = HashSet::new();
        let mut secrets = Vec::new();
        let mut secret_globs: Vec<GlobGrant> = Vec::new();
        for s in raw.secrets {
            if secret_names::is_glob(&s.name) {
                let glob =
                    Glob::parse(&s.name).map_err(|m| EntryError::SecretGlob(s.name.clone(), m))?;
                if s.env.is_some() {
                    return Err(EntryError::GlobEnv(s.name));
                }
                let envs = match (s.scope, s.envs) {
                    (SecretScope::User, None) => return Err(EntryError::GlobEnvs(s.name)),
                    (_, Some(list)) => {
                        for e in &list {
                            check_env_name(e).map_err(EntryError::EnvName)?;
                        }
                        Some(list)
                    }
                    (SecretScope::System, None) => None,
                };
                if secret_globs
                    .iter()
                    .any(|g| g.glob == glob && g.scope == s.scope)
                {
                    return Err(EntryError::DuplicateSecret(s.name));
                }
                secret_globs.push(GlobGrant {
                    glob,
                    scope: s.scope,
                    envs,
                });
                continue;
            }
            if s.envs.is_some() {
                return Err(EntryError::EnvsNotPattern(s.name));
            }
            if !valid_secret_name(&s.name) {
                return Err(EntryError::SecretName(s.name));
            }
            let env = s.env.unwrap_or_else(|| secret_names::default_env(&s.name));
            check_env_name(&env).map_err(EntryError::EnvName)?;
            if !names.insert(s.name.clone()) {
                return Err(EntryError::DuplicateSecret(s.name));
            }
            if !envs.insert(env.clone()) {
                return Err(EntryError::DuplicateEnv(env));
            }
            secrets.push(SecretGrant {
                name: s.name,
                scope: s.scope,
                env,
            });
        }
        for name in &raw.pass_env {
            check_env_name(name).map_err(EntryError::EnvName)?;
            if !envs.insert(name.clone()) {
                return Err(EntryError::DuplicateEnv(name.clone()));
            }
        }

        let canonical = std::fs::canonicalize(&command).ok();
        let names = file_names(&command, canonical.as_deref());
        let danger = names.iter().find_map(|n| danger(n));
        if let (Some(reason), false) = (danger, raw.allow_interpreter) {
            return Err(EntryError::Interpreter { command, reason });
        }
        let sandbox = raw.sandbox.build().map_err(EntryError::Sandbox)?;
        let approval = super::approval::compile(raw.approval, raw.approvers, raw.approval_channel)?;
        let resolved = canonical.filter(|c| *c != command);

        let mut rule = Rule {
            name: raw.name,
            source: source.into(),
            command,
            resolved,
            sha256,
            args,
            users,
            groups,
            who_text,
            secrets,
            secret_globs,
            pass_env: raw.pass_env,
            sandbox,
            isolation: raw.isolation,
            allow_interpreter: raw.allow_interpreter,
            allow_expired: raw.allow_expired,
            approval,
            danger,
            warnings: Vec::new(),
        };
        rule.warnings = rule_warnings(&rule);
        rule.warnings.extend(options::warnings(
            names.iter().map(String::as_str),
            rule.args.as_deref(),
        ));
        Ok(rule)
    }

    /// Cross-file checks; the result is the policy.
    pub fn finish(mut self) -> Result<Compiled, PolicyError> {
        let mut rules = self.rules;
        for rule in &rules {
            for s in &rule.secrets {
                for pin in self
                    .pins
                    .iter()
                    .filter(|p| p.secret == s.name && p.scope == s.scope)
                {
                    let allowed = pin.commands.iter().any(|c| rule.names_command(c));
                    if !allowed {
                        return Err(entry_err(
                            &rule.source,
                            format!("rule {:?}", rule.name),
                            EntryError::PinViolated {
                                secret: s.name.clone(),
                                scope: s.scope,
                                pin_file: pin.source.clone(),
                            },
                        ));
                    }
                }
            }
        }
        for i in 0..rules.len() {
            let (earlier, rest) = rules.split_at_mut(i);
            let rule = &mut rest[0];
            for s in rule
                .secrets
                .iter()
                .filter(|s| s.scope == SecretScope::System)
            {
                if !self.grants.iter().any(|g| g.secret == s.name) {
                    rule.warnings.push(format!(
                        "system secret {} is granted to nobody ([[grant]]), so this rule never delivers it",
                        s.name
                    ));
                }
            }
            if let Some(first) = earlier.iter().find(|e| e.command == rule.command) {
                rule.warnings.push(format!(
                    "rule {} earlier in merge order names the same command and is tried first",
                    first.name
                ));
            }
        }
        let pins = self.pins;
        let broker = self.broker.finish(|secret, scope| {
            pins.iter()
                .find(|p| p.secret == secret && p.scope == scope)
                .map(|p| p.source.clone())
        })?;
        self.mcp.check_pins(|secret, scope| {
            pins.iter()
                .find(|p| p.secret == secret && p.scope == scope)
                .map(|p| (p.source.as_path(), p.commands.as_slice()))
        })?;
        self.mcp.check_capabilities(&broker.capabilities)?;
        let mut compiled = Compiled {
            rules,
            grants: self.grants,
            pins,
            broker,
            mcp: self.mcp,
            ..Compiled::default()
        };
        if let Some((_, sp)) = self.search_path {
            compiled.search_path = sp;
        }
        Ok(compiled)
    }
}

fn grant(source: &Path, raw: RawGrant) -> Result<Grant, EntryError> {
    if !valid_secret_name(&raw.secret) {
        return Err(EntryError::SecretName(raw.secret));
    }
    let (users, groups, who_text) = identities(&raw.users, &raw.groups)?;
    Ok(Grant {
        secret: raw.secret,
        source: source.into(),
        users,
        groups,
        who_text,
    })
}

fn pin(source: &Path, raw: RawPin) -> Result<Pin, EntryError> {
    if !valid_secret_name(&raw.secret) {
        return Err(EntryError::SecretName(raw.secret));
    }
    let mut commands = Vec::new();
    for c in raw.commands {
        if !c.is_absolute() {
            return Err(EntryError::RelativeCommand(c));
        }
        if !is_normal_absolute(&c) {
            return Err(EntryError::UnnormalCommand(c));
        }
        if let Ok(canon) = std::fs::canonicalize(&c) {
            commands.push(canon);
        }
        commands.push(c);
    }
    Ok(Pin {
        secret: raw.secret,
        scope: raw.scope,
        source: source.into(),
        commands,
    })
}

fn rule_warnings(rule: &Rule) -> Vec<String> {
    let mut w = Vec::new();
    if rule.isolation == Isolation::Caller {
        w.push("isolation = \"caller\": the command runs as the caller's uid, so the caller can read its environment, and the secrets in it, through /proc while it runs".to_owned());
    }
    if let Some(reason) = rule.danger {
        w.push(format!(
            "allow_interpreter: this command can print its own environment or run other programs with the secrets ({reason})"
        ));
    }
    if rule.args.is_none() {
        w.push("no args patterns: any argument list is accepted".to_owned());
    }
    for name in rule.pass_env.iter().filter(|n| !is_plainly_harmless(n)) {
        w.push(format!("pass-through variable {name} is chosen by the caller: make sure it cannot redirect where secrets go or make the command run other programs"));
    }
    if rule.sandbox.cwd_readable {
        w.push("workdir: the caller controls the working directory's content; commands that read configuration from it (git's .git/config, .npmrc, …) can be made to run other programs with the rule's secrets".to_owned());
    }
    if rule.sandbox.cwd_writable {
        w.push("workdir = \"read-write\": the command can change or delete every file of the caller's below the directory it is given, and plant files the caller's own tools later run as the caller (.git/hooks, .envrc, Makefile)".to_owned());
    }
    match resolve_command(&rule.command.to_string_lossy(), &[]) {
        Err(e) => w.push(format!("the command cannot be run now: {e}")),
        Ok(found) => {
            if rule.sha256.is_some_and(|pin| pin != found.sha256) {
                w.push(format!(
                    "the current {} does not match sha256 pin; runs will be denied",
                    found.path.display()
                ));
            }
        }
    }
    w
}

/// Longest chain of symbolic links followed when judging a command by name
/// (the kernel's own limit is 40).
const MAX_LINKS: usize = 40;

/// The file names a command goes by: as written, every symbolic link on the
/// way (`cc -> /etc/alternatives/cc -> gcc -> gcc-12`), and the file it
/// finally resolves to (a link to `busybox` is `busybox`).
fn file_names(command: &Path, canonical: Option<&Path>) -> Vec<String> {
    let mut paths = vec![command.to_path_buf()];
    let mut at = command.to_path_buf();
    for _ in 0..MAX_LINKS {
        let Ok(target) = std::fs::read_link(&at) else {
            break;
        };
        at = match at.parent() {
            Some(dir) => dir.join(target),
            None => target,
        };
        paths.push(at.clone());
    }
    paths.extend(canonical.map(Path::to_path_buf));
    let mut names: Vec<String> = Vec::new();
    for p in &paths {
        // Lossy, not skipped: `python3\xff` is still judged as a python.
        if let Some(n) = p.file_name().map(|n| n.to_string_lossy()) {
            if !names.iter().any(|have| *have == n) {
                names.push(n.into_owned());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::file_names;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    #[test]
    fn a_name_that_is_not_utf8_is_still_judged() {
        let cmd = Path::new(OsStr::from_bytes(b"/opt/bin/python3\xff"));
        let names = file_names(cmd, None);
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(
            super::super::interp::danger(&names[0]).is_some(),
            "{names:?} escaped the interpreter list"
        );
    }
}
