//! Turning the daemon's [`RunnerJob`] and, later, its [`RunnerSecrets`] into
//! what the run needs: the sandbox specification first ([`stage`], before
//! confinement), then the redaction patterns and the command's
//! `argv`/`envp` ([`Staged::arm`], once the secrets arrive).
//!
//! Secret values are copied exactly twice, into the redaction patterns and
//! into the environment entries; both copies are wiped on drop, and so are
//! the secrets message itself ([`aivault_proto::SecretBytes`]) and the
//! argument copies. Errors name variables and secrets by name or position,
//! never by value.

use std::sync::Arc;

use aivault_proto::{RunnerJob, RunnerSecrets};
use aivault_redact::{Patterns, Secret};
use aivault_runner::sys::ExecVectors;
use aivault_runner::SandboxSpec;
use zeroize::Zeroizing;

/// A checked job, waiting for its secrets.
#[derive(Debug)]
pub struct Staged {
    pub spec: SandboxSpec,
    argv: Vec<Zeroizing<Vec<u8>>>,
    env: Vec<(String, String)>,
}

/// What the command is started with.
#[derive(Debug)]
pub struct Armed {
    pub patterns: Arc<Patterns>,
    pub vectors: ExecVectors,
}

/// Why a job cannot be run. Messages carry no values.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("redaction: {0}")]
    Redaction(#[source] aivault_redact::Error),
    #[error("empty argument vector")]
    NoArgv,
    #[error("argument #{0} contains a NUL byte")]
    ArgNul(usize),
    #[error("invalid environment variable name {0:?}")]
    EnvName(String),
    #[error("value of environment variable {0} contains a NUL byte")]
    EnvNul(String),
    #[error("cannot prepare the command's argument and environment vectors")]
    Vectors,
}

/// Checks the job: the arguments and the plain environment (the sandbox
/// specification arrives typed, checked by decoding the job).
pub fn stage(job: RunnerJob) -> Result<Staged, JobError> {
    if job.argv.is_empty() {
        return Err(JobError::NoArgv);
    }
    let mut argv = Vec::with_capacity(job.argv.len());
    for (index, arg) in job.argv.iter().enumerate() {
        if arg.as_bytes().contains(&0) {
            return Err(JobError::ArgNul(index));
        }
        argv.push(c_entry(&[arg.as_bytes()]));
    }
    environment(job.env.iter().map(|(k, v)| (k.as_str(), v.as_bytes())))?;
    Ok(Staged {
        spec: job.sandbox,
        argv,
        env: job.env,
    })
}

impl Staged {
    /// Adds the secrets: builds the redaction patterns and the `envp`. The
    /// secrets message is wiped when this returns.
    pub fn arm(&mut self, secrets: RunnerSecrets) -> Result<Armed, JobError> {
        let values: Vec<Secret> = secrets
            .secrets
            .iter()
            .map(|(name, _, value)| Secret::new(name.as_str(), value.as_bytes().to_vec()))
            .collect();
        let patterns = Patterns::new(&values).map_err(JobError::Redaction)?;
        drop(values);

        let plain = self.env.iter().map(|(k, v)| (k.as_str(), v.as_bytes()));
        let secret = secrets
            .secrets
            .iter()
            .map(|(_, var, value)| (var.as_str(), value.as_bytes()));
        let envp = environment(plain.chain(secret))?;
        let argv = std::mem::take(&mut self.argv);
        let vectors = ExecVectors::new(argv, envp).map_err(|_| JobError::Vectors)?;
        Ok(Armed {
            patterns: Arc::new(patterns),
            vectors,
        })
    }
}

/// `NAME=value` entries, NUL-terminated; a later entry for a name replaces
/// an earlier one (so a secret wins over a pass-through variable).
fn environment<'a>(
    vars: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<Zeroizing<Vec<u8>>>, JobError> {
    let mut entries: Vec<(&str, Zeroizing<Vec<u8>>)> = Vec::new();
    for (name, value) in vars {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(JobError::EnvName(name.escape_default().to_string()));
        }
        if value.contains(&0) {
            return Err(JobError::EnvNul(name.to_owned()));
        }
        entries.retain(|(existing, _)| *existing != name);
        entries.push((name, c_entry(&[name.as_bytes(), b"=", value])));
    }
    Ok(entries.into_iter().map(|(_, entry)| entry).collect())
}

