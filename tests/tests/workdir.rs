//! `vaultctl run --workdir`: a real git repository owned by a real user
//! whose home is 0700, given to fresh-uid runs of `/usr/bin/git` (and
//! `cat`, `touch`) through the caller's open descriptor. `git status` and
//! `git log` print what the user's own git prints; writes fail in
//! read-only mode; without the flag the command sees nothing of the repo;
//! in read-write mode what the command creates is the caller's and
//! nothing outside the directory changes; symbolic links never lead out
//! of it. Needs root (fails, never skips, otherwise).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use aivault_tests::{bin, fails_with, ok, require_root, Daemon, Options, User};

const OUTSIDE: &str = "outside-the-repo-0731";

fn policy(user: &User) -> String {
    format!(
        r#"
[[rule]]
name = "git-ro"
command = "/usr/bin/git"
users = ["{u}"]
[rule.sandbox]
workdir = "read-only"

[[rule]]
name = "cat-ro"
command = "/usr/bin/cat"
users = ["{u}"]
[rule.sandbox]
workdir = "read-only"

[[rule]]
name = "touch-rw"
command = "/usr/bin/touch"
users = ["{u}"]
[rule.sandbox]
workdir = "read-write"

[[rule]]
name = "ls-none"
command = "/usr/bin/ls"
users = ["{u}"]

[[rule]]
name = "stat-caller"
command = "/usr/bin/stat"
users = ["{u}"]
isolation = "caller"
[rule.sandbox]
workdir = "read-only"
"#,
        u = user.name
    )
}

/// A scratch home for `user`: `<tmp>/home` (0700, the user's) below a
/// root-owned 0755 directory, with a file outside the repository, and the
/// repository `home/repo` made by the user's own git.
struct Home {
    _dir: tempfile::TempDir,
    home: PathBuf,
    repo: PathBuf,
}

/// Runs `cmd` as `user` in `cwd` with a clean environment.
fn as_user(user: &User, cwd: &Path, home: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("HOME", home)
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C")
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn make_home(user: &User) -> Home {
    let dir = tempfile::Builder::new()
        .prefix("aivault-wd-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let repo = home.join("repo");
    let git = |args: &[&str]| {
        let cwd = if args[0] == "init" { &home } else { &repo };
        ok(&as_user(user, cwd, &home, "/usr/bin/git", args))
    };
    git(&["init", "-q", "-b", "main", "repo"]);
    git(&["config", "user.name", "Workdir Tester"]);
    git(&["config", "user.email", "wd@example.invalid"]);
    let write = |rel: &str, text: &str| {
        let out = as_user(
            user,
            &repo,
            &home,
            "/usr/bin/sh",
            &["-c", &format!("printf '%s\\n' '{text}' > {rel}")],
        );
        ok(&out);
    };
    write("README", "first line");
    write("../secret.txt", OUTSIDE);
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "the first commit of the workdir test"]);
    write("README", "changed line");
    write("untracked.txt", "new");
    // Symbolic links that point out of the directory, relative and absolute.
    let link = |target: &str, name: &str| {
        ok(&as_user(
            user,
            &repo,
            &home,
            "/usr/bin/ln",
            &["-s", target, name],
        ));
    };
    link("../secret.txt", "up-link");
    link(home.join("secret.txt").to_str().unwrap(), "abs-link");
    link(home.to_str().unwrap(), "home-link");
    Home {
        _dir: dir,
        home,
        repo,
    }
}

/// `vaultctl ARGS` as `user` in `cwd`.
fn vaultctl_in(d: &Daemon, user: &User, cwd: &Path, args: &[&str]) -> Output {
    Command::new(bin("vaultctl"))
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .env("PATH", "/usr/bin:/bin")
        .env("LANG", "C")
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every entry below `dir` (not following links) with its owner, mode,
/// size and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, u32, u64, i64)> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            all.push((
                p,
                m.uid(),
                m.mode(),
                m.size(),
                m.mtime_nsec() + m.mtime() * 1_000_000_000,
            ));
        }
    }
    all.sort();
    all
}

