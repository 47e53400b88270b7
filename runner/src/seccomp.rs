//! Step 6: the seccomp deny-list, as data.
//!
//! The default action is *allow*: the command is an arbitrary, allowlisted
//! program and Landlock, the uid boundary and rlimits do the containment. The
//! filter removes kernel interfaces that no such program needs and that
//! either cross the process boundary (reading another process's memory or
//! descriptors), change the system, build new namespaces in which the other
//! rules no longer hold, or are favourite kernel-exploit primitives. Most of
//! them already need a capability the run uid lacks; denying them anyway
//! shrinks the kernel surface reachable by a compromised command.
//!
//! Every entry of [`DENY`] names its reason. Each entry is exercised by a
//! test under the real filter (see the tests at the bottom).

use std::collections::BTreeMap;

use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// When an entry matches its system call.
#[derive(Debug, Clone, Copy)]
pub enum When {
    /// Every invocation.
    Always,
    /// Argument `arg` has any of `bits` set.
    AnyBit {
        /// Argument index.
        arg: u8,
        /// Single-bit masks.
        bits: &'static [u64],
    },
    /// The low 32 bits of argument `arg` equal `value` (the kernel truncates
    /// `int`/`unsigned int` arguments, so the high half must be ignored or a
    /// caller could set it to slip past an exact 64-bit comparison).
    Eq32 {
        /// Argument index.
        arg: u8,
        /// Value compared with the low 32 bits.
        value: u64,
    },
    /// The low 32 bits of argument `arg` equal none of `values`.
    NotIn32 {
        /// Argument index.
        arg: u8,
        /// Permitted values.
        values: &'static [u64],
    },
}

/// One denied system call (or argument pattern) and why.
#[derive(Debug, Clone, Copy)]
pub struct Deny {
    /// Syscall name, for humans and tests.
    pub name: &'static str,
    /// Native syscall number.
    pub nr: libc::c_long,
    /// Which invocations are denied.
    pub when: When,
    /// Errno returned instead of running the call.
    pub errno: i32,
    /// Justification.
    pub why: &'static str,
}

const EPERM: i32 = libc::EPERM;

/// `TIOCLINUX` (linux/tiocl.h): not exported by the libc crate.
const TIOCLINUX: u64 = 0x541C;
/// personality(2) query value, and PER_LINUX (the default persona).
const PERSONALITY_QUERY: u64 = 0xffff_ffff;
const PER_LINUX: u64 = 0;

/// Namespace-creating clone flags. CLONE_NEWTIME (0x80) overlaps the exit
/// signal byte of clone(2) and can only be requested through clone3/unshare,
/// both denied outright.
const CLONE_NEW_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

const fn deny(name: &'static str, nr: libc::c_long, why: &'static str) -> Deny {
    Deny {
        name,
        nr,
        when: When::Always,
        errno: EPERM,
        why,
    }
}

