//! `[[capability]]` and `[[provider]]`: what loads, what is refused (each
//! error naming the file and the entry), who may invoke what, and the text
//! a broker compiles again.

use std::path::Path;

use aivault_broker::capability::{Capability, RawCapability};
use aivault_broker::registry::{Provider, Registry};

use super::compile::Builder;
use super::*;

const FILE: &str = "/etc/aivault/policy.d/60-http.toml";

fn parse(text: &str) -> Result<Policy, PolicyError> {
    from_str_for_test(FILE, text)
}

fn parse_err(text: &str) -> String {
    parse(text)
        .expect_err("policy should be refused")
        .to_string()
}

fn who(uid: u32) -> Who {
    Who {
        uid,
        gid: uid,
        groups: Vec::new(),
    }
}

const OPENAI: &str = r#"
[[capability]]
name = "openai"
provider = "openai"
secret = "OPENAI_API_KEY"
methods = ["GET", "POST"]
paths = ["/v1/**"]
users = [1000]
rate = { per_minute = 100, per_caller_per_minute = 10 }
"#;

/// Compiles a broker's init text as the broker does: the shipped registry
/// overridden by its providers, then each capability.
fn compile_as_broker(text: &str) -> Vec<Capability> {
    let doc: toml::Table = toml::from_str(text).unwrap();
    let providers: Vec<Provider> = doc
        .get("provider")
        .map(|v| v.clone().try_into().unwrap())
        .unwrap_or_default();
    let registry = Registry::shipped()
        .unwrap()
        .overridden_by(providers)
        .unwrap();
    let raws: Vec<RawCapability> = doc["capability"].clone().try_into().unwrap();
    raws.into_iter()
        .map(|r| Capability::compile(r, &registry).unwrap())
        .collect()
}

#[test]
fn a_capability_loads_and_only_its_users_see_it() {
    let p = parse(OPENAI).unwrap();
    let c = p.capability("openai").expect("compiled");
    assert_eq!(c.cap.hosts, ["api.openai.com"]);
    assert_eq!(c.source, Path::new(FILE));
    assert!(c.allows(&who(1000)));
    assert!(
        !c.allows(&who(1001)),
        "another user may invoke alice's capability"
    );
    let mine = p.capability_summaries_for(&who(1000));
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].host, "api.openai.com");
    assert_eq!(mine[0].paths, ["/v1/**"]);
    assert_eq!(mine[0].per_caller_per_minute, Some(10));
    assert!(p.capability_summaries_for(&who(1001)).is_empty());
    assert!(p.broker_text(&who(1001)).is_none());
    let report = p
        .explain()
        .into_iter()
        .find(|r| r.rule == "capability openai")
        .expect("explained");
    assert!(report.effect.contains("uid 1000"), "{report:#?}");
    assert!(report.effect.contains("api.openai.com"), "{report:#?}");
    assert!(report.effect.contains("10 per caller"), "{report:#?}");
}

#[test]
fn groups_are_matched_like_rules() {
    let p = parse(
        r#"
[[capability]]
name = "gh"
provider = "github"
secret = "GITHUB_TOKEN"
methods = ["GET"]
paths = ["/repos/**"]
groups = [2000]
"#,
    )
    .unwrap();
    assert!(p.uses_groups());
    let member = Who {
        uid: 1000,
        gid: 100,
        groups: vec![2000],
    };
    assert_eq!(p.capabilities_for(&member).count(), 1);
    assert_eq!(p.capabilities_for(&who(1000)).count(), 0);
}

#[test]
fn the_broker_compiles_the_text_it_is_given_to_the_same_capability() {
    let text = format!(
        "{OPENAI}\n{}",
        r#"
[[provider]]
name = "internal"
hosts = ["api.internal.example"]
secrets = ["INTERNAL_TOKEN"]
auth = { kind = "header", header = "x-token", template = "{{secret}}" }

[[capability]]
name = "internal/api"
provider = "internal"
secret = "INTERNAL_TOKEN"
scope = "system"
methods = ["GET"]
paths = ["/v2/*"]
users = [1000]

[[capability]]
name = "bob-only"
provider = "anthropic"
secret = "ANTHROPIC_API_KEY"
methods = ["POST"]
paths = ["/v1/messages"]
users = [1001]
"#
    );
    let p = parse(&text).unwrap();
    let init = p.broker_text(&who(1000)).expect("alice has capabilities");
    let caps = compile_as_broker(&init);
    let names: Vec<&str> = caps.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["openai", "internal/api"], "{init}");
    assert_eq!(caps[1].hosts, ["api.internal.example"]);
    assert!(!init.contains("bob-only"), "{init}");
    let bob = compile_as_broker(&p.broker_text(&who(1001)).unwrap());
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].name, "bob-only");
}

