//! Behaviour at scale: limits that hold without refusing more than they
//! must, and a daemon that keeps its footing when resources run out or a
//! predecessor was killed. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_tests::{Daemon, Options, User};

fn true_policy(user: &User) -> String {
    format!(
        r#"
[[rule]]
name = "true"
command = "/usr/bin/true"
users = ["{}"]
"#,
        user.name
    )
}

/// As many clients of one user as it may hold runs at once, each starting
/// its next run as soon as it has the last one's status: none is ever
/// refused, though earlier runs may still be being torn down.
#[test]
fn serial_runs_of_one_user_are_not_refused_while_earlier_ones_are_torn_down() {
    const MAX: usize = 2;
    const EACH: usize = 6;
    let alice = User::ensure("aivt-alice");
    let d = Daemon::start_new(Options {
        config: format!("[runs]\nmax_runs_per_user = {MAX}\n"),
        policy: true_policy(&alice),
        ..Options::default()
    });
    let refusals: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..MAX)
            .map(|_| {
                s.spawn(|| {
                    let mut refused = Vec::new();
                    for _ in 0..EACH {
                        let out = d.vaultctl(&alice, &["run", "--", "true"], b"");
                        if !out.status.success() {
                            refused.push(String::from_utf8_lossy(&out.stderr).into_owned());
                        }
                    }
                    refused
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert!(refusals.is_empty(), "serial runs refused: {refusals:?}");
    // Every teardown still completes: the daemon comes to rest and no run
    // directory is left.
    d.resting_fd_count();
    assert!(d.run_dirs().is_empty(), "{:?}", d.run_dirs());
}