/// The deny-list. Order is irrelevant to the filter; it groups by reason.
pub const DENY: &[Deny] = &[
    // --- Reaching into other processes ---
    deny("ptrace", libc::SYS_ptrace, "attaching to or reading another process (including the runner or a sibling of the same uid) exposes its memory and environment"),
    deny("process_vm_readv", libc::SYS_process_vm_readv, "reads another process's memory directly"),
    deny("process_vm_writev", libc::SYS_process_vm_writev, "writes another process's memory directly"),
    deny("process_madvise", libc::SYS_process_madvise, "operates on another process's address space; same class as process_vm_*"),
    deny("pidfd_getfd", libc::SYS_pidfd_getfd, "steals a descriptor from another process"),
    deny("kcmp", libc::SYS_kcmp, "compares kernel objects of other processes; an information leak used in exploits"),
    // pidfd_open is deliberately NOT denied: it grants nothing by itself
    // (signalling still needs kill permission, pidfd_getfd is denied) and
    // modern runtimes (Go's os/exec, systemd tools) use it to wait on children.
    // --- Kernel attack surface with no use in an allowlisted command ---
    deny("bpf", libc::SYS_bpf, "eBPF verifier and maps are a large, frequently exploited surface"),
    deny("perf_event_open", libc::SYS_perf_event_open, "perf events leak kernel addresses and have a long CVE history"),
    deny("userfaultfd", libc::SYS_userfaultfd, "lets an attacker stall kernel copies at will, turning races into reliable exploits"),
    deny("io_uring_setup", libc::SYS_io_uring_setup, "io_uring operations bypass seccomp filtering and have a long CVE history"),
    deny("io_uring_enter", libc::SYS_io_uring_enter, "io_uring: see io_uring_setup"),
    deny("io_uring_register", libc::SYS_io_uring_register, "io_uring: see io_uring_setup"),
    deny("keyctl", libc::SYS_keyctl, "kernel keyrings are not namespaced per uid (session keyrings can be inherited) and could hold other credentials"),
    deny("add_key", libc::SYS_add_key, "kernel keyrings: see keyctl"),
    deny("request_key", libc::SYS_request_key, "kernel keyrings: see keyctl; can also upcall to userspace helpers"),
    deny("lookup_dcookie", libc::SYS_lookup_dcookie, "profiling interface (removed in 6.10); leaks paths"),
    // --- Mounts and namespaces: would escape the Landlock view of the fs ---
    deny("mount", libc::SYS_mount, "changes the filesystem view"),
    deny("umount2", libc::SYS_umount2, "changes the filesystem view"),
    deny("pivot_root", libc::SYS_pivot_root, "changes the root filesystem"),
    deny("chroot", libc::SYS_chroot, "changes the root directory; classic confused-deputy setup for setuid binaries"),
    deny("fsopen", libc::SYS_fsopen, "new mount API: see mount"),
    deny("fsmount", libc::SYS_fsmount, "new mount API: see mount"),
    deny("fsconfig", libc::SYS_fsconfig, "new mount API: see mount"),
    deny("move_mount", libc::SYS_move_mount, "new mount API: see mount"),
    deny("open_tree", libc::SYS_open_tree, "new mount API: clones mount trees"),
    deny("mount_setattr", libc::SYS_mount_setattr, "new mount API: changes mount flags"),
    deny("unshare", libc::SYS_unshare, "new namespaces (a user namespace grants capabilities inside it) expose kernel code otherwise unreachable"),
    deny("setns", libc::SYS_setns, "joins another namespace"),
    Deny {
        name: "clone",
        nr: libc::SYS_clone,
        when: When::AnyBit { arg: 0, bits: CLONE_NEW_FLAGS },
        errno: EPERM,
        why: "clone with any CLONE_NEW* flag creates namespaces: see unshare; plain fork/thread creation stays allowed",
    },
    Deny {
        name: "clone3",
        nr: libc::SYS_clone3,
        when: When::Always,
        errno: libc::ENOSYS,
        why: "its flags live in memory a filter cannot inspect; ENOSYS makes libc fall back to clone, whose flags we check",
    },
    deny("name_to_handle_at", libc::SYS_name_to_handle_at, "file handles address files by inode, bypassing path-based rules"),
    deny("open_by_handle_at", libc::SYS_open_by_handle_at, "opens files by handle, bypassing path-based rules (the 'shocker' container escape)"),
    // --- Whole-system changes (all need capabilities; defence in depth) ---
    deny("kexec_load", libc::SYS_kexec_load, "replaces the running kernel"),
    deny("kexec_file_load", libc::SYS_kexec_file_load, "replaces the running kernel"),
    deny("init_module", libc::SYS_init_module, "loads kernel code"),
    deny("finit_module", libc::SYS_finit_module, "loads kernel code"),
    deny("delete_module", libc::SYS_delete_module, "unloads kernel code"),
    deny("acct", libc::SYS_acct, "switches process accounting (a file written by the kernel)"),
    deny("swapon", libc::SYS_swapon, "changes swap; memory of other processes could reach an attacker-chosen file"),
    deny("swapoff", libc::SYS_swapoff, "changes swap"),
    deny("reboot", libc::SYS_reboot, "reboots or halts the machine"),
    deny("settimeofday", libc::SYS_settimeofday, "changes the system clock (TLS validity, audit timestamps)"),
    deny("clock_settime", libc::SYS_clock_settime, "changes a system clock: see settimeofday"),
    deny("quotactl", libc::SYS_quotactl, "changes disk quotas"),
    // --- Terminals and personas ---
    Deny {
        name: "ioctl(TIOCSTI)",
        nr: libc::SYS_ioctl,
        when: When::Eq32 { arg: 1, value: libc::TIOCSTI },
        errno: EPERM,
        why: "pushes input into a terminal: commands typed into the caller's shell if a tty leaks through",
    },
    Deny {
        name: "ioctl(TIOCLINUX)",
        nr: libc::SYS_ioctl,
        when: When::Eq32 { arg: 1, value: TIOCLINUX },
        errno: EPERM,
        why: "console selection paste: same terminal injection as TIOCSTI",
    },
    Deny {
        name: "prctl(PR_SET_DUMPABLE)",
        nr: libc::SYS_prctl,
        when: When::Eq32 { arg: 0, value: libc::PR_SET_DUMPABLE as u64 },
        errno: EPERM,
        why: "a non-dumpable process's /proc entry turns root's: it would hide from the teardown's search for survivors of the run's uid",
    },
    Deny {
        name: "personality",
        nr: libc::SYS_personality,
        when: When::NotIn32 { arg: 0, values: &[PER_LINUX, PERSONALITY_QUERY] },
        errno: EPERM,
        why: "non-default personas disable ASLR (ADDR_NO_RANDOMIZE) or make data executable (READ_IMPLIES_EXEC) for the exec'd program",
    },
];

