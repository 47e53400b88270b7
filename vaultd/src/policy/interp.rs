//! Commands that defeat the point of an allowlist.
//!
//! A rule hands secrets to one command; the command must not be a way to run
//! *another*, caller-chosen program, or to print its own environment. Shells,
//! interpreters and REPL-capable tools, compilers, tools with shell escapes,
//! environment printers and program launchers do exactly that, so a rule
//! naming one is refused at load time unless it says
//! `allow_interpreter = true` — and even then every policy check warns.
//! Matching is on the file name of the rule's command, of every symbolic link
//! on the way and of the file it finally resolves to (so
//! `/usr/bin/awk -> /etc/alternatives/awk -> mawk` is caught, and so is any
//! name that leads to the multi-call `busybox`), and again, at run time, on
//! the file that was opened.
//!
//! Tools that are only dangerous with certain options (`git -c`,
//! `tar --to-command`, `curl -K`) are not listed here: they are commonly
//! needed, so they are allowed and `policy/options.rs` warns when a rule's
//! argument patterns let those options through.

/// How an entry matches a file name.
#[derive(Debug, Clone, Copy)]
pub(super) enum Name {
    Exact(&'static str),
    /// The name itself or the name followed by anything (`python3.12`).
    Family(&'static str),
    /// A toolchain program: the name, optionally after a target triplet and
    /// before a numeric version: `gcc`, `gcc-12`, `x86_64-linux-gnu-gcc-12`,
    /// `arm-none-eabi-gcc`. Not a substring match: `gccgo`, `gcc-ar` or
    /// `libgcc` are not `gcc` (the GCC drivers that matter are listed by
    /// their own names).
    Tool(&'static str),
}

impl Name {
    pub(super) fn matches(&self, name: &str) -> bool {
        match self {
            Name::Exact(e) => name == *e,
            Name::Family(f) => name.starts_with(f),
            Name::Tool(t) => {
                let unversioned = strip_version(name);
                [name, unversioned]
                    .iter()
                    .any(|n| *n == *t || strip_triplet(n, t))
            }
        }
    }
}

/// `gcc-12` -> `gcc`, `clang-15.0` -> `clang`; anything else unchanged.
fn strip_version(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, v))
            if v.starts_with(|c: char| c.is_ascii_digit())
                && v.chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            base
        }
        _ => name,
    }
}

/// Whether `name` is `<triplet>-<tool>`, the triplet being one or more
/// `-`-separated parts of letters, digits, `_` and `.` (`x86_64-linux-gnu`).
fn strip_triplet(name: &str, tool: &str) -> bool {
    name.strip_suffix(tool)
        .and_then(|p| p.strip_suffix('-'))
        .is_some_and(|triplet| {
            triplet.split('-').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            })
        })
}

