//! `[[mcp_server]]`: what loads, what is refused (each error naming the
//! file and the entry), who may use which server, and the text a gateway
//! compiles again.

use std::path::Path;

use super::compile::Builder;
use super::*;

const FILE: &str = "/etc/aivault/policy.d/70-mcp.toml";

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

const FS: &str = r#"
[[mcp_server]]
name = "fs"
command = "/usr/bin/mcp-fs"
args = ["/srv/docs"]
users = [1000, "root"]
secrets = [{ name = "API_TOKEN" }]
[mcp_server.tools]
deny = ["*delete*"]
"#;

#[test]
fn a_stdio_server_loads_with_its_users_resolved() {
    let p = parse(FS).unwrap();
    let s = p.mcp_server("fs").expect("fs loaded");
    assert_eq!(s.users, vec![1000, 0]);
    assert_eq!(s.who_text, "uid 1000, user root (uid 0)");
    let (command, args) = s.command().unwrap();
    assert_eq!(command, Path::new("/usr/bin/mcp-fs"));
    assert_eq!(args, ["/srv/docs"]);
    assert_eq!(s.server.secrets[0].env, "API_TOKEN");
    assert!(p.explain().iter().any(|r| r.rule == "mcp_server fs"));
}

#[test]
fn only_the_listed_callers_get_a_server_and_its_text_compiles_again() {
    let p = parse(FS).unwrap();
    assert_eq!(p.mcp_servers_for(&who(1000)).count(), 1);
    assert_eq!(p.mcp_servers_for(&who(1001)).count(), 0);
    assert!(p.gateway_text(&who(1001)).is_none());
    let text = p.gateway_text(&who(1000)).unwrap();
    let servers = aivault_gateway::config::parse_servers(&text).unwrap();
    assert_eq!(servers.len(), 1);
    let loaded = &p.mcp_server("fs").unwrap().server;
    assert_eq!(format!("{:?}", servers[0]), format!("{loaded:?}"));
}

#[test]
fn a_group_entry_makes_groups_matter() {
    let p = parse(&FS.replace("users = [1000, \"root\"]", "groups = [4242]")).unwrap();
    assert!(p.uses_groups());
    let member = Who {
        uid: 1234,
        gid: 1234,
        groups: vec![4242],
    };
    assert_eq!(p.mcp_servers_for(&member).count(), 1);
    assert_eq!(p.mcp_servers_for(&who(1234)).count(), 0);
}

#[test]
fn the_gateway_checks_apply_and_name_the_entry() {
    let e = parse_err(&FS.replace("/usr/bin/mcp-fs", "mcp-fs"));
    assert!(e.contains(FILE) && e.contains("mcp_server \"fs\""), "{e}");
    let e = parse_err(&FS.replace("name = \"fs\"", "name = \"fs\"\nbogus = 1"));
    assert!(e.contains("bogus"), "{e}");
    assert!(!e.contains("mcp_server \"fs\": mcp_server"), "{e}");
}

#[test]
fn a_name_declared_twice_across_files_is_refused() {
    let mut b = Builder::default();
    b.add_file(Path::new("/etc/aivault/policy.toml"), FS)
        .unwrap();
    let e = b.add_file(Path::new(FILE), FS).unwrap_err().to_string();
    assert!(
        e.contains("already exists in /etc/aivault/policy.toml"),
        "{e}"
    );
}

#[test]
fn variable_names_get_the_daemons_checks_too() {
    // The gateway's own check lets MALLOC_* through; the daemon's does not.
    let e = parse_err(&FS.replace(
        "{ name = \"API_TOKEN\" }",
        "{ name = \"API_TOKEN\", env = \"MALLOC_ARENA_MAX\" }",
    ));
    assert!(e.contains("MALLOC_ARENA_MAX"), "{e}");
}

#[test]
fn secret_names_are_the_stores() {
    let e = parse_err(&FS.replace(
        "{ name = \"API_TOKEN\" }",
        "{ name = \"9lives\", env = \"T\" }",
    ));
    assert!(e.contains("9lives"), "{e}");
}

#[test]
fn nobody_and_unknown_users_are_refused() {
    let e = parse_err(&FS.replace("users = [1000, \"root\"]", ""));
    assert!(e.contains("mcp_server \"fs\""), "{e}");
    let e = parse_err(&FS.replace("\"root\"", "\"no-such-user-here\""));
    assert!(e.contains("no-such-user-here"), "{e}");
}

#[test]
fn a_pinned_secret_goes_only_to_a_pinned_command() {
    let pin = |cmd: &str| {
        format!(
            "{FS}\n[[pin]]\nsecret = \"API_TOKEN\"\nscope = \"system\"\ncommands = [\"{cmd}\"]\n"
        )
    };
    let e = parse_err(&pin("/usr/bin/other"));
    assert!(e.contains("pinned to other commands"), "{e}");
    parse(&pin("/usr/bin/mcp-fs")).unwrap();
}

const WEB: &str = r#"
[[capability]]
name = "example/mcp"
hosts = ["mcp.example.com"]
methods = ["POST", "GET", "DELETE"]
paths = ["/mcp"]
secret = "EXAMPLE_TOKEN"
auth = { kind = "header", header = "authorization", template = "Bearer {{secret}}" }
users = [1000]

[[mcp_server]]
name = "web"
url = "https://mcp.example.com/mcp"
capability = "example/mcp"
users = [1000]
"#;

#[test]
fn a_url_server_loads_through_a_capability_that_pins_its_host_and_path() {
    let p = parse(WEB).unwrap();
    let s = p.mcp_server("web").expect("web loaded");
    assert!(s.command().is_none());
    let report = p
        .explain()
        .into_iter()
        .find(|r| r.rule == "mcp_server web")
        .unwrap();
    assert!(report.effect.contains("example/mcp"), "{}", report.effect);
    assert!(
        !report.warnings.iter().any(|w| w.contains("does not admit")),
        "{:?}",
        report.warnings
    );
    // A user of the server the capability does not list is warned of.
    let (head, _) = WEB.rsplit_once("users = [1000]").unwrap();
    let p = parse(&format!("{head}users = [1000, 1001]\n")).unwrap();
    let report = p
        .explain()
        .into_iter()
        .find(|r| r.rule == "mcp_server web")
        .unwrap();
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("does not admit uid 1001")),
        "{:?}",
        report.warnings
    );
    let text = p.gateway_text(&who(1000)).unwrap();
    assert!(aivault_gateway::config::parse_servers(&text).is_ok());
}

#[test]
fn a_url_server_whose_capability_cannot_carry_it_is_refused() {
    for (from, to, why) in [
        (
            "capability = \"example/mcp\"\nusers",
            "capability = \"other\"\nusers",
            "capability \"other\" is not defined",
        ),
        (
            "url = \"https://mcp.example.com/mcp\"",
            "url = \"https://elsewhere.example.com/mcp\"",
            "sends its requests to mcp.example.com, not elsewhere.example.com",
        ),
        (
            "url = \"https://mcp.example.com/mcp\"",
            "url = \"https://mcp.example.com/other\"",
            "does not allow the path /other",
        ),
        (
            "methods = [\"POST\", \"GET\", \"DELETE\"]",
            "methods = [\"GET\"]",
            "does not allow POST",
        ),
        (
            "capability = \"example/mcp\"\nusers",
            "users",
            "needs capability",
        ),
    ] {
        let e = parse_err(&WEB.replace(from, to));
        assert!(e.contains(why), "{to}: {e}");
        assert!(e.contains("mcp_server \"web\""), "{e}");
        assert!(e.contains(FILE), "{e}");
    }
}
