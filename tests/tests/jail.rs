//! The jail host boundary (issue 12, acceptance 1): while runs are active
//! and while they are torn down, no process running as a run uid has the
//! daemon's memory mapped, and the key-encryption key's bytes appear in
//! none of them — with `fs.suid_dumpable = 1`, the setting under which a
//! process that changed uid stays readable by that uid. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aivault_tests::{ok, run_range_processes, set_secret, Daemon, Options, User};

const SUID_DUMPABLE: &str = "/proc/sys/fs/suid_dumpable";

/// Sets `fs.suid_dumpable` for the test's duration; the previous value
/// comes back on drop, whatever the test's outcome.
struct Dumpable {
    previous: String,
}

impl Dumpable {
    fn set(value: &str) -> Dumpable {
        let previous = std::fs::read_to_string(SUID_DUMPABLE).unwrap();
        std::fs::write(SUID_DUMPABLE, value).unwrap();
        assert_eq!(
            std::fs::read_to_string(SUID_DUMPABLE).unwrap().trim(),
            value
        );
        Dumpable { previous }
    }
}

impl Drop for Dumpable {
    fn drop(&mut self) {
        let _ = std::fs::write(SUID_DUMPABLE, self.previous.trim());
    }
}

/// Whether `needle` occurs in any readable mapping of process `pid`
/// (`/proc/<pid>/maps` then `/proc/<pid>/mem`, which root may read).
/// `None` if the process went away before it could be read at all.
fn memory_contains(pid: i32, needle: &[u8]) -> Option<bool> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(start, 16), u64::from_str_radix(end, 16))
        else {
            continue;
        };
        buf.resize((end - start) as usize, 0);
        if mem.seek(SeekFrom::Start(start)).is_err() {
            continue;
        }
        // A region may be cut short by the process exiting or unmapping.
        let mut got = 0;
        while got < buf.len() {
            match mem.read(&mut buf[got..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        if buf[..got].windows(needle.len()).any(|w| w == needle) {
            return Some(true);
        }
    }
    Some(false)
}

/// The (device, inode) pairs of the files process `pid` has mapped.
fn mapped_files(pid: i32) -> Option<HashSet<(String, u64)>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    Some(
        maps.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let inode = f.get(4)?.parse::<u64>().ok().filter(|i| *i != 0)?;
                Some((f.get(3)?.to_string(), inode))
            })
            .collect(),
    )
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The `(device, inode)` of a file as `/proc/<pid>/maps` prints it
/// (`major:minor` in hex, two digits at least).
fn maps_key(path: &std::path::Path) -> (String, u64) {
    let m = std::fs::metadata(path).unwrap();
    let dev = m.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    (format!("{major:02x}:{minor:02x}"), m.ino())
}

fn proc_status(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
}

/// The value of one `/proc/<pid>/status` line.
fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {name} in /proc/<pid>/status"))
}

/// A capability set of `/proc/<pid>/status` as bits.
fn cap_bits(status: &str, set: &str) -> u64 {
    u64::from_str_radix(field(status, set), 16).unwrap()
}

#[derive(Debug, Default)]
struct Findings {
    inspected: HashSet<i32>,
    key_found: Vec<i32>,
    daemon_mapped: Vec<i32>,
    daemon_children: Vec<i32>,
}