/// Why each name is refused by default, grouped by what makes it dangerous.
/// Shown in load errors and in the warnings of every policy check.
const LIST: &[(Name, &str)] = {
    use Name::{Exact as E, Family as F, Tool as T};
    const SHELL: &str =
        "a shell: it runs any command it is given and can print its own environment";
    const INTERP: &str =
        "an interpreter: it runs caller-supplied code, which can print its own environment";
    const AWK: &str =
        "an interpreter: awk programs read every variable through ENVIRON and run commands with system()";
    const COMPILER: &str =
        "a compiler or linker: -wrapper, plugins and linker options run other programs, and it builds programs that print the environment";
    const BUILD: &str =
        "a build tool: it runs the commands of a build file the caller can name (even /dev/stdin)";
    const PRINTER: &str = "an environment printer: it prints its own environment";
    const LAUNCHER: &str =
        "a launcher: it runs another program named in its arguments, with the secrets";
    const PRIV: &str =
        "a privilege launcher: it runs another program or a shell, possibly as another user";
    const DEBUGGER: &str =
        "a tracer/debugger: it launches a program and can show its memory and environment";
    const LOADER: &str = "the dynamic loader: it runs any program given as its argument";
    const EDITOR: &str = "an editor with a shell escape: it runs shell commands (:! or similar)";
    const PAGER: &str = "a pager with a shell escape: it runs shell commands (!)";
    &[
        // Shells, and multi-call binaries that contain one.
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
            "a multi-call binary: it contains a shell, env, awk and more, and any name linked to it runs them",
        ),
        (
            E("toybox"),
            "a multi-call binary: it contains a shell and env, and any name linked to it runs them",
        ),
        // Interpreters and REPL-capable tools.
        (F("python"), INTERP),
        (F("pypy"), INTERP),
        (F("perl"), INTERP),
        (F("ruby"), INTERP),
        (E("irb"), INTERP),
        (E("erb"), "an interpreter: ERB templates run Ruby code"),
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
        (E("java"), INTERP),
        (E("jshell"), INTERP),
        (E("octave"), INTERP),
        (E("gnuplot"), "an interpreter: its scripts run shell commands (system, !)"),
        (E("awk"), AWK),
        (E("gawk"), AWK),
        (E("mawk"), AWK),
        (E("nawk"), AWK),
        (E("sed"), "an interpreter: GNU sed's e command and s///e flag run shell commands"),
        (E("m4"), "an interpreter: syscmd and esyscmd run shell commands"),
        (E("dc"), "an interpreter: its ! command runs a shell command"),
        (
            E("jq"),
            "an interpreter: `jq -n env` and $ENV print the environment, and explode turns it into numbers no redactor knows",
        ),
        (E("gojq"), "an interpreter: env and $ENV print the environment"),
        (E("jaq"), "an interpreter: env and $ENV print the environment"),
        (E("yq"), "an interpreter: env() and strenv() print any variable"),
        (
            F("sqlite3"),
            "a REPL: its .shell and .system commands run shell commands, and extensions load code",
        ),
        (E("duckdb"), "a REPL: its .shell and .system commands run shell commands"),
        (E("psql"), "a REPL: its \\! command runs shell commands"),
        (E("mysql"), "a REPL: its system (\\!) command runs shell commands"),
        (E("mariadb"), "a REPL: its system (\\!) command runs shell commands"),
        (E("tcc"), "an interpreter: tcc -run compiles and runs C code at once"),
        // Compilers and linkers, under any target triplet or version.
        (T("cc"), COMPILER),
        (T("c++"), COMPILER),
        (T("cpp"), COMPILER),
        (T("gcc"), COMPILER),
        (T("g++"), COMPILER),
        (T("gccgo"), COMPILER),
        (T("gfortran"), COMPILER),
        (T("clang"), COMPILER),
        (T("clang++"), COMPILER),
        (T("clang-cpp"), COMPILER),
        (E("c89"), COMPILER),
        (E("c99"), COMPILER),
        (E("c89-gcc"), COMPILER),
        (E("c99-gcc"), COMPILER),
        (T("ld"), COMPILER),
        (T("ld.bfd"), COMPILER),
        (T("ld.gold"), COMPILER),
        (T("ld.lld"), COMPILER),
        (T("lld"), COMPILER),
        (E("mold"), COMPILER),
        (E("rustc"), COMPILER),
        (E("cargo"), "a build tool: it compiles and runs build scripts and cargo run"),
        (E("go"), "a build tool: go run compiles and runs a program"),
        (E("make"), BUILD),
        (E("cmake"), BUILD),
        (E("ninja"), BUILD),
        (E("rake"), BUILD),
        // Editors and pagers with shell escapes.
        (E("vi"), EDITOR),
        (F("vim"), EDITOR),
        (E("view"), EDITOR),
        (E("nvim"), EDITOR),
        (E("ex"), EDITOR),
        (E("ed"), EDITOR),
        (E("emacs"), "an editor with a shell escape: it runs shell commands and Lisp"),
        (E("nano"), EDITOR),
        (E("pico"), EDITOR),
        (E("less"), PAGER),
        (E("more"), PAGER),
        (E("most"), PAGER),
        (E("pg"), PAGER),
        (E("man"), "a tool with a shell escape: it runs a pager, which runs shell commands"),
        // Environment printers.
        (E("env"), "an environment printer and launcher: it prints its own environment and runs any program"),
        (E("printenv"), PRINTER),
        (E("envsubst"), "an environment printer: it substitutes any variable's value into its output"),
        (E("ps"), "an environment printer: ps e shows the environment of processes of the same uid, itself included"),
        (E("procenv"), PRINTER),
        // Program launchers.
        (E("xargs"), LAUNCHER),
        (E("find"), "a launcher: -exec, -execdir, -ok and -okdir run any program"),
        (E("nice"), LAUNCHER),
        (E("nohup"), LAUNCHER),
        (E("timeout"), LAUNCHER),
        (E("setsid"), LAUNCHER),
        (E("stdbuf"), LAUNCHER),
        (E("setarch"), "a launcher: it runs the program in its arguments under another personality"),
        (E("linux32"), "a launcher: setarch under another name"),
        (E("linux64"), "a launcher: setarch under another name"),
        (E("prlimit"), "a launcher: it runs the program in its arguments with other resource limits"),
        (E("logsave"), "a launcher: it runs the program in its arguments and saves its output"),
        (E("capsh"), "a launcher: it runs a shell or the program in its arguments (-- -c, ==)"),
        (E("ionice"), LAUNCHER),
        (E("chrt"), LAUNCHER),
        (E("taskset"), LAUNCHER),
        (E("numactl"), LAUNCHER),
        (E("flock"), LAUNCHER),
        (E("time"), LAUNCHER),
        (E("watch"), "a launcher: it runs its arguments through a shell, again and again"),
        (E("script"), "a launcher: it runs a shell or the command given with -c"),
        (E("unbuffer"), LAUNCHER),
        (E("rlwrap"), LAUNCHER),
        (E("parallel"), LAUNCHER),
        (E("run-parts"), LAUNCHER),
        (E("start-stop-daemon"), LAUNCHER),
        (E("systemd-run"), LAUNCHER),
        (E("systemd-nspawn"), LAUNCHER),
        (E("at"), LAUNCHER),
        (E("batch"), LAUNCHER),
        (E("tmux"), LAUNCHER),
        (E("screen"), LAUNCHER),
        (E("dtach"), LAUNCHER),
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
        (E("sshpass"), LAUNCHER),
        (E("npx"), "a launcher: it downloads or finds a package and runs it"),
        (E("entr"), "a launcher: it runs the program in its arguments when files change"),
        (E("socat"), "a launcher: EXEC: and SYSTEM: addresses run programs"),
        (E("ssh"), "a launcher: ProxyCommand and LocalCommand (-o, -F) run local shell commands, and SendEnv sends variables to a host the caller names"),
        (E("sudo"), PRIV),
        (E("su"), PRIV),
        (E("sg"), PRIV),
        (E("doas"), PRIV),
        (E("pkexec"), PRIV),
        (E("runuser"), PRIV),
        // Tracers, debuggers and the loader.
        (E("strace"), DEBUGGER),
        (E("ltrace"), DEBUGGER),
        (E("gdb"), DEBUGGER),
        (E("gdbserver"), DEBUGGER),
        (E("lldb"), DEBUGGER),
        (E("valgrind"), DEBUGGER),
        (E("rr"), DEBUGGER),
        (E("perf"), DEBUGGER),
        (E("catchsegv"), DEBUGGER),
        (E("ldd"), "the dynamic loader's front end: it runs the loader on the file it is given"),
        (F("ld-linux"), LOADER),
        (E("ld.so"), LOADER),
    ]
};