/// Compiling or installing failed.
#[derive(Debug)]
pub enum SeccompError {
    /// Compilation of the filter.
    Build(BackendError),
    /// `seccomp(2)` refused the program.
    Apply(seccompiler::Error),
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

/// The rules for one entry; an empty vector means "every invocation".
fn rules_for(when: When) -> Result<Vec<SeccompRule>, BackendError> {
    match when {
        When::Always => Ok(Vec::new()),
        When::AnyBit { arg, bits } => bits
            .iter()
            .map(|&bit| SeccompRule::new(vec![cond(arg, SeccompCmpOp::MaskedEq(bit), bit)?]))
            .collect(),
        When::Eq32 { arg, value } => Ok(vec![SeccompRule::new(vec![cond(
            arg,
            SeccompCmpOp::Eq,
            value,
        )?])?]),
        When::NotIn32 { arg, values } => {
            let conditions = values
                .iter()
                .map(|&v| cond(arg, SeccompCmpOp::Ne, v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![SeccompRule::new(conditions)?])
        }
    }
}

/// Compiles [`DENY`] into one program per distinct errno (seccompiler has one
/// match action per filter; stacked filters combine, the strictest wins).
/// `override_eperm` replaces EPERM, so tests can tell the filter's answer
/// from the kernel's own.
pub(crate) fn build(override_eperm: Option<u32>) -> Result<Vec<BpfProgram>, BackendError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let mut by_errno: BTreeMap<i32, BTreeMap<i64, Option<Vec<SeccompRule>>>> = BTreeMap::new();
    for entry in DENY {
        let rules = rules_for(entry.when)?;
        let slot = by_errno
            .entry(entry.errno)
            .or_default()
            .entry(entry.nr)
            .or_insert_with(|| Some(Vec::new()));
        match (slot.as_mut(), rules.is_empty()) {
            // An unconditional entry swallows any conditional one.
            (_, true) => *slot = None,
            (Some(existing), false) => existing.extend(rules),
            (None, false) => {}
        }
    }
    let mut programs = Vec::new();
    for (errno, syscalls) in by_errno {
        let errno = u32::try_from(errno).unwrap_or(1);
        let action = match override_eperm {
            Some(marker) if errno == EPERM as u32 => marker,
            _ => errno,
        };
        let rules = syscalls
            .into_iter()
            .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
            .collect();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(action),
            arch,
        )?;
        programs.push(BpfProgram::try_from(filter)?);
    }
    if let Some(guard) = x32_guard() {
        programs.push(guard);
    }
    Ok(programs)
}

/// On x86_64, syscalls with the x32 bit set carry the same audit arch as
/// native ones but other numbers, so a number-based deny-list would not see
/// them. Where the kernel has x32 enabled this small program refuses them all
/// with ENOSYS (what a kernel without x32 answers).
fn x32_guard() -> Option<BpfProgram> {
    use seccompiler::sock_filter;
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const ARCH_OFFSET: u32 = 4;
    const NR_OFFSET: u32 = 0;
    let ins = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
        code: u16::try_from(code).unwrap_or(u16::MAX),
        jt,
        jf,
        k,
    };
    if std::env::consts::ARCH != "x86_64" {
        return None;
    }
    let errno = libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA);
    Some(vec![
        ins(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            0,
            0,
            ARCH_OFFSET,
        ),
        ins(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            3,
            AUDIT_ARCH_X86_64,
        ),
        ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, NR_OFFSET),
        ins(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            0,
            1,
            X32_SYSCALL_BIT,
        ),
        ins(libc::BPF_RET | libc::BPF_K, 0, 0, errno),
        ins(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ])
}

/// Installs the filters on the calling thread (inherited across exec and by
/// children). Requires `no_new_privs` (step 4).
pub(crate) fn apply() -> Result<(), SeccompError> {
    let programs = build(None).map_err(SeccompError::Build)?;
    for program in &programs {
        seccompiler::apply_filter(program).map_err(SeccompError::Apply)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