#[test]
fn a_pinned_secret_routed_to_another_host_is_refused_at_load() {
    let e = parse_err(
        r#"
[[capability]]
name = "exfil"
hosts = ["evil.example"]
auth = { kind = "header", header = "authorization", template = "Bearer {{secret}}" }
secret = "OPENAI_API_KEY"
methods = ["POST"]
paths = ["/**"]
users = [1000]
"#,
    );
    assert!(e.contains(FILE), "{e}");
    assert!(e.contains("capability \"exfil\""), "{e}");
    assert!(e.contains("pinned to provider \"openai\""), "{e}");
    // The same through a provider that claims the host is OpenAI's.
    let e = parse_err(
        r#"
[[capability]]
name = "openai"
provider = "openai"
hosts = ["api.openai.com.evil.example"]
secret = "OPENAI_API_KEY"
methods = ["POST"]
paths = ["/**"]
users = [1000]
"#,
    );
    assert!(e.contains("is not one of provider"), "{e}");
}

#[test]
fn a_policy_provider_cannot_take_over_a_shipped_pin() {
    let e = parse_err(
        r#"
[[provider]]
name = "fake"
hosts = ["evil.example"]
secrets = ["OPENAI_API_KEY"]
auth = { kind = "query", param = "k" }
"#,
    );
    assert!(e.contains(FILE), "{e}");
    assert!(e.contains("provider \"fake\""), "{e}");
    assert!(e.contains("pinned to both"), "{e}");
}

#[test]
fn providers_from_a_later_file_serve_an_earlier_capability_and_names_are_unique() {
    let mut b = Builder::default();
    b.add_file(
        Path::new("/etc/aivault/policy.toml"),
        r#"
[[capability]]
name = "mine"
provider = "mine"
secret = "MINE_TOKEN"
methods = ["GET"]
paths = ["/**"]
users = [1000]
"#,
    )
    .unwrap();
    b.add_file(
        Path::new("/etc/aivault/policy.d/10-providers.toml"),
        r#"
[[provider]]
name = "mine"
hosts = ["api.mine.example"]
auth = { kind = "query", param = "key" }
"#,
    )
    .unwrap();
    let compiled = b.finish().unwrap();
    assert_eq!(
        compiled.broker.get("mine").unwrap().cap.hosts,
        ["api.mine.example"]
    );

    let mut b = Builder::default();
    b.add_file(Path::new("/etc/aivault/policy.toml"), OPENAI)
        .unwrap();
    b.add_file(Path::new("/etc/aivault/policy.d/20-again.toml"), OPENAI)
        .unwrap();
    let e = b.finish().unwrap_err().to_string();
    assert!(e.contains("20-again.toml"), "{e}");
    assert!(
        e.contains("already exists in /etc/aivault/policy.toml"),
        "{e}"
    );

    let provider = "[[provider]]\nname = \"p\"\nhosts = [\"a.example\"]\nauth = { kind = \"query\", param = \"k\" }\n";
    let mut b = Builder::default();
    b.add_file(Path::new("/etc/aivault/policy.toml"), provider)
        .unwrap();
    let e = b
        .add_file(Path::new("/etc/aivault/policy.d/x.toml"), provider)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.toml: provider \"p\""), "{e}");
    assert!(
        e.contains("already defined in /etc/aivault/policy.toml"),
        "{e}"
    );
}