/// If the file name `name` is a shell, interpreter, compiler, tool with a
/// shell escape, environment printer or launcher, the reason it is dangerous.
pub fn danger(name: &str) -> Option<&'static str> {
    LIST.iter()
        .find_map(|(n, why)| n.matches(name).then_some(*why))
}

#[cfg(test)]
mod tests {
    use super::{danger, LIST};

    #[test]
    fn every_entry_says_why() {
        for (name, why) in LIST {
            let kind = why.split(':').next().unwrap_or_default();
            assert!(
                why.len() > kind.len() + 10,
                "{name:?} has no reason of its own"
            );
            assert!(
                [
                    "a shell",
                    "a multi-call binary",
                    "an interpreter",
                    "a REPL",
                    "a compiler or linker",
                    "a build tool",
                    "an editor with a shell escape",
                    "a pager with a shell escape",
                    "a tool with a shell escape",
                    "an environment printer",
                    "an environment printer and launcher",
                    "a launcher",
                    "a privilege launcher",
                    "a tracer/debugger",
                    "the dynamic loader",
                    "the dynamic loader's front end",
                ]
                .contains(&kind),
                "{name:?}: reason {why:?} names no group"
            );
        }
    }

    #[test]
    fn listed_names_are_caught() {
        for name in [
            // shells and multi-call binaries
            "sh",
            "bash",
            "dash",
            "zsh",
            "ksh",
            "ksh93",
            "fish",
            "csh",
            "busybox",
            "toybox",
            // interpreters and REPLs
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
            "lua",
            "lua5.4",
            "luajit",
            "tclsh",
            "tclsh8.6",
            "awk",
            "gawk",
            "mawk",
            "nawk",
            "sed",
            "jq",
            "gojq",
            "yq",
            "sqlite3",
            "psql",
            "mysql",
            "m4",
            "dc",
            "tcc",
            "erb",
            "java",
            // compilers, linkers and build tools
            "gcc",
            "cc",
            "c++",
            "g++",
            "cpp",
            "clang",
            "clang++",
            "clang-15",
            "ld",
            "ld.bfd",
            "ld.gold",
            "lld",
            "ld.lld",
            "gcc-12",
            "g++-12",
            "x86_64-linux-gnu-gcc-12",
            "x86_64-linux-gnu-g++-12",
            "x86_64-linux-gnu-cpp-12",
            "x86_64-linux-gnu-ld.bfd",
            "x86_64-linux-gnu-ld",
            "aarch64-linux-gnu-gcc",
            "arm-none-eabi-gcc",
            "x86_64-pc-linux-gnu-gcc-13.2.0",
            "gccgo",
            "x86_64-linux-gnu-gccgo-12",
            "c99",
            "rustc",
            "cargo",
            "go",
            "make",
            "cmake",
            "ninja",
            // editors and pagers
            "vi",
            "vim",
            "vim.basic",
            "vim.tiny",
            "view",
            "ed",
            "ex",
            "nano",
            "less",
            "more",
            "man",
            // environment printers
            "env",
            "printenv",
            "envsubst",
            "ps",
            // launchers
            "xargs",
            "find",
            "nice",
            "nohup",
            "timeout",
            "setsid",
            "stdbuf",
            "setarch",
            "linux32",
            "prlimit",
            "logsave",
            "capsh",
            "chroot",
            "unshare",
            "nsenter",
            "taskset",
            "ionice",
            "chrt",
            "flock",
            "script",
            "watch",
            "systemd-run",
            "ssh",
            "setpriv",
            "sudo",
            "su",
            "runuser",
            "npx",
            "socat",
            // tracers and the loader
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
            "gh",
            "aws",
            "kubectl",
            "curl",
            "git",
            "tar",
            "zip",
            "rsync",
            "scp",
            "true",
            "shred",
            "bashful",
            "environ",
            // toolchain names are not substrings
            "gcc-ar",
            "gcc-nm-12",
            "libgcc",
            "xgcc",
            "ccache",
            "ldconfig",
            "x86_64-linux-gnu-as",
            "gcc-",
            "-gcc",
            "x86_64--gcc",
            "ssh-keygen",
        ] {
            assert_eq!(danger(name), None, "{name} caught");
        }
    }
}