#[test]
fn no_run_process_shares_or_holds_the_daemons_memory_even_when_dumpable() {
    aivault_tests::require_root();
    let _dumpable = Dumpable::set("1");
    let alice = User::ensure("aivault-test-alice");
    let mut d = Daemon::init(Options {
        config: "[limits]\nmax_connections_per_uid = 64\n[runs]\nmax_runs_per_user = 32\n".into(),
        // As installed: only the unit's capabilities, and no_new_privs.
        unit_capabilities: true,
        ..Options::default()
    });
    d.write_policy(&format!(
        r#"
[[rule]]
name = "sh"
command = "/usr/bin/sh"
users = ["{a}"]
allow_interpreter = true
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]
[rule.sandbox]
timeout = "10s"
"#,
        a = alice.name
    ));
    // The daemon used to refuse this setting; it must start under it now.
    d.start();
    set_secret(&d, &alice, "TOKEN", &aivault_tests::token(40));
    let kek = std::fs::read(d.key_file()).unwrap();
    assert_eq!(kek.len(), 32, "the test key file holds a raw 32-byte key");
    let daemon_pid = d.pid().unwrap() as i32;
    // The key holder cannot change uid, signal or trace another uid's
    // process, or regain any of that: CAP_KILL (5), CAP_SETGID (6),
    // CAP_SETUID (7), CAP_SETPCAP (8) and CAP_SYS_PTRACE (19) are gone from
    // its effective and permitted sets, and no_new_privs is set.
    const JAIL_CAPS: u64 = 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 19;
    let daemon_status = proc_status(daemon_pid);
    for set in ["CapEff:", "CapPrm:"] {
        assert_eq!(
            cap_bits(&daemon_status, set) & JAIL_CAPS,
            0,
            "the daemon keeps a capability only the jail host needs in {set}"
        );
    }
    assert_eq!(
        field(&daemon_status, "NoNewPrivs:"),
        "1",
        "the daemon can gain privileges by executing a program"
    );
    // Positive control on the target: the key is where the scanner must
    // be able to find it, in the daemon's memory.
    assert_eq!(
        memory_contains(daemon_pid, &kek),
        Some(true),
        "the scanner does not find the KEK even in the daemon"
    );
    // Its jail hosts (at least two, so a start never waits behind a
    // teardown), children of its own, named so.
    let hosts: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| ppid(*pid) == Some(daemon_pid))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "aivault-jail")
        })
        .collect();
    assert!(
        hosts.len() >= 2,
        "the daemon has at least two jail host children: {hosts:?}"
    );
    // They were started before the key was loaded and never see it; they
    // hold what they need to start and end run processes (CAP_SETUID,
    // CAP_SETGID, and CAP_KILL to end a child a run process stopped).
    let hosts_clean = |when: &str| {
        for host in &hosts {
            assert_eq!(
                memory_contains(*host, &kek),
                Some(false),
                "jail host {host} holds the key {when}, or its memory cannot be read"
            );
        }
    };
    hosts_clean("before any run");
    for host in &hosts {
        let needed = 1u64 << 5 | 1 << 6 | 1 << 7;
        assert_eq!(
            cap_bits(&proc_status(*host), "CapEff:") & needed,
            needed,
            "jail host {host} lacks CAP_KILL, CAP_SETGID or CAP_SETUID"
        );
    }
    let daemon_exe = maps_key(&aivault_tests::bin("aivaultd"));

    // The scanner can find the key where it is: in this process's memory.
    let control = kek.clone();
    assert_eq!(
        memory_contains(std::process::id() as i32, &control),
        Some(true),
        "the scanner cannot find bytes known to be in memory"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let uids = d.run_uids.clone();
    let scanner = {
        let (stop, kek, daemon_exe) = (stop.clone(), kek.clone(), daemon_exe.clone());
        std::thread::spawn(move || {
            let mut f = Findings::default();
            while !stop.load(Ordering::Acquire) {
                for (pid, uid) in run_range_processes() {
                    if !uids.contains(&uid) {
                        continue;
                    }
                    if ppid(pid) == Some(daemon_pid) {
                        f.daemon_children.push(pid);
                    }
                    if mapped_files(pid).is_some_and(|m| m.contains(&daemon_exe)) {
                        f.daemon_mapped.push(pid);
                    }
                    match memory_contains(pid, &kek) {
                        Some(true) => f.key_found.push(pid),
                        Some(false) => {
                            f.inspected.insert(pid);
                        }
                        None => {}
                    }
                }
            }
            f
        })
    };

    // Runs that live a while (scanned while active) and runs that end at
    // once (scanned while torn down), several at a time.
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (socket, alice) = (d.socket(), alice.clone());
            std::thread::spawn(move || {
                for i in 0..8 {
                    let script = if (w + i) % 2 == 0 {
                        "sleep 0.3; echo done"
                    } else {
                        "echo done"
                    };
                    let out = aivault_tests::vaultctl_at(
                        &socket,
                        &alice,
                        &["run", "--", "sh", "-c", script],
                        b"",
                    );
                    assert!(ok(&out).contains("done"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Release);
    let found = scanner.join().unwrap();
    // The jail hosts started and ended every process of the runs: still
    // without the key.
    hosts_clean("after the runs");
    d.stop();

    assert!(
        found.key_found.is_empty(),
        "the key's bytes are in run processes {:?}",
        found.key_found
    );
    assert!(
        found.daemon_mapped.is_empty(),
        "run processes {:?} map the daemon's executable",
        found.daemon_mapped
    );
    assert!(
        found.daemon_children.is_empty(),
        "run processes {:?} are the daemon's own children",
        found.daemon_children
    );
    // Not vacuous: runners and commands of the runs were read in full.
    assert!(
        found.inspected.len() >= 8,
        "only {} run processes could be inspected",
        found.inspected.len()
    );
    eprintln!(
        "inspected {} run processes with fs.suid_dumpable=1; none held the key",
        found.inspected.len()
    );
}