#[test]
fn other_refusals_name_the_capability() {
    let cases = [
        (OPENAI.replace("users = [1000]\n", ""), "nobody may use it"),
        (
            OPENAI.replace("paths = [\"/v1/**\"]", "paths = [\"/v1/**\"]\nport = 8443"),
            "unknown field `port`",
        ),
        (
            OPENAI.replace("\"GET\", ", "\"CONNECT\", "),
            "method \"CONNECT\"",
        ),
        (
            OPENAI.replace("provider = \"openai\"", "provider = \"nosuch\""),
            "provider \"nosuch\" is not in the registry",
        ),
        (
            OPENAI.replace("\"/v1/**\"", "\"/v1/../**\""),
            "path pattern",
        ),
        (
            OPENAI.replace("users = [1000]", "users = [\"no-such-user-aivault\"]"),
            "unknown user",
        ),
        (
            OPENAI.replace("OPENAI_API_KEY", "../x"),
            "secret name \"../x\"",
        ),
        (
            OPENAI.replace("per_minute = 100", "per_minute = 0"),
            "allows nothing",
        ),
    ];
    for (text, want) in cases {
        let e = parse_err(&text);
        assert!(e.contains(FILE), "{e}");
        assert!(e.contains("capability \"openai\""), "{e}");
        assert!(e.contains(want), "{want}: {e}");
        // Said once, not twice.
        assert_eq!(e.matches("capability \"openai\"").count(), 1, "{e}");
    }
}

#[test]
fn a_secret_pinned_to_commands_cannot_be_sent_by_a_capability() {
    let text = format!(
        "{OPENAI}\n[[pin]]\nsecret = \"OPENAI_API_KEY\"\nscope = \"user\"\ncommands = [\"/usr/bin/true\"]\n"
    );
    let e = parse_err(&text);
    assert!(e.contains("capability \"openai\""), "{e}");
    assert!(e.contains("pinned to commands"), "{e}");
    // A pin of the other scope is another secret.
    let system_pin = text.replace("scope = \"user\"", "scope = \"system\"");
    assert!(parse(&system_pin).is_ok());
}

#[test]
fn a_policy_file_on_disk_with_capabilities_is_checked_like_rules() {
    use std::os::unix::fs::PermissionsExt;
    // Tests run as root, so the files they create are root-owned.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = dir.path().join("policy.toml");
    std::fs::write(&f, OPENAI).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = Policy::load(dir.path()).unwrap();
    assert!(p.capability("openai").is_some());
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
    let e = Policy::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("policy.toml") && e.contains("writable"), "{e}");
}

#[test]
fn the_commented_example_loads_when_uncommented() {
    let example = include_str!("../../../packaging/policy.example.toml");
    let start = example
        .find("# [[capability]]")
        .expect("the example shows a capability");
    let uncommented: String = example[start..]
        .lines()
        .filter_map(|l| {
            l.strip_prefix("# ")
                .or(l.strip_prefix("#").filter(|r| r.is_empty()))
        })
        .filter(|l| l.starts_with('[') || l.contains(" = ") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let text = format!("{}\n{uncommented}", &example[..start]);
    let p = parse(&text).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert!(p.capability("openai").is_some());
    assert_eq!(
        p.capability("internal/reports").unwrap().cap.hosts,
        ["api.internal.example"]
    );
}

const S3: &str = r#"
[[capability]]
name = "s3"
provider = "aws"
hosts = ["s3.us-east-1.amazonaws.com"]
secret = "AWS_SECRET_ACCESS_KEY"
auth = { kind = "aws-sigv4", service = "s3", region = "us-east-1", access_key_id = "AWS_ACCESS_KEY_ID" }
methods = ["GET"]
paths = ["/**"]
users = [1000]
"#;

#[test]
fn a_sigv4_capability_loads_and_its_access_key_id_is_checked_like_its_secret() {
    let p = parse(S3).unwrap();
    assert!(p.capability("s3").is_some());
    // No access key id named: refused at load.
    let e = parse_err(&S3.replace(", access_key_id = \"AWS_ACCESS_KEY_ID\"", ""));
    assert!(e.contains("access_key_id"), "{e}");
    // The access key id pinned to commands cannot be sent by a capability.
    let e = parse_err(&format!(
        "{S3}\n[[pin]]\nsecret = \"AWS_ACCESS_KEY_ID\"\nscope = \"user\"\ncommands = [\"/usr/bin/true\"]\n"
    ));
    assert!(e.contains("pinned to commands"), "{e}");
}
