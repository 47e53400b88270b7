//! Hierarchical secret names (`aws/access_key`) and the patterns that select
//! them, in rules and in `vaultctl run --secret`. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_tests::{fails_with, ok, set_secret, Daemon, Options, User};

/// A `sh` rule for `users`, giving the secrets listed (TOML inline tables).
fn sh_rule(users: &[&User], secrets: &str) -> String {
    let users: Vec<String> = users.iter().map(|u| format!("\"{}\"", u.name)).collect();
    format!(
        "[[rule]]\nname = \"sh\"\ncommand = \"/usr/bin/sh\"\nusers = [{}]\n\
         allow_interpreter = true\nsecrets = [{secrets}]\n",
        users.join(", ")
    )
}

fn start(policy: String) -> Daemon {
    Daemon::start_new(Options {
        policy,
        ..Options::default()
    })
}

/// The names of the variables the command sees that come from secrets
/// (upper-case, with an underscore: the test's secrets all map to such).
fn secret_vars(d: &Daemon, user: &User, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["run"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", "env | cut -d= -f1"]);
    let out = ok(&d.vaultctl(user, &args, b""));
    let mut vars: Vec<String> = out
        .lines()
        .filter(|v| v.starts_with("AWS") || v.starts_with("GCP"))
        .map(str::to_string)
        .collect();
    vars.sort();
    vars
}

/// The `secrets` of the last `run` record in the audit log.
fn last_run_secrets(d: &Daemon) -> Vec<String> {
    let records = d.audit_records();
    let record = records
        .iter()
        .rev()
        .find(|r| r["op"] == "run" && r["outcome"] == "ok")
        .unwrap_or_else(|| panic!("no run record in {records:?}"));
    let text = record.to_string();
    let secrets = record
        .pointer("/detail/secrets")
        .and_then(|s| s.as_array())
        .unwrap_or_else(|| panic!("no secrets in {text}"));
    secrets
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn hierarchical_names_are_stored_and_malformed_ones_refused() {
    let alice = User::ensure("aivt-alice");
    let d = start(String::new());
    set_secret(&d, &alice, "aws/access_key", "names-test-value-0123456789");
    set_secret(
        &d,
        &alice,
        "prod/db/pass.word",
        "names-test-value-9876543210",
    );
    let list = ok(&d.vaultctl(&alice, &["secrets", "list"], b""));
    assert!(
        list.contains("aws/access_key") && list.contains("prod/db/pass.word"),
        "{list}"
    );
    ok(&d.vaultctl(&alice, &["secrets", "exists", "aws/access_key"], b""));
    for (bad, why) in [
        ("/aws/key", "start with a letter"),
        ("aws/", "end with '/'"),
        ("aws//key", "empty component"),
        ("aws/../key", "'.' or '..'"),
        ("aws/./key", "'.' or '..'"),
        ("aws/*", "only letters"),
    ] {
        let err = fails_with(
            &d.vaultctl(&alice, &["secrets", "set", bad], b"v-0123456789"),
            2,
        );
        assert!(err.contains(why), "{bad}: {err}");
    }
    let list = ok(&d.vaultctl(&alice, &["--json", "secrets", "list"], b""));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2,
        "{list}"
    );
}

#[test]
fn a_rule_pattern_gives_a_run_exactly_the_callers_matching_secrets() {
    let alice = User::ensure("aivt-alice");
    let bob = User::ensure("aivt-bob");
    let d = start(sh_rule(
        &[&alice, &bob],
        "{ name = \"aws/*\", envs = [\"AWS_ACCESS_KEY\", \"AWS_SECRET_KEY\", \"AWS_BOB_KEY\"] }",
    ));
    set_secret(&d, &alice, "aws/access_key", "alice-access-0123456789");
    set_secret(&d, &alice, "aws/secret_key", "alice-secret-0123456789");
    set_secret(&d, &alice, "aws/prod/key", "alice-deep-0123456789");
    set_secret(&d, &alice, "gcp/key", "alice-gcp-0123456789");
    set_secret(&d, &bob, "aws/bob_key", "bob-key-0123456789");

    assert_eq!(
        secret_vars(&d, &alice, &[]),
        ["AWS_ACCESS_KEY", "AWS_SECRET_KEY"]
    );
    assert_eq!(last_run_secrets(&d), ["aws/access_key", "aws/secret_key"]);
    let same = ok(&d.vaultctl(
        &alice,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "test \"$AWS_ACCESS_KEY\" = alice-access-0123456789 && echo same",
        ],
        b"",
    ));
    assert_eq!(same.trim(), "same");
    let shown = ok(&d.vaultctl(&alice, &["policy", "show"], b""));
    assert!(
        shown.contains("aws/* (each as its name's variable)"),
        "{shown}"
    );
    // The same rule run by bob reaches bob's secrets only.
    assert_eq!(secret_vars(&d, &bob, &[]), ["AWS_BOB_KEY"]);
    assert_eq!(last_run_secrets(&d), ["aws/bob_key"]);
}

