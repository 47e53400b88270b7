//! Hierarchical secret names and patterns in rules and in run requests.

use super::*;

fn parse(text: &str) -> Result<Policy, PolicyError> {
    from_str_for_test("/etc/aivault/policy.d/50-test.toml", text)
}

const ALICE: u32 = 1000;

/// The variables the user-scope patterns of these tests may set.
const ENVS: &str =
    "envs = [\"AWS_ACCESS_KEY\", \"AWS_SECRET_KEY\", \"AWS_PROD_KEY\", \"AWS_A_B\", \"GH_TOKEN\"]";

fn rule(secrets: &str) -> String {
    format!(
        "[[rule]]\nname = \"t\"\ncommand = \"/usr/bin/true\"\nusers = [{ALICE}]\nsecrets = [{secrets}]\n"
    )
}

fn query(own: &[&str], asks: &[&str]) -> RunQuery {
    RunQuery {
        who: Who {
            uid: ALICE,
            gid: ALICE,
            groups: Vec::new(),
        },
        command: "/usr/bin/true".into(),
        sha256: [0; 32],
        args: Vec::new(),
        secrets: asks
            .iter()
            .map(|a| SecretAsk {
                name: a.to_string(),
                env: None,
            })
            .collect(),
        cwd_readable: false,
        cwd_writable: false,
        existing: ExistingSecrets {
            own: own.iter().map(|s| s.to_string()).collect(),
            system: vec!["aws/system_key".into()],
        },
    }
}

