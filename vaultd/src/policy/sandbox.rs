//! The sandbox profile a rule gives its command, and its defaults.
//!
//! The runner always grants read/execute access to the system directories
//! and a private home and temporary directory; `read` and `write` name
//! *extra* paths. Defaults (what an omitted key means):
//!
//! | key | default |
//! | --- | --- |
//! | `read`, `write` | none |
//! | `tcp_connect`, `tcp_bind` | none (no TCP at all) |
//! | `timeout` | 60 s |
//! | `max_output` | 16 MiB (stdout and stderr together) |
//! | `memory` | 1 GiB of address space |
//! | `processes` | 64 |
//! | `file_size` | 64 MiB |
//! | `cpu` | 60 s of CPU time |
//! | `workdir` | `"none"` (`"read-only"`, `"read-write"`: what the caller may ask for; `cwd_readable = true` is the older spelling of `"read-only"`) |
//! | `require_full_landlock` | false (run with what the kernel enforces, and audit it) |

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{parse_duration, parse_size, show_duration, show_size, Quantity};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_OUTPUT: u64 = 16 << 20;
pub const DEFAULT_MEMORY: u64 = 1 << 30;
pub const DEFAULT_PROCESSES: u64 = 64;
pub const DEFAULT_FILE_SIZE: u64 = 64 << 20;
pub const DEFAULT_CPU_SECONDS: u64 = 60;

/// What the runner confines the command to. Sent to the runner as is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SandboxProfile {
    /// Extra read-only paths.
    pub read: Vec<PathBuf>,
    /// Extra read-write paths.
    pub write: Vec<PathBuf>,
    /// TCP ports the command may connect to.
    pub tcp_connect: Vec<u16>,
    /// TCP ports the command may bind.
    pub tcp_bind: Vec<u16>,
    /// Wall-clock limit; the whole process tree is killed after it.
    pub timeout: Duration,
    /// Bytes of stdout + stderr after which the run is killed.
    pub max_output: u64,
    /// `RLIMIT_AS`, bytes.
    pub memory: u64,
    /// `RLIMIT_NPROC` for the run's uid.
    pub processes: u64,
    /// `RLIMIT_FSIZE`, bytes.
    pub file_size: u64,
    /// `RLIMIT_CPU`, seconds.
    pub cpu_seconds: u64,
    /// In a rule: the caller *may* ask for read access to its working
    /// directory. In a decision: the caller asked and the rule allows it.
    pub cwd_readable: bool,
    /// In a rule: the caller *may* ask for its working directory writable
    /// (implies `cwd_readable`). In a decision: the caller asked for it.
    pub cwd_writable: bool,
    /// Refuse to run unless the kernel enforces every Landlock restriction.
    pub require_full_landlock: bool,
}

impl Default for SandboxProfile {
    fn default() -> Self {
        SandboxProfile {
            read: Vec::new(),
            write: Vec::new(),
            tcp_connect: Vec::new(),
            tcp_bind: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_output: DEFAULT_MAX_OUTPUT,
            memory: DEFAULT_MEMORY,
            processes: DEFAULT_PROCESSES,
            file_size: DEFAULT_FILE_SIZE,
            cpu_seconds: DEFAULT_CPU_SECONDS,
            cwd_readable: false,
            cwd_writable: false,
            require_full_landlock: false,
        }
    }
}

/// `[rule.sandbox]` as written.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSandbox {
    #[serde(default)]
    read: Vec<PathBuf>,
    #[serde(default)]
    write: Vec<PathBuf>,
    #[serde(default)]
    tcp_connect: Vec<u16>,
    #[serde(default)]
    tcp_bind: Vec<u16>,
    timeout: Option<Quantity>,
    max_output: Option<Quantity>,
    memory: Option<Quantity>,
    processes: Option<u64>,
    file_size: Option<Quantity>,
    cpu: Option<Quantity>,
    #[serde(default)]
    cwd_readable: bool,
    workdir: Option<RawWorkdir>,
    #[serde(default)]
    require_full_landlock: bool,
}

/// `workdir = "none" | "read-only" | "read-write"`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum RawWorkdir {
    None,
    ReadOnly,
    ReadWrite,
}

/// A path a sandbox may name: absolute, no `.`/`..`, and not one that would
/// expose `/proc/self/environ` (the command's own secrets).
fn check_path(key: &str, p: &Path) -> Result<(), String> {
    let shown = p.display();
    if !p.is_absolute() {
        return Err(format!("{key} path {shown} is not absolute"));
    }
    if p.components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(format!("{key} path {shown} contains . or .."));
    }
    if p == Path::new("/") || p.starts_with("/proc") {
        return Err(format!(
            "{key} path {shown} would expose /proc/self/environ, the command's own secrets"
        ));
    }
    Ok(())
}

fn nonzero(key: &str, n: u64) -> Result<u64, String> {
    if n == 0 {
        return Err(format!("{key} must be greater than zero"));
    }
    Ok(n)
}

