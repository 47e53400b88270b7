//! Every entry of the deny-list executed under the real filter.
//!
//! Each call runs on a dedicated thread (seccomp and no_new_privs are
//! per-thread), so the test harness itself stays unfiltered. Arguments are
//! chosen so that the call fails harmlessly when *not* filtered (bad
//! descriptor, NULL pointer, invalid flags): the filter's answer is then
//! distinguishable from the kernel's. A first pass replaces EPERM with a
//! marker errno nothing else returns, proving that the *filter* matched; a
//! second pass with the production filter shows the errno a command sees.

use std::os::unix::process::ExitStatusExt;

use nix::errno::Errno;

use super::{build, When, CLONE_NEW_FLAGS, DENY, PERSONALITY_QUERY, TIOCLINUX};
use crate::sys::raw_syscall;

/// ENOTRECOVERABLE: no syscall below returns it on its own.
const MARKER: i32 = libc::ENOTRECOVERABLE;

const BAD_FD: u64 = u64::MAX; // -1
const BAD_PTR: u64 = 1; // unmapped

/// Harmless argument vectors that satisfy the entry's `When`.
fn trials(name: &str) -> Vec<[u64; 6]> {
    let one = |a: [u64; 6]| vec![a];
    match name {
        "ptrace" => one([u64::MAX, 0, 0, 0, 0, 0]),
        "process_vm_readv" | "process_vm_writev" => one([0, 0, 0, 0, 0, u64::MAX]),
        "process_madvise" => one([BAD_FD, 0, 0, 0, 0, 0]),
        "pidfd_getfd" => one([BAD_FD, BAD_FD, 0, 0, 0, 0]),
        "kcmp" => one([0, 0, u64::MAX, 0, 0, 0]),
        "bpf" => one([u64::MAX, 0, 0, 0, 0, 0]),
        "perf_event_open" => one([0, 0, u64::MAX, BAD_FD, 0, 0]),
        "userfaultfd" => one([u64::MAX, 0, 0, 0, 0, 0]),
        "io_uring_setup" => one([0, 0, 0, 0, 0, 0]),
        "io_uring_enter" | "io_uring_register" => one([BAD_FD, 0, 0, 0, 0, 0]),
        "keyctl" => one([9999, 0, 0, 0, 0, 0]),
        "add_key" | "request_key" => one([0, 0, 0, 0, 0, 0]),
        "lookup_dcookie" => one([0, 0, 0, 0, 0, 0]),
        "mount" | "umount2" | "pivot_root" | "chroot" | "fsopen" => one([0; 6]),
        "fsmount" | "fsconfig" | "open_tree" | "mount_setattr" | "setns" => {
            one([BAD_FD, 0, 0, 0, 0, 0])
        }
        "move_mount" => one([BAD_FD, 0, BAD_FD, 0, 0, 0]),
        "unshare" => one([u64::MAX, 0, 0, 0, 0, 0]),
        // CLONE_THREAD without CLONE_SIGHAND is EINVAL before anything is
        // created, so no process can result even if the filter were broken.
        "clone" => CLONE_NEW_FLAGS
            .iter()
            .map(|&bit| [bit | libc::CLONE_THREAD as u64, 0, 0, 0, 0, 0])
            .collect(),
        "clone3" => one([0; 6]),
        "name_to_handle_at" | "open_by_handle_at" => one([BAD_FD, 0, 0, 0, 0, 0]),
        "kexec_load" => one([0, 0, 0, u64::from(u32::MAX), 0, 0]),
        "kexec_file_load" => one([BAD_FD, BAD_FD, 0, 0, u64::MAX, 0]),
        "init_module" => one([0, 0, 0, 0, 0, 0]),
        "finit_module" => one([BAD_FD, 0, 0, 0, 0, 0]),
        "delete_module" => one([0, 0, 0, 0, 0, 0]),
        "acct" => one([BAD_PTR, 0, 0, 0, 0, 0]),
        "swapon" | "swapoff" => one([0; 6]),
        "reboot" => one([0; 6]), // wrong magic numbers: EINVAL
        "settimeofday" => one([BAD_PTR, BAD_PTR, 0, 0, 0, 0]),
        "clock_settime" => one([u64::MAX, 0, 0, 0, 0, 0]),
        "quotactl" => one([0; 6]),
        // The high half set too: the kernel truncates `cmd` to 32 bits.
        "ioctl(TIOCSTI)" => vec![
            [BAD_FD, libc::TIOCSTI, 0, 0, 0, 0],
            [BAD_FD, libc::TIOCSTI | (1 << 32), 0, 0, 0, 0],
        ],
        "ioctl(TIOCLINUX)" => vec![
            [BAD_FD, TIOCLINUX, 0, 0, 0, 0],
            [BAD_FD, TIOCLINUX | (7 << 32), 0, 0, 0, 0],
        ],
        // 2 (SUID_DUMP_ROOT) cannot be set by prctl: EINVAL unfiltered.
        "prctl(PR_SET_DUMPABLE)" => vec![
            [libc::PR_SET_DUMPABLE as u64, 2, 0, 0, 0, 0],
            [libc::PR_SET_DUMPABLE as u64 | (1 << 32), 2, 0, 0, 0, 0],
        ],
        // ADDR_NO_RANDOMIZE; per-thread persona, the thread ends right after.
        "personality" => one([0x0040000, 0, 0, 0, 0, 0]),
        other => panic!("deny-list entry {other} has no trial arguments"),
    }
}

