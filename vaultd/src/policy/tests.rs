//! Policy-wide tests: parsing and validation, decisions, loading from disk.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;

const EXAMPLE: &str = include_str!("../../../packaging/policy.example.toml");

fn parse(text: &str) -> Result<Policy, PolicyError> {
    from_str_for_test("/etc/aivault/policy.d/50-test.toml", text)
}

fn parse_err(text: &str) -> String {
    parse(text)
        .expect_err("policy should be refused")
        .to_string()
}

fn who(uid: u32, gid: u32, groups: &[u32]) -> Who {
    Who {
        uid,
        gid,
        groups: groups.to_vec(),
    }
}

fn query(w: Who, command: &str, args: &[&str]) -> RunQuery {
    RunQuery {
        who: w,
        command: command.into(),
        sha256: [0; 32],
        args: args.iter().map(|s| s.to_string()).collect(),
        secrets: Vec::new(),
        cwd_readable: false,
        existing: ExistingSecrets::default(),
        cwd_writable: false,
    }
}

fn ask(name: &str, env: Option<&str>) -> SecretAsk {
    SecretAsk {
        name: name.into(),
        env: env.map(Into::into),
    }
}

fn report<'a>(p: &'a [RuleReport], rule: &str) -> &'a RuleReport {
    p.iter()
        .find(|r| r.rule == rule)
        .unwrap_or_else(|| panic!("no report for {rule}"))
}

// ----- parsing and validation -------------------------------------------

#[test]
fn example_policy_loads_and_explains() {
    let p = parse(EXAMPLE).expect("example policy is valid");
    let r = p.explain();
    assert_eq!(r.len(), 4 + 2 + 2, "{r:#?}");
    let caller = report(&r, "deploy-as-caller");
    assert!(
        caller.warnings.iter().any(|w| w.contains("caller's uid")),
        "{caller:#?}"
    );
    let script = report(&r, "report-script");
    assert!(
        script
            .warnings
            .iter()
            .any(|w| w.contains("print its own environment")),
        "{script:#?}"
    );
    let gh = report(&r, "gh-api");
    assert!(gh.effect.contains("/usr/bin/gh"), "{gh:#?}");
    assert!(gh.effect.contains("GITHUB_TOKEN as GH_TOKEN"), "{gh:#?}");
    assert_eq!(gh.source, "/etc/aivault/policy.d/50-test.toml");
    let aws = report(&r, "aws-s3-ls");
    assert!(
        aws.effect
            .contains("a person must approve once per login session: the caller"),
        "{aws:#?}"
    );
    assert!(!gh.effect.contains("must approve"), "{gh:#?}");
    assert!(serde_json::to_string(&r).is_ok());
    assert_eq!(p.search_path().len(), 6);
}

#[test]
fn unknown_key_is_refused_naming_file_and_rule() {
    let e = parse_err(
        "[[rule]]\nname = \"r1\"\ncommand = \"/usr/bin/true\"\nusers = [0]\ncolour = \"red\"\n",
    );
    assert!(e.contains("50-test.toml"), "{e}");
    assert!(e.contains("rule \"r1\""), "{e}");
    assert!(e.contains("colour"), "{e}");
    let e = parse_err("[[rule]]\nname = \"r1\"\ncommand = \"/usr/bin/true\"\nusers = [0]\n[rule.sandbox]\nnet = 1\n");
    assert!(e.contains("rule \"r1\"") && e.contains("net"), "{e}");
    let e = parse_err("polcy = 1\n");
    assert!(e.contains("50-test.toml") && e.contains("polcy"), "{e}");
    let e = parse_err("[[rule]]\nname = \"r1\"\ncommand = \n");
    assert!(e.contains("not valid TOML"), "{e}");
    let e = parse_err("[[grant]]\nsecret = \"S\"\nusers = [0]\nwho = 1\n");
    assert!(e.contains("grant of \"S\"") && e.contains("who"), "{e}");
}

#[test]
fn relative_or_unnormal_command_is_refused() {
    let e = parse_err("[[rule]]\nname = \"r\"\ncommand = \"bin/gh\"\nusers = [0]\n");
    assert!(
        e.contains("rule \"r\"") && e.contains("not an absolute path"),
        "{e}"
    );
    let e = parse_err("[[rule]]\nname = \"r\"\ncommand = \"/usr/bin/../bin/gh\"\nusers = [0]\n");
    assert!(e.contains(". or .."), "{e}");
}