impl RawSandbox {
    pub fn build(&self) -> Result<SandboxProfile, String> {
        for p in &self.read {
            check_path("read", p)?;
        }
        for p in &self.write {
            check_path("write", p)?;
        }
        let size = |key: &str, q: &Option<Quantity>, default: u64| -> Result<u64, String> {
            match q {
                None => Ok(default),
                Some(q) => nonzero(key, parse_size(q).map_err(|e| format!("{key}: {e}"))?),
            }
        };
        let duration = |key: &str, q: &Option<Quantity>, default: Duration| match q {
            None => Ok(default),
            Some(q) => match parse_duration(q).map_err(|e| format!("{key}: {e}"))? {
                d if d.is_zero() => Err(format!("{key} must be greater than zero")),
                d => Ok(d),
            },
        };
        let cpu = duration("cpu", &self.cpu, Duration::from_secs(DEFAULT_CPU_SECONDS))?;
        let workdir = match (self.workdir, self.cwd_readable) {
            (None, readable) => {
                if readable {
                    RawWorkdir::ReadOnly
                } else {
                    RawWorkdir::None
                }
            }
            (Some(RawWorkdir::None), true) => {
                return Err("cwd_readable = true contradicts workdir = \"none\"".into())
            }
            (Some(w), _) => w,
        };
        Ok(SandboxProfile {
            read: self.read.clone(),
            write: self.write.clone(),
            tcp_connect: self.tcp_connect.clone(),
            tcp_bind: self.tcp_bind.clone(),
            timeout: duration("timeout", &self.timeout, DEFAULT_TIMEOUT)?,
            max_output: size("max_output", &self.max_output, DEFAULT_MAX_OUTPUT)?,
            memory: size("memory", &self.memory, DEFAULT_MEMORY)?,
            processes: nonzero("processes", self.processes.unwrap_or(DEFAULT_PROCESSES))?,
            file_size: size("file_size", &self.file_size, DEFAULT_FILE_SIZE)?,
            // RLIMIT_CPU counts whole seconds; round up so "500ms" is not 0.
            cpu_seconds: cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0),
            cwd_readable: workdir != RawWorkdir::None,
            cwd_writable: workdir == RawWorkdir::ReadWrite,
            require_full_landlock: self.require_full_landlock,
        })
    }
}

fn paths(p: &[PathBuf]) -> String {
    if p.is_empty() {
        return "nothing extra".into();
    }
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn ports(p: &[u16]) -> String {
    if p.is_empty() {
        return "no ports".into();
    }
    p.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
}

impl SandboxProfile {
    /// One clause for `explain`.
    pub fn describe(&self) -> String {
        format!(
            "sandbox: reads {}; writes {}; TCP connect to {}; TCP bind on {}; \
             timeout {}, output {}, memory {}, {} processes, files up to {}, CPU {}s; \
             caller's working directory {}; Landlock {}",
            paths(&self.read),
            paths(&self.write),
            ports(&self.tcp_connect),
            ports(&self.tcp_bind),
            show_duration(self.timeout),
            show_size(self.max_output),
            show_size(self.memory),
            self.processes,
            show_size(self.file_size),
            self.cpu_seconds,
            match (self.cwd_readable, self.cwd_writable) {
                (_, true) => "read-write on request",
                (true, false) => "read-only on request",
                _ => "not given",
            },
            if self.require_full_landlock {
                "fully required"
            } else {
                "best effort"
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SandboxProfile, String> {
        let raw: RawSandbox = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.build()
    }

    #[test]
    fn defaults() {
        assert_eq!(parse(""), Ok(SandboxProfile::default()));
    }

    #[test]
    fn values() {
        let p = parse(
            "read = ['/etc/ssl']\nwrite = ['/var/cache/x']\ntcp_connect = [443]\n\
             timeout = '5m'\nmax_output = '1M'\nmemory = 536870912\nprocesses = 8\n\
             file_size = '1K'\ncpu = '1500ms'\ncwd_readable = true\n",
        )
        .expect("valid");
        assert_eq!(p.timeout, Duration::from_secs(300));
        assert_eq!(p.max_output, 1 << 20);
        assert_eq!(p.memory, 512 << 20);
        assert_eq!(p.processes, 8);
        assert_eq!(p.file_size, 1024);
        assert_eq!(p.cpu_seconds, 2);
        assert!(p.cwd_readable);
        assert!(!p.cwd_writable);
        assert_eq!(p.tcp_connect, vec![443]);
    }

    #[test]
    fn workdir_modes() {
        let modes = |t: &str| parse(t).map(|p| (p.cwd_readable, p.cwd_writable));
        assert_eq!(modes("workdir = 'none'"), Ok((false, false)));
        assert_eq!(modes("workdir = 'read-only'"), Ok((true, false)));
        assert_eq!(modes("workdir = 'read-write'"), Ok((true, true)));
        assert_eq!(modes("cwd_readable = true"), Ok((true, false)));
        assert_eq!(
            modes("cwd_readable = true\nworkdir = 'read-write'"),
            Ok((true, true))
        );
    }

    #[test]
    fn refusals() {
        for (text, needle) in [
            ("read = ['etc']", "not absolute"),
            ("read = ['/']", "/proc/self/environ"),
            ("read = ['/proc/1']", "/proc/self/environ"),
            ("write = ['/tmp/../etc']", "contains . or .."),
            ("timeout = 0", "greater than zero"),
            ("processes = 0", "greater than zero"),
            ("memory = '1X'", "memory:"),
            ("tcp_connect = [70000]", "tcp_connect"),
            ("colour = true", "unknown field"),
            ("workdir = 'copy'", "workdir"),
            ("workdir = 'none'\ncwd_readable = true", "contradicts"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