#[test]
fn run_secret_patterns_select_among_what_the_rule_gives() {
    let alice = User::ensure("aivt-alice");
    let d = start(sh_rule(
        &[&alice],
        "{ name = \"**\", envs = [\"AWS_ACCESS_KEY\", \"AWS_SECRET_KEY\", \"GCP_KEY\", \"AWS_A_B\"] }",
    ));
    set_secret(&d, &alice, "aws/access_key", "alice-access-0123456789");
    set_secret(&d, &alice, "aws/secret_key", "alice-secret-0123456789");
    set_secret(&d, &alice, "gcp/key", "alice-gcp-0123456789");

    assert_eq!(
        secret_vars(&d, &alice, &["--secret", "aws/*"]),
        ["AWS_ACCESS_KEY", "AWS_SECRET_KEY"]
    );
    assert_eq!(last_run_secrets(&d), ["aws/access_key", "aws/secret_key"]);
    assert_eq!(
        secret_vars(&d, &alice, &["--secret", "gcp/key"]),
        ["GCP_KEY"]
    );
    assert_eq!(secret_vars(&d, &alice, &[]).len(), 3);

    let err = fails_with(
        &d.vaultctl(
            &alice,
            &["run", "--secret", "azure/*", "--", "sh", "-c", "true"],
            b"",
        ),
        4,
    );
    assert!(err.contains("matches azure/*"), "{err}");
    let err = fails_with(
        &d.vaultctl(
            &alice,
            &["run", "--secret", "aws/*=X", "--", "sh", "-c", "true"],
            b"",
        ),
        2,
    );
    assert!(err.contains("takes no =ENV"), "{err}");
}

#[test]
fn two_secrets_for_one_variable_refuse_the_run_clearly() {
    let alice = User::ensure("aivt-alice");
    let d = start(sh_rule(
        &[&alice],
        "{ name = \"**\", envs = [\"AWS_ACCESS_KEY\", \"AWS_SECRET_KEY\", \"GCP_KEY\", \"AWS_A_B\"] }",
    ));
    set_secret(&d, &alice, "aws/a_b", "collide-one-0123456789");
    set_secret(&d, &alice, "aws_a/b", "collide-two-0123456789");
    let err = fails_with(
        &d.vaultctl(&alice, &["run", "--", "sh", "-c", "true"], b""),
        4,
    );
    assert!(
        err.contains("aws/a_b") && err.contains("aws_a/b") && err.contains("AWS_A_B"),
        "{err}"
    );
    // A secret whose variable the policy never accepts refuses it too.
    ok(&d.vaultctl(&alice, &["secrets", "rm", "aws_a/b"], b""));
    set_secret(&d, &alice, "ld/preload", "not-a-library-0123456789");
    let err = fails_with(
        &d.vaultctl(&alice, &["run", "--", "sh", "-c", "true"], b""),
        4,
    );
    assert!(err.contains("LD_PRELOAD"), "{err}");
}
