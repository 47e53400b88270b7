//! The interpreter guard, tried as an attacker would: a rule naming any
//! launcher, interpreter, compiler, tool with a shell escape or environment
//! printer found on this machine is refused unless it says
//! `allow_interpreter = true`, whatever name or symbolic link leads to it;
//! and what `jq -n env` shows under a rule that knowingly allows it. Needs
//! root (scripts/deps.sh installs the tools).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use aivault_tests::{contains, fails_with, ok, set_secret, Daemon, Options, User};

const SECRET: &str = "s3cr3t-Value-For-Interp-Tests-0077";

/// The list: launchers, then interpreters and REPL-capable tools,
/// compilers and tools with shell escapes, then environment printers.
const DANGEROUS: &[&str] = &[
    "env",
    "nice",
    "nohup",
    "setsid",
    "timeout",
    "stdbuf",
    "setarch",
    "linux32",
    "linux64",
    "prlimit",
    "logsave",
    "capsh",
    "chroot",
    "unshare",
    "nsenter",
    "taskset",
    "ionice",
    "chrt",
    "xargs",
    "find",
    "flock",
    "script",
    "watch",
    "busybox",
    "sudo",
    "su",
    "runuser",
    "setpriv",
    "systemd-run",
    "ssh",
    "jq",
    "sqlite3",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "sed",
    "vim",
    "vim.tiny",
    "vi",
    "view",
    "ex",
    "ed",
    "less",
    "more",
    "man",
    "gdb",
    "make",
    "tclsh",
    "lua",
    "php",
    "ruby",
    "perl",
    "python3",
    "gcc",
    "cc",
    "c++",
    "g++",
    "cpp",
    "clang",
    "ld",
    "ld.bfd",
    "ld.gold",
    "x86_64-linux-gnu-gcc-12",
    "sh",
    "bash",
    "dash",
    "printenv",
    "envsubst",
    "ps",
    "m4",
    "dc",
];

/// Binaries the test cannot do without: scripts/deps.sh installs them, so
/// their absence is a broken test machine, not a reason to skip.
const REQUIRED: &[&str] = &[
    "env", "setarch", "prlimit", "logsave", "capsh", "xargs", "find", "busybox", "jq", "sqlite3",
    "gawk", "mawk", "sed", "vi", "ed", "less", "gdb", "make", "tclsh", "lua", "gcc", "cc", "sudo",
];