fn setup() -> (Daemon, User, Home) {
    require_root();
    let user = User::ensure("aivt-workdir");
    let home = make_home(&user);
    // As installed with the workdir drop-in: the unit's capability bounding
    // set with the drop-in's, and no_new_privs.
    let d = Daemon::start_new(Options {
        policy: policy(&user),
        unit_capabilities: true,
        dropins: &["aivaultd-workdir.conf"],
        ..Options::default()
    });
    (d, user, home)
}

#[test]
fn git_sees_the_callers_repository_read_only() {
    let (d, user, h) = setup();
    // What the user's own git says, then the same through a run.
    let mine = ok(&as_user(
        &user,
        &h.repo,
        &h.home,
        "/usr/bin/git",
        &["status", "--porcelain"],
    ));
    assert!(
        mine.contains(" M README") && mine.contains("?? untracked.txt"),
        "{mine}"
    );
    let run = ok(&vaultctl_in(
        &d,
        &user,
        &h.repo,
        &[
            "run",
            "--workdir",
            "--",
            "/usr/bin/git",
            "status",
            "--porcelain",
        ],
    ));
    assert_eq!(run, mine);
    let status = ok(&vaultctl_in(
        &d,
        &user,
        &h.repo,
        &["run", "--workdir", "--", "/usr/bin/git", "status"],
    ));
    assert!(status.contains("On branch main"), "{status}");
    assert!(status.contains("modified:   README"), "{status}");

    let mine = ok(&as_user(
        &user,
        &h.repo,
        &h.home,
        "/usr/bin/git",
        &["log", "--format=%H %an %s"],
    ));
    let run = ok(&vaultctl_in(
        &d,
        &user,
        &h.repo,
        &[
            "run",
            "--workdir=read-only",
            "--",
            "/usr/bin/git",
            "log",
            "--format=%H %an %s",
        ],
    ));
    assert_eq!(run, mine);
    assert!(
        run.contains("Workdir Tester the first commit of the workdir test"),
        "{run}"
    );

    // A write fails: the tree is read-only, and nothing changed.
    let before = snapshot(&h.home);
    let out = vaultctl_in(
        &d,
        &user,
        &h.repo,
        &["run", "--workdir", "--", "/usr/bin/git", "tag", "v1"],
    );
    assert_ne!(
        out.status.code(),
        Some(0),
        "git tag succeeded: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("Read-only file system"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(&h.home), before);

    // The decision's audit record names the directory and the mode.
    let audit = std::fs::read_to_string(d.audit_log()).unwrap();
    let repo = h.repo.to_str().unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"git-ro\"")
            && l.contains(&format!("\"path\":\"{repo}\""))
            && l.contains("\"mode\":\"read-only\"")),
        "no run record names the working directory {repo}"
    );
}

#[test]
fn without_the_flag_or_the_rule_the_repository_is_not_there() {
    let (d, user, h) = setup();
    // The command starts in its empty private home: no repository.
    let out = vaultctl_in(&d, &user, &h.repo, &["run", "--", "/usr/bin/git", "status"]);
    assert_eq!(out.status.code(), Some(128), "{}", text(&out));
    assert!(
        text(&out).contains("not a git repository"),
        "{}",
        text(&out)
    );
    // Nor by its path: the home is 0700 and the run uid is not the user.
    let readme = h.repo.join("README");
    let out = vaultctl_in(
        &d,
        &user,
        &h.repo,
        &["run", "--", "cat", readme.to_str().unwrap()],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("changed line"), "{}", text(&out));
    // A rule without `workdir` refuses the flag (permission denied, 4).
    let err = fails_with(
        &vaultctl_in(&d, &user, &h.repo, &["run", "--workdir", "--", "ls"]),
        4,
    );
    assert!(err.contains("working directory"), "{err}");
    // A read-only rule refuses read-write.
    let err = fails_with(
        &vaultctl_in(
            &d,
            &user,
            &h.repo,
            &[
                "run",
                "--workdir=read-write",
                "--",
                "/usr/bin/git",
                "status",
            ],
        ),
        4,
    );
    assert!(err.contains("read-write"), "{err}");
}