#[test]
fn forbidden_env_names_are_refused() {
    for (field, name) in [
        (
            "secrets = [{ name = \"T\", env = \"LD_PRELOAD\" }]",
            "LD_PRELOAD",
        ),
        ("secrets = [{ name = \"BASH_ENV\" }]", "BASH_ENV"),
        (
            "secrets = [{ name = \"T\", env = \"PYTHONPATH\" }]",
            "PYTHONPATH",
        ),
        ("pass_env = [\"PATH\"]", "PATH"),
        ("pass_env = [\"HOME\"]", "HOME"),
        ("pass_env = [\"TMPDIR\"]", "TMPDIR"),
        ("pass_env = [\"NODE_OPTIONS\"]", "NODE_OPTIONS"),
        ("pass_env = [\"IFS\"]", "IFS"),
        ("pass_env = [\"A-B\"]", "A-B"),
    ] {
        let e = parse_err(&format!(
            "[[rule]]\nname = \"r\"\ncommand = \"/usr/bin/true\"\nusers = [0]\n{field}\n"
        ));
        assert!(e.contains("rule \"r\"") && e.contains(name), "{field}: {e}");
    }
    let e = parse_err(
        "[[rule]]\nname = \"r\"\ncommand = \"/usr/bin/true\"\nusers = [0]\nsecrets = [{ name = \"A\", env = \"X\" }]\npass_env = [\"X\"]\n",
    );
    assert!(e.contains("X is used twice"), "{e}");
}

#[test]
fn pin_violation_invalidates_the_policy() {
    let text = "[[pin]]\nsecret = \"AWS\"\nscope = \"system\"\ncommands = [\"/usr/bin/aws\"]\n\
                [[rule]]\nname = \"leak\"\ncommand = \"/usr/bin/curl\"\nusers = [0]\n\
                secrets = [{ name = \"AWS\", scope = \"system\" }]\n";
    let e = parse_err(text);
    assert!(e.contains("rule \"leak\"") && e.contains("pinned"), "{e}");
    // The same name in the other scope is a different secret.
    let ok = text.replace("scope = \"system\" }", "scope = \"user\" }");
    parse(&ok).expect("user-scope AWS is not pinned");
    // The pinned command itself is fine.
    parse(&text.replace("/usr/bin/curl", "/usr/bin/aws")).expect("pinned command");
}

#[test]
fn interpreters_need_the_explicit_flag() {
    for cmd in [
        "/usr/bin/bash",
        "/usr/bin/env",
        "/usr/bin/python3",
        "/usr/bin/awk",
        "/usr/bin/xargs",
        "/usr/bin/jq",
        "/usr/bin/sqlite3",
        "/usr/bin/setarch",
        "/usr/bin/prlimit",
        "/usr/sbin/logsave",
        "/usr/sbin/capsh",
        "/usr/bin/cc",
        "/usr/bin/x86_64-linux-gnu-gcc-12",
    ] {
        let e = parse_err(&format!(
            "[[rule]]\nname = \"i\"\ncommand = \"{cmd}\"\nusers = [0]\n"
        ));
        assert!(e.contains("allow_interpreter"), "{cmd}: {e}");
    }
    let p = parse("[[rule]]\nname = \"i\"\ncommand = \"/usr/bin/printenv\"\nusers = [0]\nallow_interpreter = true\n")
        .expect("allowed knowingly");
    let r = p.explain();
    assert!(
        r[0].warnings
            .iter()
            .any(|w| w.contains("can print its own environment")),
        "{r:#?}"
    );
}

#[test]
fn every_link_on_the_way_is_judged() {
    // tool -> step -> jq (missing: the chain alone must be enough), and a
    // multi-call name linked to busybox.
    let dir = tempfile::tempdir().expect("tempdir");
    let tool = dir.path().join("tool");
    std::os::unix::fs::symlink("step", &tool).expect("symlink");
    std::os::unix::fs::symlink(dir.path().join("jq"), dir.path().join("step")).expect("symlink");
    let ls = dir.path().join("ls");
    std::os::unix::fs::symlink("/usr/bin/busybox", &ls).expect("symlink");
    for cmd in [&tool, &ls] {
        let e = parse_err(&format!(
            "[[rule]]\nname = \"i\"\ncommand = \"{}\"\nusers = [0]\n",
            cmd.display()
        ));
        assert!(e.contains("allow_interpreter"), "{}: {e}", cmd.display());
    }
}