/// Concatenates `parts` and a NUL into a buffer allocated once, so no
/// unwiped copy is left behind by a reallocation.
fn c_entry(parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let len = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
    let mut entry = Zeroizing::new(Vec::with_capacity(len));
    for part in parts {
        entry.extend_from_slice(part);
    }
    entry.push(0);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use aivault_proto::SecretBytes;
    use aivault_runner::Limits;

    fn job() -> RunnerJob {
        let spec = SandboxSpec {
            home: "/h".into(),
            tmp: "/t".into(),
            read: vec![],
            write: vec![],
            exec: vec![],
            cwd: None,
            cwd_writable: false,
            tcp_connect: vec![],
            tcp_bind: vec![],
            limits: Limits::default(),
            require_full_landlock: false,
            isolation: Default::default(),
        };
        RunnerJob {
            argv: vec!["/usr/bin/env".into(), "-0".into()],
            env: vec![
                ("PATH".into(), "/usr/bin".into()),
                ("TOKEN".into(), "x".into()),
            ],
            sandbox: spec,
            max_output: 1 << 20,
        }
    }

    fn secrets(list: &[(&str, &str, &str)]) -> RunnerSecrets {
        RunnerSecrets {
            secrets: list
                .iter()
                .map(|(n, v, s)| {
                    (
                        (*n).to_owned(),
                        (*v).to_owned(),
                        SecretBytes::new(s.as_bytes().to_vec()),
                    )
                })
                .collect(),
        }
    }

    fn prepare(job: RunnerJob, list: &[(&str, &str, &str)]) -> Result<(Staged, Armed), JobError> {
        let mut staged = stage(job)?;
        let armed = staged.arm(secrets(list))?;
        Ok((staged, armed))
    }

    #[test]
    fn builds_vectors_and_patterns() {
        let (staged, armed) = prepare(job(), &[("API", "TOKEN", "s3cret-value")]).expect("prepare");
        assert_eq!(staged.spec.home, std::path::PathBuf::from("/h"));
        let out = aivault_redact::redact_all(&armed.patterns, b"a s3cret-value b");
        assert_eq!(out, b"a [REDACTED:API] b");
        let dbg = format!("{:?}", armed.vectors);
        assert!(dbg.contains("argc: 2") && dbg.contains("envc: 2"), "{dbg}");
        assert!(!dbg.contains("s3cret"));
    }

    #[test]
    fn no_secrets_is_fine() {
        let (_, armed) = prepare(job(), &[]).expect("prepare");
        let out = aivault_redact::redact_all(&armed.patterns, b"plain output");
        assert_eq!(out, b"plain output");
    }

    #[test]
    fn later_variables_replace_earlier_ones() {
        let vars = [("A", &b"1"[..]), ("B", &b"2"[..]), ("A", &b"3"[..])];
        let env = environment(vars.into_iter()).expect("env");
        let env: Vec<&[u8]> = env.iter().map(|e| &e[..]).collect();
        assert_eq!(env, [&b"B=2\0"[..], &b"A=3\0"[..]]);
    }

    #[test]
    fn bad_input_is_refused_without_values() {
        let err = prepare(job(), &[("API", "BAD=NAME", "s3cret-value")]).expect_err("bad name");
        assert!(matches!(err, JobError::EnvName(_)));
        assert!(!err.to_string().contains("s3cret"));

        let err = prepare(job(), &[("API", "TOKEN", "s3cret\0value")]).expect_err("nul");
        assert_eq!(
            err.to_string(),
            "value of environment variable TOKEN contains a NUL byte"
        );

        let err = prepare(job(), &[("API", "TOKEN", "")]).expect_err("empty");
        assert!(matches!(err, JobError::Redaction(_)));

        let mut j = job();
        j.argv.clear();
        assert!(matches!(stage(j), Err(JobError::NoArgv)));

        let mut j = job();
        j.env.push(("BAD=NAME".into(), "v".into()));
        assert!(matches!(stage(j), Err(JobError::EnvName(_))));
    }
}