fn given(p: &Policy, q: &RunQuery) -> Vec<(String, String)> {
    p.decide(q)
        .unwrap_or_else(|d| panic!("denied: {d}"))
        .secrets
        .into_iter()
        .map(|s| (s.name, s.env))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn hierarchical_names_get_a_derived_variable() {
    let p = parse(&rule(
        "{ name = \"aws/access_key\" }, { name = \"gh/token\", env = \"GH\" }",
    ))
    .expect("valid");
    assert_eq!(
        given(&p, &query(&[], &[])),
        pairs(&[("aws/access_key", "AWS_ACCESS_KEY"), ("gh/token", "GH")])
    );
    for bad in ["/aws", "aws/", "aws//k", "aws/../k", "aws/./k"] {
        let e = parse(&rule(&format!("{{ name = \"{bad}\" }}")))
            .expect_err(bad)
            .to_string();
        assert!(e.contains("secret name"), "{bad}: {e}");
    }
}

#[test]
fn two_names_for_one_variable_are_refused_when_the_policy_loads() {
    let e = parse(&rule("{ name = \"aws/a_b\" }, { name = \"AWS_A/B\" }"))
        .expect_err("collision")
        .to_string();
    assert!(e.contains("AWS_A_B") && e.contains("twice"), "{e}");
}

#[test]
fn a_rule_pattern_selects_exactly_the_matching_own_secrets() {
    let p = parse(&rule(&format!("{{ name = \"aws/*\", {ENVS} }}"))).expect("valid");
    let own = [
        "aws/access_key",
        "aws/secret_key",
        "aws/prod/key",
        "gcp/key",
        "AWS",
    ];
    assert_eq!(
        given(&p, &query(&own, &[])),
        pairs(&[
            ("aws/access_key", "AWS_ACCESS_KEY"),
            ("aws/secret_key", "AWS_SECRET_KEY")
        ])
    );
    // The user pattern never reaches the system scope (aws/system_key).
    assert!(!given(&p, &query(&[], &[]))
        .iter()
        .any(|(n, _)| n == "aws/system_key"));
    let deep = parse(&rule(&format!("{{ name = \"aws/**\", {ENVS} }}"))).expect("valid");
    assert_eq!(given(&deep, &query(&own, &[])).len(), 3);
}

#[test]
fn an_asked_pattern_selects_among_what_the_rule_gives() {
    let p = parse(&rule(&format!("{{ name = \"**\", {ENVS} }}"))).expect("valid");
    let own = ["aws/access_key", "aws/secret_key", "gh/token"];
    assert_eq!(
        given(&p, &query(&own, &["aws/*"])),
        pairs(&[
            ("aws/access_key", "AWS_ACCESS_KEY"),
            ("aws/secret_key", "AWS_SECRET_KEY")
        ])
    );
    // A name and a pattern that overlap give the secret once.
    assert_eq!(
        given(&p, &query(&own, &["aws/*", "aws/access_key"])).len(),
        2
    );
    let d = p.decide(&query(&own, &["gcp/*"])).expect_err("no match");
    assert!(d.reason.contains("matches gcp/*"), "{d}");
    let d = p.decide(&query(&own, &["aws/x"])).expect_err("unset");
    assert!(d.reason.contains("not set"), "{d}");
}

#[test]
fn selected_secrets_for_one_variable_or_a_refused_one_deny_the_run() {
    let p = parse(&rule(&format!("{{ name = \"**\", {ENVS} }}"))).expect("valid");
    let d = p
        .decide(&query(&["aws/a_b", "aws_a/b"], &[]))
        .expect_err("collision");
    assert!(d.reason.contains("AWS_A_B"), "{d}");
    let d = p
        .decide(&query(&["ld/preload"], &[]))
        .expect_err("forbidden variable");
    assert!(d.reason.contains("LD_PRELOAD"), "{d}");
}

#[test]
fn system_patterns_need_a_grant_and_respect_pins() {
    let text = format!(
        "{}[[grant]]\nsecret = \"aws/system_key\"\nusers = [{ALICE}]\n",
        rule("{ name = \"aws/*\", scope = \"system\" }")
    );
    let p = parse(&text).expect("valid");
    assert_eq!(
        given(&p, &query(&[], &[])),
        pairs(&[("aws/system_key", "AWS_SYSTEM_KEY")])
    );
    let ungranted = parse(&rule("{ name = \"aws/*\", scope = \"system\" }")).expect("valid");
    assert!(given(&ungranted, &query(&[], &[])).is_empty());
    let pinned = format!(
        "{text}[[pin]]\nsecret = \"aws/system_key\"\nscope = \"system\"\ncommands = [\"/usr/bin/false\"]\n"
    );
    let p = parse(&pinned).expect("valid");
    assert!(given(&p, &query(&[], &[])).is_empty());
}

#[test]
fn patterns_in_rules_are_checked_when_the_policy_loads() {
    for bad in ["aws/**x", "**/a/**", "/aws/*", "aws//*"] {
        let e = parse(&rule(&format!("{{ name = \"{bad}\" }}")))
            .expect_err(bad)
            .to_string();
        assert!(e.contains("secret pattern"), "{bad}: {e}");
    }
    let e = parse(&rule(&format!(
        "{{ name = \"aws/*\", env = \"X\", {ENVS} }}"
    )))
    .expect_err("env")
    .to_string();
    assert!(e.contains("takes no env"), "{e}");
    let p = parse(&rule(&format!("{{ name = \"aws/*\", {ENVS} }}"))).expect("valid");
    assert!(p.uses_secret_globs());
    let who = Who {
        uid: ALICE,
        gid: ALICE,
        groups: Vec::new(),
    };
    let shown = p.commands_for(&who);
    assert_eq!(shown[0].secret_patterns[0].pattern, "aws/*");
}

#[test]
fn a_user_pattern_sets_only_the_variables_the_rule_lists() {
    let e = parse(&rule("{ name = \"vault/*\" }"))
        .expect_err("no envs")
        .to_string();
    assert!(e.contains("envs = [...]"), "{e}");
    let e = parse(&rule("{ name = \"gh_token\", envs = [\"GH_TOKEN\"] }"))
        .expect_err("envs on a name")
        .to_string();
    assert!(e.contains("only for patterns"), "{e}");
    let e = parse(&rule("{ name = \"x/*\", envs = [\"LD_PRELOAD\"] }"))
        .expect_err("a forbidden variable listed")
        .to_string();
    assert!(e.contains("LD_PRELOAD"), "{e}");
    // The user names a secret vault/addr: its variable is not listed, so
    // the run is refused rather than pointed at the user's server.
    let p = parse(&rule("{ name = \"vault/*\", envs = [\"VAULT_TOKEN\"] }")).expect("valid");
    assert_eq!(
        given(&p, &query(&["vault/token"], &[])),
        pairs(&[("vault/token", "VAULT_TOKEN")])
    );
    let d = p
        .decide(&query(&["vault/token", "vault/addr"], &[]))
        .expect_err("an unlisted variable");
    assert!(
        d.reason.contains("VAULT_ADDR") && d.reason.contains("envs"),
        "{d}"
    );
    // System patterns need no list: root names system secrets.
    assert!(parse(&rule("{ name = \"aws/*\", scope = \"system\" }")).is_ok());
}