#[test]
fn options_that_run_programs_are_warned_about() {
    let p = parse(
        "[[rule]]\nname = \"g\"\ncommand = \"/usr/bin/git\"\nusers = [0]\nargs = [{ prefix = [\"push\"] }]\n\n[[rule]]\nname = \"s\"\ncommand = \"/usr/bin/git\"\nusers = [0]\nargs = [{ exact = [\"status\"] }]\n",
    )
    .expect("git is not refused");
    let r = p.explain();
    assert!(r[0].warnings.iter().any(|w| w.contains("git -c")), "{r:#?}");
    assert!(
        !r[1].warnings.iter().any(|w| w.contains("through:")),
        "{r:#?}"
    );
}

#[test]
fn caller_isolation_is_always_warned() {
    let p = parse("[[rule]]\nname = \"c\"\ncommand = \"/usr/bin/true\"\nusers = [0]\nisolation = \"caller\"\n")
        .expect("valid");
    assert!(p.explain()[0]
        .warnings
        .iter()
        .any(|w| w.contains("isolation = \"caller\"")));
    let d = p
        .decide(&query(who(0, 0, &[]), "/usr/bin/true", &[]))
        .expect("allowed");
    assert_eq!(d.isolation, Isolation::Caller);
    let e = parse_err(
        "[[rule]]\nname = \"c\"\ncommand = \"/usr/bin/true\"\nusers = [0]\nisolation = \"root\"\n",
    );
    assert!(e.contains("root"), "{e}");
}

#[test]
fn other_refusals() {
    let base = "[[rule]]\nname = \"r\"\ncommand = \"/usr/bin/true\"\n";
    for (extra, needle) in [
        ("", "nobody may use it"),
        ("users = [\"no-such-user-aivault\"]", "unknown user"),
        ("groups = [\"no-such-group-aivault\"]", "unknown group"),
        ("users = [0]\nsha256 = \"abc\"", "64 hexadecimal"),
        ("users = [0]\nargs = []", "matches nothing"),
        (
            "users = [0]\nargs = [{ glob = [\"x\\\\\"] }]",
            "lone backslash",
        ),
        (
            "users = [0]\nargs = [{ exact = [\"a\"], prefix = [\"b\"] }]",
            "rule \"r\"",
        ),
        ("users = [0]\nsecrets = [{ name = \"1X\" }]", "secret name"),
        (
            "users = [0]\nsecrets = [{ name = \"A\" }, { name = \"A\", env = \"B\" }]",
            "listed twice",
        ),
        (
            "users = [0]\n[rule.sandbox]\ntimeout = \"5 min\"",
            "timeout",
        ),
    ] {
        let e = parse_err(&format!("{base}{extra}\n"));
        assert!(e.contains(needle), "{extra}: {e}");
    }
    let twice = format!(
        "{base}users = [0]\n[[rule]]\nname = \"r\"\ncommand = \"/usr/bin/false\"\nusers = [0]\n"
    );
    assert!(parse_err(&twice).contains("already exists"));
}

// ----- decisions --------------------------------------------------------

const RULES: &str = r#"
[[rule]]
name = "t-exact"
command = "/usr/bin/true"
args = [{ exact = ["s3", "ls"] }, { prefix = ["api"] }, { glob = ["repos/*/issues"] }]
users = [1000]
groups = [2000]
secrets = [
  { name = "TOKEN", env = "GH_TOKEN" },
  { name = "DEPLOY", scope = "system", env = "DEPLOY_KEY" },
]
pass_env = ["LANG"]
[rule.sandbox]
tcp_connect = [443]
cwd_readable = true

[[rule]]
name = "t-pinned"
command = "/usr/bin/false"
sha256 = "0101010101010101010101010101010101010101010101010101010101010101"
users = [1000]

[[grant]]
secret = "DEPLOY"
groups = [3000]
"#;

