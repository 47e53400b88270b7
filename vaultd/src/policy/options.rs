//! Tools that are dangerous only through some of their options.
//!
//! `git`, `tar`, `curl`, `zip`, `rsync`, `wget`, `scp` and `sftp` are
//! commonly what a rule is for, so they are not refused like the commands of
//! `policy/interp.rs`. But some of their options run another program
//! (`git -c core.sshCommand=…`, `tar --to-command`, `rsync -e`, `zip -TT`) or
//! send a file the caller names (`curl -d @file`, `curl -K`). `policy check`
//! warns when a rule's argument patterns can let one of those options
//! through; `exact` patterns and tight globs are the way to keep them out.
//! The same table covers `find`, `ssh` and `capsh`-like launchers that are
//! refused anyway, so a rule that knowingly allows one is told which of its
//! patterns reach the dangerous options.
//!
//! "Can let through" is judged on what the patterns can produce: an omitted
//! `args` or a `prefix` (anything may follow) lets everything through; an
//! `exact` list only what it names; a glob whatever it can match. Long
//! options are also caught abbreviated (`--to-com`, as GNU getopt and git
//! accept) and with `=value`; short options also attached to their value
//! (`-Iprog`) and inside bundles (`-xIf`; for `tar`, also in an old-style
//! first argument such as `xIf`). Arguments after a literal `--` are not
//! options. Which arguments are the values of options is not modelled: a
//! glob such as `*.tar` can be an option wherever it stands, so only globs
//! that cannot start with `-` (`archives/*.tar`) are quiet. This is a warning, not a guarantee: no table knows every option
//! of every version of a tool.

use super::args::{ArgPattern, ArgShape};
use super::interp::Name;

