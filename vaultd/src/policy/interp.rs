//! Commands that defeat the point of an allowlist.
//!
//! A rule hands secrets to one command; the command must not be a way to run
//! *another*, caller-chosen program, or to print its own environment. Shells,
//! interpreters, environment printers and command launchers do exactly that,
//! so a rule naming one is refused at load time unless it says
//! `allow_interpreter = true` — and even then every policy check warns.
//! Matching is on the file name of the rule's command and of the file it
//! resolves to (so `/usr/bin/awk -> /etc/alternatives/awk -> mawk` is caught).

/// How an entry matches a file name.
#[derive(Debug, Clone, Copy)]
enum Name {
    Exact(&'static str),
    /// The name itself or the name followed by anything (`python3.12`).
    Family(&'static str),
}

/// Why each name is refused by default. Shown in warnings and errors.
const LIST: &[(Name, &str)] = {
    use Name::{Exact as E, Family as F};
    const SHELL: &str =
        "a shell: it runs any command it is given and can print its own environment";
    const INTERP: &str =
        "an interpreter: it runs caller-supplied code, which can print its own environment";
    const PRINTER: &str = "it prints its own environment";
    const LAUNCHER: &str =
        "a command launcher: it runs another program named in its arguments, with the secrets";
    const DEBUGGER: &str =
        "a tracer/debugger: it launches a program and can show its memory and environment";
    &[
        (E("sh"), SHELL),
        (E("bash"), SHELL),
        (E("rbash"), SHELL),
        (E("dash"), SHELL),
        (E("ash"), SHELL),
        (E("zsh"), SHELL),
        (F("ksh"), SHELL),
        (E("mksh"), SHELL),
        (E("yash"), SHELL),
        (E("posh"), SHELL),
        (E("fish"), SHELL),
        (E("csh"), SHELL),
        (E("tcsh"), SHELL),
        (E("rc"), SHELL),
        (E("elvish"), SHELL),
        (E("nu"), SHELL),
        (E("xonsh"), SHELL),
        (E("pwsh"), SHELL),
        (
            E("busybox"),
            "a multi-call binary that contains a shell, env and awk",
        ),
        (
            E("toybox"),
            "a multi-call binary that contains a shell and env",
        ),
        (F("python"), INTERP),
        (F("pypy"), INTERP),
        (F("perl"), INTERP),
        (F("ruby"), INTERP),
        (E("irb"), INTERP),
        (E("node"), INTERP),
        (E("nodejs"), INTERP),
        (E("deno"), INTERP),
        (E("bun"), INTERP),
        (F("php"), INTERP),
        (F("lua"), INTERP),
        (F("tclsh"), INTERP),
        (F("wish"), INTERP),
        (E("expect"), INTERP),
        (F("guile"), INTERP),
        (E("R"), INTERP),
        (E("Rscript"), INTERP),
        (E("julia"), INTERP),
        (E("jshell"), INTERP),
        (
            E("awk"),
            "awk programs read every variable through ENVIRON and can run commands with system()",
        ),
        (
            E("gawk"),
            "awk programs read every variable through ENVIRON and can run commands with system()",
        ),
        (
            E("mawk"),
            "awk programs read every variable through ENVIRON and can run commands with system()",
        ),
        (
            E("nawk"),
            "awk programs read every variable through ENVIRON and can run commands with system()",
        ),
        (
            E("sed"),
            "GNU sed's e command and s///e flag run shell commands",
        ),
        (
            E("env"),
            "it prints its own environment and launches any program",
        ),
        (E("printenv"), PRINTER),
        (
            E("envsubst"),
            "it substitutes any variable's value into its output",
        ),
        (
            E("ps"),
            "ps e shows the environment of processes of the same uid, including itself",
        ),
        (
            E("make"),
            "it runs shell recipes from a makefile the caller can name",
        ),
        (E("xargs"), LAUNCHER),
        (E("find"), "-exec runs any program; a command launcher"),
        (E("nice"), LAUNCHER),
        (E("nohup"), LAUNCHER),
        (E("timeout"), LAUNCHER),
        (E("setsid"), LAUNCHER),
        (E("stdbuf"), LAUNCHER),
        (E("ionice"), LAUNCHER),
        (E("chrt"), LAUNCHER),
        (E("taskset"), LAUNCHER),
        (E("flock"), LAUNCHER),
        (E("time"), LAUNCHER),
        (E("watch"), LAUNCHER),
        (E("script"), LAUNCHER),
        (E("unbuffer"), LAUNCHER),
        (E("parallel"), LAUNCHER),
        (E("run-parts"), LAUNCHER),
        (E("start-stop-daemon"), LAUNCHER),
        (E("systemd-run"), LAUNCHER),
        (E("at"), LAUNCHER),
        (E("batch"), LAUNCHER),
        (E("tmux"), LAUNCHER),
        (E("screen"), LAUNCHER),
        (E("chroot"), LAUNCHER),
        (E("unshare"), LAUNCHER),
        (E("nsenter"), LAUNCHER),
        (E("setpriv"), LAUNCHER),
        (E("bwrap"), LAUNCHER),
        (E("firejail"), LAUNCHER),
        (E("fakeroot"), LAUNCHER),
        (E("eatmydata"), LAUNCHER),
        (E("torsocks"), LAUNCHER),
        (F("proxychains"), LAUNCHER),
        (
            E("sudo"),
            "a privilege launcher: it runs another program, possibly as another user",
        ),
        (
            E("su"),
            "a privilege launcher: it runs a shell as another user",
        ),
        (
            E("doas"),
            "a privilege launcher: it runs another program as another user",
        ),
        (
            E("pkexec"),
            "a privilege launcher: it runs another program as another user",
        ),
        (
            E("runuser"),
            "a privilege launcher: it runs a shell or program as another user",
        ),
        (E("strace"), DEBUGGER),
        (E("ltrace"), DEBUGGER),
        (E("gdb"), DEBUGGER),
        (E("lldb"), DEBUGGER),
        (E("valgrind"), DEBUGGER),
        (E("rr"), DEBUGGER),
        (E("perf"), DEBUGGER),
        (
            E("ldd"),
            "it runs the dynamic loader on the file it is given",
        ),
        (
            F("ld-linux"),
            "the dynamic loader runs any program given as its argument",
        ),
        (
            E("ld.so"),
            "the dynamic loader runs any program given as its argument",
        ),
        (E("vi"), "an editor: it runs shell commands (:!)"),
        (F("vim"), "an editor: it runs shell commands (:!)"),
        (E("nvim"), "an editor: it runs shell commands (:!)"),
        (E("ex"), "an editor: it runs shell commands (:!)"),
        (E("emacs"), "an editor: it runs shell commands and Lisp"),
        (E("less"), "a pager: it runs shell commands (!)"),
        (E("more"), "a pager: it runs shell commands (!)"),
        (E("man"), "it runs a pager, which runs shell commands"),
    ]
};

/// If the file name `name` is a shell, interpreter, environment printer or
/// launcher, the reason it is dangerous.
pub fn danger(name: &str) -> Option<&'static str> {
    LIST.iter().find_map(|(n, why)| {
        let hit = match n {
            Name::Exact(e) => name == *e,
            Name::Family(f) => name.starts_with(f),
        };
        hit.then_some(*why)
    })
}

#[cfg(test)]
mod tests {
    use super::danger;

    #[test]
    fn listed_names_are_caught() {
        for name in [
            "sh",
            "bash",
            "dash",
            "zsh",
            "ksh",
            "ksh93",
            "fish",
            "csh",
            "python",
            "python3",
            "python3.12",
            "perl",
            "perl5.36",
            "ruby3.1",
            "node",
            "nodejs",
            "deno",
            "bun",
            "php8.2",
            "lua5.4",
            "tclsh8.6",
            "env",
            "printenv",
            "busybox",
            "awk",
            "gawk",
            "mawk",
            "xargs",
            "find",
            "nice",
            "nohup",
            "timeout",
            "sudo",
            "su",
            "strace",
            "gdb",
            "ltrace",
            "ld-linux-x86-64.so.2",
        ] {
            assert!(danger(name).is_some(), "{name} not caught");
        }
    }

    #[test]
    fn ordinary_commands_pass() {
        for name in [
            "gh", "aws", "kubectl", "curl", "git", "true", "shred", "bashful", "environ",
        ] {
            assert_eq!(danger(name), None, "{name} caught");
        }
    }
}