/// Runs `f` on a fresh thread under the filter built with `override_eperm`.
fn under_filter<T: Send + 'static>(
    override_eperm: Option<u32>,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        nix::sys::prctl::set_no_new_privs().expect("no_new_privs");
        for program in build(override_eperm).expect("filter compiles") {
            seccompiler::apply_filter(&program).expect("filter installs");
        }
        f()
    })
    .join()
    .expect("filtered thread panicked")
}

fn run_all_trials() -> Vec<(&'static str, i32, Result<i64, Errno>)> {
    let mut results = Vec::new();
    for entry in DENY {
        for args in trials(entry.name) {
            results.push((entry.name, entry.errno, raw_syscall(entry.nr, args)));
        }
    }
    results
}

#[test]
fn every_entry_is_matched_by_the_filter() {
    let marker = u32::try_from(MARKER).expect("small");
    for (name, errno, result) in under_filter(Some(marker), run_all_trials) {
        let expected = if errno == libc::EPERM { MARKER } else { errno };
        assert_eq!(
            result,
            Err(Errno::from_raw(expected)),
            "{name}: not answered by the filter"
        );
    }
}

#[test]
fn every_entry_returns_its_errno() {
    for (name, errno, result) in under_filter(None, run_all_trials) {
        assert_eq!(result, Err(Errno::from_raw(errno)), "{name}");
    }
}

#[test]
fn trial_arguments_are_harmless_without_the_filter() {
    // The same calls unfiltered must not return the marker: this is what
    // makes the marker pass above meaningful.
    for (name, _, result) in std::thread::spawn(run_all_trials).join().expect("thread") {
        assert_ne!(result, Err(Errno::from_raw(MARKER)), "{name}");
        if name == "clone3" {
            assert_ne!(result, Err(Errno::ENOSYS), "clone3 exists on this kernel");
        }
    }
}

#[test]
fn every_entry_has_a_reason() {
    for entry in DENY {
        assert!(entry.why.len() > 10, "{} lacks a justification", entry.name);
        if let When::AnyBit { bits, .. } = entry.when {
            assert!(bits.iter().all(|b| b.count_ones() == 1));
        }
    }
}

#[test]
fn ordinary_calls_still_work() {
    let marker = u32::try_from(MARKER).expect("small");
    under_filter(Some(marker), || {
        // Plain syscalls.
        assert!(nix::unistd::getpid().as_raw() > 0);
        let mut buf = [0_u8; 8];
        let n = std::fs::File::open("/dev/zero")
            .and_then(|mut f| std::io::Read::read(&mut f, &mut buf))
            .expect("read /dev/zero");
        assert_eq!(n, 8);
        // personality query and the default persona stay allowed.
        assert!(raw_syscall(libc::SYS_personality, [PERSONALITY_QUERY, 0, 0, 0, 0, 0]).is_ok());
        // Other prctl options stay allowed.
        assert!(raw_syscall(
            libc::SYS_prctl,
            [libc::PR_GET_DUMPABLE as u64, 0, 0, 0, 0, 0]
        )
        .is_ok());
        // An unfiltered ioctl reaches the kernel (EBADF, not the marker).
        assert_eq!(
            raw_syscall(libc::SYS_ioctl, [BAD_FD, libc::FIONREAD, 0, 0, 0, 0]),
            Err(Errno::EBADF)
        );
        // Threads: glibc tries clone3, gets ENOSYS, falls back to clone.
        let t = std::thread::spawn(|| 7)
            .join()
            .expect("thread under filter");
        assert_eq!(t, 7);
        // Processes: fork/posix_spawn + exec.
        let status = std::process::Command::new("/usr/bin/true")
            .status()
            .expect("spawn /usr/bin/true");
        assert!(status.success(), "{:?}", status.signal());
    });
}