#[test]
fn wrong_user_or_group_is_denied() {
    let p = parse(RULES).expect("valid");
    let d = p
        .decide(&query(who(1001, 1001, &[]), "/usr/bin/true", &["s3", "ls"]))
        .expect_err("stranger");
    assert!(
        d.reason.starts_with("no rule allows /usr/bin/true for "),
        "{d}"
    );
    assert!(d.reason.contains("uid 1001"), "{d}");
    p.decide(&query(who(1000, 1000, &[]), "/usr/bin/true", &["s3", "ls"]))
        .expect("user");
    p.decide(&query(who(1001, 2000, &[]), "/usr/bin/true", &["s3", "ls"]))
        .expect("primary group");
    p.decide(&query(
        who(1001, 1001, &[5, 2000]),
        "/usr/bin/true",
        &["s3", "ls"],
    ))
    .expect("supplementary");
    let d = p
        .decide(&query(who(1000, 1000, &[]), "/usr/bin/id", &[]))
        .expect_err("unknown command");
    assert_eq!(d.reason, "no rule allows /usr/bin/id");
    let d = Policy::empty()
        .decide(&query(who(0, 0, &[]), "/usr/bin/true", &[]))
        .expect_err("empty");
    assert!(d.reason.contains("no rules"), "{d}");
}

#[test]
fn argument_patterns() {
    let p = parse(RULES).expect("valid");
    let run = |args: &[&str]| p.decide(&query(who(1000, 1000, &[]), "/usr/bin/true", args));
    run(&["s3", "ls"]).expect("exact");
    run(&["api"]).expect("prefix alone");
    run(&["api", "user", "--jq", ".x"]).expect("prefix + more");
    run(&["repos/acme/issues"]).expect("glob");
    for bad in [
        &["s3", "ls", "x"][..],
        &["s3"],
        &["repos/a/b/issues"],
        &["auth", "token"],
        &[],
    ] {
        let d = run(bad).expect_err("mismatch");
        assert_eq!(
            d.reason, "argument list does not match rule t-exact",
            "{bad:?}"
        );
    }
}

#[test]
fn sha256_mismatch_is_denied() {
    let p = parse(RULES).expect("valid");
    let mut q = query(who(1000, 1000, &[]), "/usr/bin/false", &[]);
    let d = p.decide(&q).expect_err("wrong hash");
    assert_eq!(
        d.reason,
        "sha256 of /usr/bin/false does not match the pin of rule t-pinned"
    );
    q.sha256 = [1; 32];
    p.decide(&q).expect("pinned hash");
}

#[test]
fn secrets_must_be_granted() {
    let p = parse(RULES).expect("valid");
    let mut q = query(who(1000, 1000, &[]), "/usr/bin/true", &["api"]);
    // Nothing asked: every user secret; DEPLOY is not granted to this caller.
    let d = p.decide(&q).expect("allowed");
    assert_eq!(d.secrets.len(), 1);
    assert_eq!(d.secrets[0].env, "GH_TOKEN");
    assert_eq!(d.pass_env, vec!["LANG".to_string()]);
    assert_eq!(d.sandbox.tcp_connect, vec![443]);

    q.secrets = vec![ask("OTHER", None)];
    assert_eq!(
        p.decide(&q).expect_err("ungranted").reason,
        "secret OTHER is not granted by rule t-exact"
    );
    q.secrets = vec![ask("TOKEN", Some("LD_PRELOAD"))];
    let d = p.decide(&q).expect_err("renamed");
    assert!(
        d.reason
            .contains("gives secret TOKEN as GH_TOKEN, not LD_PRELOAD"),
        "{d}"
    );
    q.secrets = vec![ask("DEPLOY", None)];
    let d = p.decide(&q).expect_err("no grant");
    assert!(
        d.reason
            .starts_with("system secret DEPLOY is not granted to "),
        "{d}"
    );
    assert!(d.reason.contains("uid 1000"), "{d}");
    q.secrets = vec![ask("TOKEN", Some("GH_TOKEN")), ask("TOKEN", None)];
    assert!(p.decide(&q).expect_err("twice").reason.contains("twice"));

    // Through the group grant.
    q.who = who(1000, 1000, &[3000]);
    q.secrets = vec![ask("DEPLOY", Some("DEPLOY_KEY"))];
    let d = p.decide(&q).expect("granted via group");
    assert_eq!(
        d.secrets,
        vec![SecretGrant {
            name: "DEPLOY".into(),
            scope: SecretScope::System,
            env: "DEPLOY_KEY".into()
        }]
    );
    q.secrets.clear();
    assert_eq!(p.decide(&q).expect("all").secrets.len(), 2);
}