#[test]
fn symbolic_links_do_not_lead_out_of_the_directory() {
    let (d, user, h) = setup();
    // The user itself reads through them.
    assert!(ok(&as_user(
        &user,
        &h.repo,
        &h.home,
        "/usr/bin/cat",
        &["up-link"]
    ))
    .contains(OUTSIDE));
    let inside = ok(&vaultctl_in(
        &d,
        &user,
        &h.repo,
        &["run", "--workdir", "--", "cat", "README"],
    ));
    assert_eq!(inside, "changed line\n");
    for link in [
        "up-link",
        "abs-link",
        "home-link/secret.txt",
        "../secret.txt",
    ] {
        let out = vaultctl_in(&d, &user, &h.repo, &["run", "--workdir", "--", "cat", link]);
        assert_ne!(out.status.code(), Some(0), "{link}: {}", text(&out));
        assert!(
            !text(&out).contains(OUTSIDE),
            "{link} led out: {}",
            text(&out)
        );
    }
}

#[test]
fn read_write_creates_the_callers_files_and_nothing_outside() {
    let (d, user, h) = setup();
    let outside: Vec<_> = snapshot(&h.home)
        .into_iter()
        .filter(|e| !e.0.starts_with(&h.repo))
        .collect();
    ok(&vaultctl_in(
        &d,
        &user,
        &h.repo,
        &["run", "--workdir=read-write", "--", "touch", "made-by-run"],
    ));
    let made = std::fs::symlink_metadata(h.repo.join("made-by-run")).unwrap();
    assert_eq!((made.uid(), made.gid()), (user.uid, user.gid));
    // Out of the directory: refused, and nothing appears there.
    for target in ["../planted", "home-link/planted", "up-link"] {
        let out = vaultctl_in(
            &d,
            &user,
            &h.repo,
            &["run", "--workdir=read-write", "--", "touch", target],
        );
        assert_ne!(out.status.code(), Some(0), "{target}: {}", text(&out));
    }
    let after: Vec<_> = snapshot(&h.home)
        .into_iter()
        .filter(|e| !e.0.starts_with(&h.repo))
        .collect();
    assert_eq!(after, outside);
    // Every file in the repository is still the user's.
    for (p, uid, ..) in snapshot(&h.repo) {
        assert_eq!(uid, user.uid, "{} is not the caller's", p.display());
    }
}

/// `vaultctl mcp` started in the repository; its JSON-RPC answers, one per
/// request sent (initialize, then the calls given), read line by line.
fn mcp_in(
    d: &Daemon,
    user: &User,
    cwd: &Path,
    calls: &[serde_json::Value],
) -> Vec<serde_json::Value> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = Command::new(bin("vaultctl"))
        .arg("mcp")
        .current_dir(cwd)
        .env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .env("PATH", "/usr/bin:/bin")
        .uid(user.uid)
        .gid(user.gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = |v: serde_json::Value| writeln!(stdin, "{v}").unwrap();
    send(
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}}),
    );
    send(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    for (i, c) in calls.iter().enumerate() {
        send(
            serde_json::json!({"jsonrpc": "2.0", "id": i + 2, "method": "tools/call",
            "params": {"name": "secret_run", "arguments": c}}),
        );
    }
    let mut answers = Vec::new();
    while answers.len() < calls.len() + 1 {
        let line = lines.next().expect("vaultctl mcp ended early").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v.get("id").is_some() {
            answers.push(v);
        }
    }
    drop(stdin);
    let _ = child.wait();
    answers.sort_by_key(|v| v["id"].as_u64());
    answers
}