fn find(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

fn rule(name: &str, command: &Path, users: &User, extra: &str) -> String {
    format!(
        "\n[[rule]]\nname = \"{name}\"\ncommand = \"{}\"\nusers = [\"{}\"]\n{extra}",
        command.display(),
        users.name
    )
}

/// Loads `policy` with `policy reload` and returns (refused?, stderr).
fn reload(d: &Daemon, policy: &str) -> (bool, String) {
    d.write_policy(policy);
    let out = d.vaultctl(&User::root(), &["policy", "reload"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(0) => (false, stderr),
        Some(2) => (true, stderr),
        other => panic!("policy reload exited with {other:?}: {stderr}"),
    }
}

/// Every binary of the list present here: a rule naming it, by the path
/// where it is found (often a symbolic link: awk, cc, vi), is refused at load
/// time and by `policy check` without `allow_interpreter`, and accepted, with
/// a warning, with it.
#[test]
fn every_listed_binary_present_is_refused_without_allow_interpreter() {
    let alice = User::ensure("aivt-alice");
    let d = Daemon::start_new(Options::default());
    let mut covered = Vec::new();
    let mut absent = Vec::new();
    // Each name where it is found, then where it leads when that is another
    // file name (gawk, vim.basic, x86_64-linux-gnu-gcc-12, tclsh8.6): both
    // must be refused on their own.
    let mut paths: Vec<(String, PathBuf)> = Vec::new();
    for name in DANGEROUS {
        let Some(path) = find(name) else {
            absent.push(*name);
            continue;
        };
        let target = std::fs::canonicalize(&path).unwrap();
        if !paths.iter().any(|(n, _)| n == name) {
            paths.push((name.to_string(), path));
        }
        let target_name = target.file_name().unwrap().to_string_lossy().into_owned();
        if !paths.iter().any(|(n, _)| *n == target_name) {
            paths.push((target_name, target));
        }
    }
    for (name, path) in paths {
        let (refused, err) = reload(&d, &rule("tool", &path, &alice, ""));
        assert!(
            refused,
            "{} was accepted without allow_interpreter",
            path.display()
        );
        assert!(
            err.contains("allow_interpreter") && err.contains("not applied"),
            "{}: {err}",
            path.display()
        );
        let check = d.vaultctl(&User::root(), &["policy", "check"], b"");
        let text = String::from_utf8_lossy(&check.stdout);
        assert_eq!(check.status.code(), Some(1), "{}: {text}", path.display());
        assert!(
            text.contains("INVALID") && text.contains("allow_interpreter"),
            "{}: {text}",
            path.display()
        );

        let allowed = rule("tool", &path, &alice, "allow_interpreter = true\n");
        let (refused, err) = reload(&d, &allowed);
        assert!(!refused, "{} with allow_interpreter: {err}", path.display());
        let text = ok(&d.vaultctl(&User::root(), &["policy", "check"], b""));
        assert!(
            text.contains("allow_interpreter: this command can"),
            "{}: no warning in {text}",
            path.display()
        );
        covered.push(name);
    }
    println!("covered {} binaries: {covered:?}", covered.len());
    println!("not on this machine: {absent:?}");
    let missing: Vec<&&str> = REQUIRED
        .iter()
        .filter(|r| !covered.iter().any(|c| c == *r))
        .collect();
    assert!(
        missing.is_empty(),
        "scripts/deps.sh should have installed {missing:?}"
    );
    assert!(covered.len() >= 40, "only {} covered", covered.len());
}

/// A symbolic link with a harmless name is judged by where it leads: a
/// multi-call name linked to busybox is busybox, a link to jq is jq.
#[test]
fn innocent_names_that_lead_to_a_dangerous_binary_are_refused() {
    let alice = User::ensure("aivt-alice");
    let d = Daemon::start_new(Options::default());
    let links = d.path("links");
    std::fs::create_dir(&links).unwrap();
    for (link, target) in [("ls", "busybox"), ("report", "jq"), ("compile", "gcc")] {
        let target = find(target).unwrap_or_else(|| panic!("{target} is not installed"));
        let path = links.join(link);
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let (refused, err) = reload(&d, &rule("tool", &path, &alice, ""));
        assert!(
            refused,
            "{} -> {} accepted",
            path.display(),
            target.display()
        );
        assert!(err.contains("allow_interpreter"), "{err}");
    }
}

/// Tools whose danger is in their options load, and `policy check` says
/// which options the patterns let through; tight patterns get no such
/// warning.
#[test]
fn option_level_tools_are_warned_about() {
    let alice = User::ensure("aivt-alice");
    let d = Daemon::start_new(Options::default());
    let mut policy = String::new();
    for (name, cmd, args) in [
        ("git-any", "/usr/bin/git", ""),
        (
            "git-push",
            "/usr/bin/git",
            "args = [{ prefix = [\"push\"] }]\n",
        ),
        (
            "git-status",
            "/usr/bin/git",
            "args = [{ exact = [\"status\"] }]\n",
        ),
        (
            "tar-glob",
            "/usr/bin/tar",
            "args = [{ glob = [\"*\", \"a.tar\"] }]\n",
        ),
        (
            "curl-data",
            "/usr/bin/curl",
            "args = [{ glob = [\"-d\", \"*\", \"https://example.com/\"] }]\n",
        ),
    ] {
        policy.push_str(&rule(name, Path::new(cmd), &alice, args));
    }
    let (refused, err) = reload(&d, &policy);
    assert!(!refused, "{err}");
    let text = ok(&d.vaultctl(&User::root(), &["policy", "check"], b""));
    // `name (file): effect`, then its `    warning: …` lines.
    let section = |rule: &str| -> String {
        let head = format!("{rule} (");
        let mut lines = text.lines().skip_while(|l| !l.starts_with(&head));
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("no {rule} in {text}"));
        let warnings: Vec<&str> = lines.take_while(|l| l.starts_with("    ")).collect();
        format!("{first}\n{}", warnings.join("\n"))
    };
    for (rule, needle) in [
        ("git-any", "git -c"),
        ("git-push", "--receive-pack"),
        ("tar-glob", "--to-command"),
        ("tar-glob", "-I"),
        ("curl-data", "curl -d"),
    ] {
        assert!(
            section(rule).contains(needle),
            "{rule}: no {needle} in {text}"
        );
    }
    assert!(!section("git-status").contains("through:"), "{text}");
}

/// `jq -n env` under a rule that knowingly allows it: the value jq prints is
/// redacted, and jq cannot read `/proc/self/environ`. But jq can re-encode
/// the value in ways no redactor can know (`explode` gives its code points):
/// that is why jq is refused without `allow_interpreter` (docs/policy.md).
#[test]
fn jq_under_a_knowing_rule_prints_a_redacted_environment_and_its_limits() {
    let alice = User::ensure("aivt-alice");
    let jq = find("jq").expect("jq is installed by scripts/deps.sh");
    let explode = "$ENV.TOKEN|explode";
    let policy = rule(
        "jq",
        &jq,
        &alice,
        &format!(
            "allow_interpreter = true\nsecrets = [{{ name = \"TOKEN\", env = \"TOKEN\" }}]\nargs = [{{ exact = [\"-n\", \"env\"] }}, {{ exact = [\"-n\", \"$ENV\"] }}, {{ exact = [\"-nc\", {explode:?}] }}, {{ exact = [\"-R\", \".\", \"/proc/self/environ\"] }}]\n"
        ),
    );
    let d = Daemon::start_new(Options {
        policy,
        ..Options::default()
    });
    set_secret(&d, &alice, "TOKEN", SECRET);

    for filter in ["env", "$ENV"] {
        let out = d.vaultctl(&alice, &["run", "--", "jq", "-n", filter], b"");
        let text = ok(&out);
        assert!(!text.contains(SECRET), "jq -n {filter} printed the secret");
        assert!(
            text.contains("\"TOKEN\": \"[REDACTED:TOKEN]\""),
            "jq -n {filter}: {text}"
        );
        assert!(!contains(&out.stderr, SECRET.as_bytes()));
    }

    let out = d.vaultctl(
        &alice,
        &["run", "--", "jq", "-R", ".", "/proc/self/environ"],
        b"",
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(!contains(&out.stdout, SECRET.as_bytes()));
    assert!(!contains(&out.stderr, SECRET.as_bytes()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Permission denied"), "{err}");

    // The documented limit: code points pass the redactor.
    let text = ok(&d.vaultctl(&alice, &["run", "--", "jq", "-nc", explode], b""));
    let points: Vec<String> = SECRET.chars().map(|c| (c as u32).to_string()).collect();
    assert_eq!(text.trim(), format!("[{}]", points.join(",")));

    // Without allow_interpreter the same rule does not load, and the
    // running policy stays the knowing one.
    let careless = rule(
        "jq",
        &jq,
        &alice,
        "args = [{ exact = [\"-n\", \"env\"] }]\n",
    );
    d.write_policy(&careless);
    let err = fails_with(&d.vaultctl(&User::root(), &["policy", "reload"], b""), 2);
    assert!(err.contains("allow_interpreter"), "{err}");
    assert!(err.contains("jq"), "{err}");
}