#[test]
fn cwd_and_first_match() {
    let p = parse(RULES).expect("valid");
    let mut q = query(who(1000, 1000, &[]), "/usr/bin/true", &["api"]);
    q.cwd_readable = true;
    let allowed = p.decide(&q).expect("allowed");
    assert!(allowed.sandbox.cwd_readable && !allowed.sandbox.cwd_writable);
    // A read-only rule never gives the directory writable.
    let mut rw = q.clone();
    rw.cwd_writable = true;
    let d = p.decide(&rw).expect_err("read-write not allowed");
    assert!(d.reason.contains("read-write"), "{d}");
    let q2 = RunQuery {
        command: "/usr/bin/false".into(),
        sha256: [1; 32],
        ..q
    };
    let d = p.decide(&q2).expect_err("cwd not allowed");
    assert!(d.reason.contains("working directory"), "{d}");

    let two = "[[rule]]\nname = \"a\"\ncommand = \"/usr/bin/true\"\nusers = [0]\nargs = [{ prefix = [\"x\"] }]\n\
               [[rule]]\nname = \"b\"\ncommand = \"/usr/bin/true\"\nusers = [0]\n";
    let p = parse(two).expect("valid");
    assert_eq!(
        p.decide(&query(who(0, 0, &[]), "/usr/bin/true", &["x"]))
            .expect("a")
            .rule,
        "a"
    );
    assert_eq!(
        p.decide(&query(who(0, 0, &[]), "/usr/bin/true", &["y"]))
            .expect("b")
            .rule,
        "b"
    );
    assert!(p.explain()[1]
        .warnings
        .iter()
        .any(|w| w.contains("tried first")));
}

#[test]
fn commands_for_lists_only_what_the_caller_may_run() {
    let p = parse(RULES).expect("valid");
    let mine = p.commands_for(&who(1000, 1000, &[]));
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].secrets.len(), 1, "ungranted system secret hidden");
    assert_eq!(mine[1].args, vec!["any".to_string()]);
    assert_eq!(
        p.commands_for(&who(1000, 1000, &[3000]))[0].secrets.len(),
        2
    );
    assert!(p.commands_for(&who(7, 7, &[])).is_empty());
    assert!(serde_json::to_string(&mine).is_ok());
}

#[test]
fn commands_for_gives_arguments_and_sandbox_as_data() {
    let p = parse(RULES).expect("valid");
    let mine = p.commands_for(&who(1000, 1000, &[]));
    let v = serde_json::to_value(&mine).expect("json");
    assert_eq!(
        v[0]["arg_patterns"],
        serde_json::json!([
            {"kind": "exact", "args": ["s3", "ls"]},
            {"kind": "prefix", "args": ["api"]},
            {"kind": "glob", "args": ["repos/*/issues"]},
        ])
    );
    assert_eq!(
        v[1]["arg_patterns"],
        serde_json::Value::Null,
        "any arguments"
    );
    let sb = &v[0]["sandbox"];
    assert_eq!(sb["working_directory"], "private_home");
    // `cwd_readable = true`: the caller may ask for its directory read-only.
    assert_eq!(sb["workdir"], "read-only");
    assert_eq!(v[1]["sandbox"]["workdir"], "none");
    assert_eq!(sb["tcp_connect"], serde_json::json!([443]));
    assert_eq!(sb["tcp_bind"], serde_json::json!([]));
    assert_eq!(sb["timeout_ms"], 60_000);
    assert_eq!(sb["max_output_bytes"], 16 * 1024 * 1024);
}

// ----- loading from disk (tests run as root, so created files are root-owned)

fn policy_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn rule(name: &str) -> String {
    format!("[[rule]]\nname = \"{name}\"\ncommand = \"/usr/bin/true\"\nusers = [0]\n")
}

#[test]
fn missing_policy_is_empty() {
    let dir = policy_dir();
    let p = Policy::load(dir.path()).expect("empty dir");
    assert!(p.explain().is_empty());
    let p = Policy::load(&dir.path().join("absent")).expect("absent dir");
    assert!(p
        .decide(&query(who(0, 0, &[]), "/usr/bin/true", &[]))
        .is_err());
}