#[test]
fn secret_run_over_mcp_takes_the_servers_directory_only_when_asked() {
    let (d, user, h) = setup();
    let mine = ok(&as_user(
        &user,
        &h.repo,
        &h.home,
        "/usr/bin/git",
        &["log", "--format=%H %s"],
    ));
    let argv = serde_json::json!(["/usr/bin/git", "log", "--format=%H %s"]);
    let answers = mcp_in(
        &d,
        &user,
        &h.repo,
        &[
            serde_json::json!({"argv": argv, "workdir": "read-only"}),
            serde_json::json!({"argv": argv}),
            serde_json::json!({"argv": argv, "workdir": "read-write"}),
        ],
    );
    let text = |v: &serde_json::Value| -> String {
        v["result"]["content"]
            .as_array()
            .map(|c| c.iter().filter_map(|p| p["text"].as_str()).collect())
            .unwrap_or_default()
    };
    let asked = &answers[1];
    assert_eq!(
        asked["result"]["structuredContent"]["exit_code"], 0,
        "{asked}"
    );
    assert!(text(asked).contains(mine.trim_end()), "{asked}");
    let not_asked = &answers[2];
    assert_eq!(
        not_asked["result"]["structuredContent"]["exit_code"], 128,
        "{not_asked}"
    );
    assert!(!text(not_asked).contains(mine.trim_end()), "{not_asked}");
    // The rule allows read-only only.
    let refused = &answers[3];
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert!(text(refused).contains("read-write"), "{refused}");
}

#[test]
fn a_caller_mode_run_gets_the_directory_read_only_as_the_caller() {
    let (d, user, h) = setup();
    let out = ok(&vaultctl_in(
        &d,
        &user,
        &h.repo,
        &[
            "run",
            "--workdir",
            "--",
            "/usr/bin/stat",
            "-c",
            "%u %n",
            "README",
        ],
    ));
    assert_eq!(out, format!("{} README\n", user.uid));
}

#[test]
fn without_the_drop_in_the_installed_service_says_what_it_lacks() {
    require_root();
    let user = User::ensure("aivt-workdir");
    let h = make_home(&user);
    // The unit's own capability bounding set, without CAP_SYS_ADMIN.
    let d = Daemon::start_new(Options {
        policy: policy(&user),
        unit_capabilities: true,
        ..Options::default()
    });
    let out = vaultctl_in(
        &d,
        &user,
        &h.repo,
        &["run", "--workdir", "--", "/usr/bin/git", "status"],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("aivaultd-workdir.conf"),
        "{}",
        text(&out)
    );
}

/// Undoes a mount made by a test, whatever the test's outcome.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn sh_root(script: &str) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", text(&out));
}

#[test]
fn a_directory_is_never_given_more_than_the_caller_has_of_it() {
    let (d, user, h) = setup();
    let repo = h.repo.display().to_string();
    // Read-only where the caller has it: read-only it may be given, never
    // read-write (the clone's read-only flag would be cleared).
    sh_root(&format!(
        "mount --bind '{repo}' '{repo}' && mount -o remount,bind,ro '{repo}'"
    ));
    let ro = Mounted(h.repo.clone());
    let out = vaultctl_in(
        &d,
        &user,
        &h.repo,
        &["run", "--workdir=read-write", "--", "touch", "made-by-run"],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("read-only mount"), "{}", text(&out));
    assert!(!h.repo.join("made-by-run").exists());
    ok(&vaultctl_in(
        &d,
        &user,
        &h.repo,
        &[
            "run",
            "--workdir",
            "--",
            "/usr/bin/git",
            "status",
            "--short",
        ],
    ));
    drop(ro);

    // A mount below the directory would be uncovered by the clone.
    let below = h.repo.join("covered");
    ok(&as_user(
        &user,
        &h.repo,
        &h.home,
        "/usr/bin/mkdir",
        &["covered"],
    ));
    sh_root(&format!(
        "mount -t tmpfs -o size=1m none '{}'",
        below.display()
    ));
    let covered = Mounted(below);
    let out = vaultctl_in(
        &d,
        &user,
        &h.repo,
        &["run", "--workdir", "--", "/usr/bin/git", "status"],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("mount below it"), "{}", text(&out));
    drop(covered);

    // A caller in a mount namespace of its own (as a sandbox puts it),
    // where the same path is another mount: refused, though the directory
    // is the same one.
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind '{repo}' '{repo}' && cd '{repo}' && exec setpriv --reuid {} --regid {} --clear-groups \
             env -i AIVAULT_SOCKET='{}' PATH=/usr/bin:/bin '{}' run --workdir -- /usr/bin/git status",
            user.uid,
            user.gid,
            d.socket().display(),
            bin("vaultctl").display()
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("another mount"), "{}", text(&out));
}