/// How an option is spelled.
#[derive(Debug, Clone, Copy)]
enum Opt {
    /// `-c`, `-cvalue`, or inside a bundle `-xc`.
    Short(char),
    /// `--config`, `--config=x`, or an abbreviation such as `--conf`.
    Long(&'static str),
    /// An argument that is exactly this word (`find -exec`, `git … foreach`).
    Word(&'static str),
    /// An argument that starts with this text (`zip -TT`).
    Lead(&'static str),
}

/// A tool, its options that run programs or leak files, and why.
struct Tool {
    names: &'static [Name],
    /// tar's old style: a first argument without `-` is a bundle of options.
    old_style_first: bool,
    options: &'static [(&'static [Opt], &'static str)],
}

const TOOLS: &[Tool] = {
    use Name::Exact as E;
    use Opt::{Lead, Long as L, Short as S, Word as W};
    &[
        Tool {
            names: &[E("git")],
            old_style_first: false,
            options: &[
                (&[S('c'), L("--config-env"), L("--config")], "sets any configuration, such as core.sshCommand, core.pager, core.hooksPath or alias.x=!cmd, each of which runs a program with the secrets"),
                (&[S('C'), L("--git-dir"), L("--work-tree")], "uses a repository the caller may have prepared, whose configuration and hooks run programs"),
                (&[L("--exec-path")], "runs git's helper programs from a directory the caller names"),
                (&[L("--upload-pack"), L("--receive-pack"), L("--exec"), S('u')], "names a program git runs (locally for local remotes; clone -u and fetch --upload-pack name it)"),
                (&[S('x')], "rebase -x and --exec run a shell command after each commit"),
                (&[L("--template")], "copies hooks from a directory the caller names"),
                (&[W("foreach"), L("--extcmd"), L("--tool")], "runs a command (submodule foreach, difftool)"),
            ],
        },
        Tool {
            names: &[E("tar"), E("gtar"), E("bsdtar")],
            old_style_first: true,
            options: &[
                (&[L("--to-command")], "pipes every extracted file into a shell command"),
                (&[L("--checkpoint-action")], "exec= runs a shell command at checkpoints"),
                (&[S('I'), L("--use-compress-program")], "runs the named program as the compressor"),
                (&[L("--rsh-command"), L("--rmt-command")], "runs the named program to reach a remote archive"),
                (&[S('F'), L("--info-script"), L("--new-volume-script")], "runs a script at the end of each volume"),
            ],
        },
        Tool {
            names: &[E("find")],
            old_style_first: false,
            options: &[
                (&[W("-exec"), W("-execdir"), W("-ok"), W("-okdir")], "runs any program"),
                (&[W("-fprint"), W("-fprint0"), W("-fprintf"), W("-fls")], "writes to a file the caller names"),
            ],
        },
        Tool {
            names: &[E("curl")],
            old_style_first: false,
            options: &[
                (&[S('K'), L("--config")], "reads further options from a file the caller names"),
                (&[S('d'), L("--data"), L("--data-binary"), L("--data-urlencode"), L("--data-ascii"), L("--json"), S('F'), L("--form")], "with @file sends a file's contents (e.g. /proc/self/environ where readable) to the server"),
                (&[S('T'), L("--upload-file")], "uploads a file the caller names"),
                (&[S('w'), L("--write-out")], "with @file or %output{} reads or writes files the caller names"),
                (&[S('o'), L("--output"), L("--output-dir")], "writes the response to a file the caller names"),
                (&[L("--variable")], "imports environment variables (%NAME) that --expand-* options send anywhere"),
            ],
        },
        Tool {
            names: &[E("wget")],
            old_style_first: false,
            options: &[
                (&[S('e'), L("--execute"), L("--config")], "runs wgetrc commands, such as use_askpass, which names a program to run"),
                (&[L("--use-askpass")], "runs the named program"),
                (&[L("--post-file"), L("--body-file")], "sends a file the caller names to the server"),
            ],
        },
        Tool {
            names: &[E("zip")],
            old_style_first: false,
            options: &[(&[Lead("-TT"), L("--unzip-command")], "runs the named command to test the archive")],
        },
        Tool {
            names: &[E("rsync")],
            old_style_first: false,
            options: &[
                (&[S('e'), L("--rsh")], "runs the named program as the remote shell"),
                (&[L("--rsync-path")], "names the program run at the other end, which may be a local shell command"),
            ],
        },
        Tool {
            names: &[E("ssh"), E("scp"), E("sftp")],
            old_style_first: false,
            options: &[
                (&[S('o'), S('F')], "ProxyCommand, LocalCommand and KnownHostsCommand run local shell commands; SendEnv sends variables"),
                (&[S('S'), S('D')], "scp/sftp run the named program instead of ssh or sftp-server"),
            ],
        },
    ]
};

/// Warnings for a rule whose command has one of the file names `names`
/// (as written, on the way, resolved) and whose argument patterns are `args`.
pub fn warnings<'a>(
    names: impl IntoIterator<Item = &'a str>,
    args: Option<&[ArgPattern]>,
) -> Vec<String> {
    let names: Vec<&str> = names.into_iter().collect();
    let Some((tool, name)) = TOOLS.iter().find_map(|t| {
        names
            .iter()
            .find(|n| t.names.iter().any(|m| m.matches(n)))
            .map(|n| (t, *n))
    }) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (opts, why) in tool.options {
        let through: Vec<String> = opts
            .iter()
            .filter(|o| lets_through(args, tool.old_style_first, **o))
            .map(|o| spell(*o))
            .collect();
        if !through.is_empty() {
            let how = match args {
                None => "no args patterns, so any argument list gets",
                Some(_) => "the args patterns let",
            };
            out.push(format!("{how} {name} {} through: {why}", through.join("/")));
        }
    }
    out
}

fn spell(o: Opt) -> String {
    match o {
        Opt::Short(c) => format!("-{c}"),
        Opt::Long(l) | Opt::Word(l) | Opt::Lead(l) => l.to_owned(),
    }
}

/// Whether some argument list the patterns accept contains option `o`.
fn lets_through(args: Option<&[ArgPattern]>, old_style_first: bool, o: Opt) -> bool {
    let Some(alts) = args else {
        return true;
    };
    alts.iter().any(|alt| {
        let (shapes, open) = alt.shapes();
        let mut options_end = false;
        for (i, shape) in shapes.iter().enumerate() {
            // `--` ends options, not expression words (`find -- /srv
            // -exec …` still executes).
            if matches!(shape, ArgShape::Lit("--")) && !matches!(o, Opt::Word(_)) {
                options_end = true;
                break;
            }
            if can_be_option(shape, o, old_style_first && i == 0) {
                return true;
            }
        }
        open && !options_end
    })
}

fn can_be_option(a: &ArgShape<'_>, o: Opt, old_style: bool) -> bool {
    match o {
        Opt::Short(c) => {
            a.can_start_with(&format!("-{c}"))
                || a.can_bundle("-", c)
                || (old_style && a.can_bundle("", c))
        }
        Opt::Long(name) => {
            // `--to-command`, `--to-command=x`, and every abbreviation of at
            // least one letter after the dashes.
            a.can_start_with(name)
                || (3..name.len()).any(|k| {
                    let abbr = &name[..k];
                    a.can_be(abbr) || a.can_start_with(&format!("{abbr}="))
                })
        }
        Opt::Word(w) => a.can_be(w),
        Opt::Lead(l) => a.can_start_with(l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::args::RawArgPattern;

    fn pats(alts: &[(&str, &[&str])]) -> Vec<ArgPattern> {
        alts.iter()
            .map(|(kind, v)| {
                let v = v.iter().map(|s| s.to_string()).collect();
                let raw = match *kind {
                    "exact" => RawArgPattern::Exact(v),
                    "prefix" => RawArgPattern::Prefix(v),
                    _ => RawArgPattern::Glob(v),
                };
                ArgPattern::compile(&raw).expect("valid pattern")
            })
            .collect()
    }

    fn warns(tool: &str, alts: &[(&str, &[&str])]) -> Vec<String> {
        warnings([tool], Some(&pats(alts)))
    }

    #[test]
    fn open_patterns_let_dangerous_options_through() {
        let w = warnings(["git"], None);
        assert!(w.iter().any(|w| w.contains("git -c")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("no args patterns")), "{w:?}");
        for (tool, alts, opt) in [
            ("git", &[("prefix", &["push"][..])][..], "--receive-pack"),
            ("git", &[("prefix", &["rebase"][..])][..], "-x"),
            (
                "git",
                &[("exact", &["rebase", "-x", "make", "main"][..])][..],
                "-x",
            ),
            (
                "git",
                &[("exact", &["clone", "-u", "sh -c id", "r"][..])][..],
                "-u",
            ),
            ("git", &[("glob", &["*", "status"][..])][..], "git -c"),
            (
                "git",
                &[("exact", &["-c", "core.pager=sh", "log"][..])][..],
                "git -c",
            ),
            (
                "tar",
                &[("exact", &["--to-com=sh", "-xf", "a.tar"][..])][..],
                "--to-command",
            ),
            (
                "tar",
                &[("exact", &["-xIf", "prog", "a.tar"][..])][..],
                "-I",
            ),
            ("tar", &[("exact", &["xIf", "prog", "a.tar"][..])][..], "-I"),
            (
                "tar",
                &[("glob", &["--checkpoint*"][..])][..],
                "--checkpoint-action",
            ),
            ("curl", &[("glob", &["-d", "*"][..])][..], "-d"),
            ("curl", &[("exact", &["-sSK", "f"][..])][..], "-K"),
            (
                "curl",
                &[("glob", &["--data-binary=@**"][..])][..],
                "--data-binary",
            ),
            ("zip", &[("exact", &["-TTsh", "a.zip"][..])][..], "-TT"),
            (
                "tar",
                &[("glob", &["-tf", "*.tar"][..])][..],
                "--to-command",
            ),
            ("rsync", &[("glob", &["-?", "*", "*"][..])][..], "-e"),
            (
                "find",
                &[("glob", &["*", "-exec", "*", ";"][..])][..],
                "-exec",
            ),
            // `--` ends options, not find's expression: `-exec` after it runs.
            ("find", &[("prefix", &["--", "/srv"][..])][..], "-exec"),
        ] {
            let w = warns(tool, alts);
            assert!(w.iter().any(|w| w.contains(opt)), "{tool} {alts:?}: {w:?}");
        }
    }

    #[test]
    fn tight_patterns_pass_quietly() {
        for (tool, alts) in [
            (
                "git",
                &[
                    ("exact", &["status"][..]),
                    ("exact", &["fetch", "origin"][..]),
                ][..],
            ),
            (
                "git",
                &[("glob", &["log", "--oneline", "-n", "[0-9]"][..])][..],
            ),
            ("git", &[("exact", &["commit", "--", "-c"][..])][..]),
            ("tar", &[("exact", &["-xzf", "a.tar.gz"][..])][..]),
            // A glob that cannot start with `-` is never an option; `*.tar`
            // could be `--to-command=x.tar` (values of options are not
            // modelled, so it is warned about even after `-f`).
            ("tar", &[("glob", &["-tf", "archives/*.tar"][..])][..]),
            (
                "curl",
                &[("exact", &["-sS", "https://api.example.com/"][..])][..],
            ),
            (
                "curl",
                &[("glob", &["-sS", "https://api.example.com/*"][..])][..],
            ),
            ("rsync", &[("exact", &["-a", "src/", "dst/"][..])][..]),
            ("find", &[("glob", &["/srv", "-name", "*.log"][..])][..]),
        ] {
            assert_eq!(warns(tool, alts), Vec::<String>::new(), "{tool} {alts:?}");
        }
        assert!(
            warnings(["jq"], None).is_empty(),
            "not a tool of this table"
        );
    }

    #[test]
    fn resolved_names_count() {
        let w = warnings(["vcs", "git"], None);
        assert!(w.iter().any(|w| w.contains("git -c")), "{w:?}");
    }
}
