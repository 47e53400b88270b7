//! `scripts/demo.sh`, run as a newcomer runs it: it builds (saying so
//! before cargo's own progress), shows each step working, and leaves
//! nothing behind — no scratch directory, and no demo user unless that
//! user was there before. Needs root, and the workspace's binaries built
//! (the demo's own `cargo build` then only checks them).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aivault_tests::{bus::repo, require_root};

fn user_exists(name: &str) -> bool {
    nix::unistd::User::from_name(name).unwrap().is_some()
}

/// Runs the demo with `user` as its demo user; its output (stdout and
/// stderr interleaved, as a terminal shows them).
fn run_demo(user: &str) -> String {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg("exec scripts/demo.sh 2>&1")
        .current_dir(repo())
        .env("AIVAULT_DEMO_USER", user)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // SIGTERM: the demo's exit trap stops its daemon and cleans up.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
            panic!("scripts/demo.sh did not finish within 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().unwrap();
    assert!(
        status.success(),
        "scripts/demo.sh failed ({status}):\n{out}"
    );
    out
}

/// The position of `needle` in `out`, which must contain it.
fn at(out: &str, needle: &str) -> usize {
    out.find(needle)
        .unwrap_or_else(|| panic!("the demo never printed {needle:?}:\n{out}"))
}

/// Removes the account when the test ends, however it ends.
struct RemoveUser(String);

impl Drop for RemoveUser {
    fn drop(&mut self) {
        if user_exists(&self.0) {
            let _ = Command::new("userdel").arg(&self.0).status();
        }
    }
}

#[test]
fn the_demo_works_and_removes_only_the_user_it_created() {
    require_root();
    let user = format!("aivt-demo{}", std::process::id() % 100_000);
    assert!(!user_exists(&user), "{user} exists before the demo");
    let _cleanup = RemoveUser(user.clone());

    let out = run_demo(&user);
    // Progress while building: the demo's own line first, then cargo's.
    let building = at(&out, "==> building aivault");
    let finished = at(&out, "Finished `dev` profile");
    assert!(building < finished, "{out}");
    let scratch = out[at(&out, "(scratch directory ")..]
        .trim_start_matches("(scratch directory ")
        .split(',')
        .next()
        .unwrap()
        .to_string();
    // Every step ran, in order, and the run's output was redacted.
    let mut last = finished;
    for step in [
        &format!("==> as {user}: store a secret"),
        "==> as root: vaultctl audit verify",
        "not found under",
    ] {
        let pos = at(&out, step);
        assert!(pos > last, "{step:?} out of order:\n{out}");
        last = pos;
    }
    assert!(out.contains("[REDACTED:GITHUB_TOKEN]"), "{out}");
    assert!(!out.contains("ghp_demo_0123456789abcdefDEMO"), "{out}");
    assert!(
        !std::path::Path::new(&scratch).exists(),
        "{scratch} left behind"
    );
    assert!(!user_exists(&user), "the demo left its user {user} behind");

    // A user that was there before the demo is still there after it.
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
        ])
        .arg(&user)
        .status()
        .unwrap();
    assert!(status.success());
    run_demo(&user);
    assert!(
        user_exists(&user),
        "the demo removed a user it did not create"
    );
}

/// The README's opening says which package registries the test command
/// reaches: every kind of installer a script of the test suite runs must
/// have its registry named there (a script that starts using npm, say,
/// fails this until the README says so).
#[test]
fn the_readme_names_every_registry_the_scripts_reach() {
    let root = repo();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // The opening: up to the first paragraph about the product itself.
    let opening = readme
        .split("aivault lets AI agents")
        .next()
        .unwrap()
        .to_string();
    let mut scripts: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.push(root.join("redact/fuzz/run.sh"));
    scripts.push(root.join("proto/fuzz/run.sh"));
    scripts.push(root.join(".ci/run"));
    let installers: &[(&str, &str)] = &[
        ("apt-get install", "Debian"),
        ("pip install", "PyPI"),
        ("npm install", "npm"),
        ("npm ci", "npm"),
        ("cargo install", "crates.io"),
    ];
    let mut seen = 0;
    for script in &scripts {
        let text = std::fs::read_to_string(script).unwrap();
        for (installer, registry) in installers {
            let used = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .any(|l| l.contains(installer));
            if used {
                seen += 1;
                assert!(
                    opening.contains(registry),
                    "{} runs `{installer}`, but the README's opening does not name {registry}",
                    script.display()
                );
            }
        }
    }
    // Not vacuous: the suite's scripts do install from registries.
    assert!(seen >= 4, "only {seen} installer uses found in {scripts:?}");
}