#[test]
fn merge_order_and_file_selection() {
    let dir = policy_dir();
    write(&dir.path().join("policy.toml"), &rule("main"), 0o644);
    let d = dir.path().join("policy.d");
    fs::create_dir(&d).expect("mkdir");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
    write(&d.join("b.toml"), &rule("b"), 0o644);
    write(&d.join("B.toml"), &rule("upper-b"), 0o644);
    write(&d.join("a.toml"), &rule("a"), 0o644);
    write(&d.join("c.toml.dpkg-old"), "garbage", 0o644);
    write(&d.join(".hidden.toml"), "garbage", 0o644);
    let p = Policy::load(dir.path()).expect("valid");
    let order: Vec<String> = p.explain().into_iter().map(|r| r.rule).collect();
    assert_eq!(order, ["main", "upper-b", "a", "b"]);
    assert_eq!(
        p.decide(&query(who(0, 0, &[]), "/usr/bin/true", &[]))
            .expect("ok")
            .rule,
        "main"
    );

    write(&d.join("z.toml"), "search_path = [\"/usr/bin\"]\n", 0o644);
    write(
        &dir.path().join("policy.toml"),
        &format!("search_path = [\"/bin\"]\n{}", rule("main")),
        0o644,
    );
    let e = Policy::load(dir.path())
        .expect_err("search_path twice")
        .to_string();
    assert!(e.contains("z.toml") && e.contains("already set"), "{e}");
}

#[test]
fn group_writable_policy_file_is_refused() {
    let dir = policy_dir();
    let file = dir.path().join("policy.toml");
    write(&file, &rule("main"), 0o664);
    let e = Policy::load(dir.path())
        .expect_err("group-writable")
        .to_string();
    assert!(e.contains("policy.toml") && e.contains("writable"), "{e}");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
    Policy::load(dir.path()).expect("fixed");
    nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    let e = Policy::load(dir.path())
        .expect_err("not root-owned")
        .to_string();
    assert!(e.contains("not root"), "{e}");
}

#[test]
fn insecure_directories_are_refused() {
    let dir = policy_dir();
    let d = dir.path().join("policy.d");
    fs::create_dir(&d).expect("mkdir");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).expect("chmod");
    write(&d.join("a.toml"), &rule("a"), 0o644);
    let e = Policy::load(dir.path())
        .expect_err("world-writable policy.d")
        .to_string();
    assert!(e.contains("policy.d") && e.contains("writable"), "{e}");

    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
    Policy::load(dir.path()).expect("fixed");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o775)).expect("chmod");
    assert!(
        Policy::load(dir.path()).is_err(),
        "group-writable policy dir"
    );

    let other = policy_dir();
    let link = other.path().join("policy.toml");
    std::os::unix::fs::symlink(d.join("a.toml"), &link).expect("symlink");
    let e = Policy::load(other.path()).expect_err("symlink").to_string();
    assert!(e.contains("symbolic link"), "{e}");
}

#[test]
fn errors_name_the_file_on_disk() {
    let dir = policy_dir();
    let d = dir.path().join("policy.d");
    fs::create_dir(&d).expect("mkdir");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod");
    write(
        &d.join("10-x.toml"),
        &format!("{}pass_env = [\"LD_PRELOAD\"]\n", rule("x")),
        0o644,
    );
    let e = Policy::load(dir.path()).expect_err("forbidden").to_string();
    let want: PathBuf = d.join("10-x.toml");
    assert!(e.starts_with(&want.display().to_string()), "{e}");
    assert!(e.contains("rule \"x\"") && e.contains("LD_PRELOAD"), "{e}");
}

#[test]
fn a_policy_uses_groups_only_if_a_rule_or_grant_names_one() {
    let users_only = "[[rule]]\nname = \"a\"\ncommand = \"/usr/bin/true\"\nusers = [1000]\n";
    assert!(!parse(users_only).unwrap().uses_groups());
    let rule = "[[rule]]\nname = \"a\"\ncommand = \"/usr/bin/true\"\ngroups = [100]\n";
    assert!(parse(rule).unwrap().uses_groups());
    let grant = format!("{users_only}\n[[grant]]\nsecret = \"S\"\ngroups = [100]\n");
    assert!(parse(&grant).unwrap().uses_groups());
    assert!(parse(EXAMPLE).unwrap().uses_groups());
}

#[test]
fn explain_warns_about_each_workdir_mode() {
    let rule = |mode: &str| {
        format!(
            "[[rule]]\nname = \"w\"\ncommand = \"/usr/bin/true\"\nusers = [0]\n[rule.sandbox]\nworkdir = \"{mode}\"\n"
        )
    };
    let warned = |mode: &str, needle: &str| {
        let p = parse(&rule(mode)).expect("valid");
        p.explain()[0].warnings.iter().any(|w| w.contains(needle))
    };
    assert!(!warned("none", "workdir"));
    assert!(warned(
        "read-only",
        "controls the working directory's content"
    ));
    assert!(!warned("read-only", "later run as the caller"));
    assert!(warned("read-write", "later run as the caller"));
}
