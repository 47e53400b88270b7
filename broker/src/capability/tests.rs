use super::*;

fn raw(toml_text: &str) -> RawCapability {
    toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
}

fn compile(toml_text: &str) -> Result<Capability, CapabilityError> {
    Capability::compile(raw(toml_text), &Registry::shipped().unwrap())
}

const CHAT: &str = r#"
name = "openai/chat"
provider = "openai"
methods = ["POST"]
paths = ["/v1/chat/completions", "/v1/models/*"]
secret = "OPENAI_API_KEY"
"#;

fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        method: method.into(),
        target: target.into(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body_len: 10,
    }
}

#[test]
fn a_provider_capability_sends_its_credential_to_its_host_only() {
    let c = compile(CHAT).unwrap();
    assert_eq!(c.hosts, ["api.openai.com"]);
    let p = c
        .plan(
            &req(
                "POST",
                "/v1/chat/completions",
                &[("content-type", "application/json")],
            ),
            b"sk-test",
        )
        .unwrap();
    assert_eq!(p.host, "api.openai.com");
    assert_eq!(p.target, "/v1/chat/completions");
    assert_eq!(
        p.headers,
        [
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".to_string(), "Bearer sk-test".to_string())
        ]
    );
    assert!(!format!("{p:?}").contains("sk-test"));
}

#[test]
fn every_request_guard_applies() {
    let c = compile(CHAT).unwrap();
    let s = b"sk-test";
    assert_eq!(
        c.plan(&req("GET", "/v1/chat/completions", &[]), s),
        Err(RequestError::Method)
    );
    assert_eq!(
        c.plan(&req("POST", "/v1/files", &[]), s),
        Err(RequestError::PathNotAllowed)
    );
    assert_eq!(
        c.plan(&req("POST", "/v1/models/../../admin", &[]), s),
        Err(RequestError::Path(PathError::DotSegment))
    );
    assert!(matches!(
        c.plan(
            &req(
                "POST",
                "/v1/chat/completions",
                &[("Authorization", "Bearer mine")]
            ),
            s
        ),
        Err(RequestError::Header(HeaderError::Credential(_)))
    ));
    let mut big = req("POST", "/v1/chat/completions", &[]);
    big.body_len = c.max_request_bytes + 1;
    assert!(matches!(
        c.plan(&big, s),
        Err(RequestError::BodyTooLarge(_))
    ));
}

#[test]
fn query_and_path_credentials_are_placed_and_guarded() {
    let maps = compile(
        r#"
name = "maps"
provider = "google-maps"
methods = ["GET"]
paths = ["/maps/api/geocode/json"]
secret = "GOOGLE_MAPS_API_KEY"
"#,
    )
    .unwrap();
    let p = maps
        .plan(&req("GET", "/maps/api/geocode/json?address=x", &[]), b"k&1")
        .unwrap();
    assert_eq!(p.target, "/maps/api/geocode/json?address=x&key=k%261");
    assert_eq!(
        maps.plan(&req("GET", "/maps/api/geocode/json?key=mine", &[]), b"k"),
        Err(RequestError::AuthParam)
    );
    let bot = compile(
        r#"
name = "telegram"
provider = "telegram"
methods = ["POST"]
paths = ["/sendMessage"]
secret = "TELEGRAM_BOT_TOKEN"
"#,
    )
    .unwrap();
    let p = bot
        .plan(&req("POST", "/sendMessage", &[]), b"123:AB")
        .unwrap();
    assert_eq!(p.target, "/bot123%3AAB/sendMessage");
}

#[test]
fn capabilities_that_would_leak_are_refused_at_load() {
    // A pinned secret routed to another host.
    let e = compile(
        r#"
name = "fake"
hosts = ["evil.example"]
methods = ["POST"]
paths = ["/**"]
secret = "OPENAI_API_KEY"
auth = { kind = "header", header = "authorization", template = "Bearer {{secret}}" }
"#,
    );
    assert!(matches!(e, Err(CapabilityError::Pinning(..))), "{e:?}");
    // A provider's name with a host of its own.
    let e = compile(
        r#"
name = "fake"
provider = "openai"
hosts = ["api.openai.com", "evil.example"]
methods = ["POST"]
paths = ["/**"]
secret = "MY_KEY"
"#,
    );
    assert!(
        matches!(e, Err(CapabilityError::HostOutsideProvider(..))),
        "{e:?}"
    );
    for (bad, what) in [
        (CHAT.replace("\"POST\"", "\"TRACE\""), "method"),
        (
            CHAT.replace("\"/v1/chat/completions\", ", "\"v1/x\", "),
            "pattern",
        ),
        (CHAT.replace("openai/chat", "OpenAI Chat"), "name"),
        (format!("{CHAT}max_request_bytes = 0\n"), "limit"),
        (format!("{CHAT}rate = {{ per_minute = 0 }}\n"), "rate"),
        (
            CHAT.replace("provider = \"openai\"", "provider = \"nope\""),
            "provider",
        ),
    ] {
        assert!(compile(&bad).is_err(), "{what}: {bad}");
    }
    // Unknown keys are refused by the schema itself.
    assert!(toml::from_str::<RawCapability>(&format!("{CHAT}host_from_caller = true\n")).is_err());
}

#[test]
fn the_stand_in_key_of_an_unmodified_sdk_is_replaced_and_any_other_key_refused() {
    let c = compile(CHAT).unwrap();
    let p = c
        .plan(
            &req(
                "POST",
                "/v1/chat/completions",
                &[("Authorization", "Bearer aivault")],
            ),
            b"sk-test",
        )
        .unwrap();
    assert_eq!(
        p.headers,
        [("authorization".to_string(), "Bearer sk-test".to_string())]
    );
    for other in [
        "Bearer sk-mine",
        "Bearer aivault2",
        "Basic aivault",
        "aivault",
    ] {
        assert!(
            matches!(
                c.plan(
                    &req("POST", "/v1/chat/completions", &[("Authorization", other)]),
                    b"sk-test"
                ),
                Err(RequestError::Header(HeaderError::Credential(_)))
            ),
            "{other}"
        );
    }
    // Only the capability's own header: the stand-in elsewhere is refused.
    assert!(matches!(
        c.plan(
            &req("POST", "/v1/chat/completions", &[("x-api-key", "aivault")]),
            b"sk-test"
        ),
        Err(RequestError::Header(HeaderError::Credential(_)))
    ));
}

fn sigv4_cap(auth: &str) -> Result<Vec<Capability>, crate::serve::ServeError> {
    crate::serve::compile(&format!(
        r#"
[[capability]]
name = "s3"
provider = "aws"
hosts = ["s3.us-east-1.amazonaws.com"]
secret = "AWS_SECRET_ACCESS_KEY"
methods = ["GET"]
paths = ["/**"]
auth = {auth}
"#
    ))
}

#[test]
fn sigv4_capabilities_are_checked_at_load() {
    let caps = sigv4_cap(
        r#"{ kind = "aws-sigv4", service = "s3", region = "us-east-1", access_key_id = "AWS_ACCESS_KEY_ID" }"#,
    )
    .unwrap();
    assert_eq!(
        caps[0].auth.extra_secrets(),
        vec![(crate::auth::ACCESS_KEY_ID, "AWS_ACCESS_KEY_ID")]
    );
    // No access key id named: refused.
    let e = sigv4_cap(r#"{ kind = "aws-sigv4", service = "s3", region = "us-east-1" }"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("access_key_id"), "{e}");
    // The provider's auth alone names no service or region.
    let e = crate::serve::compile(
        r#"
[[capability]]
name = "s3"
provider = "aws"
hosts = ["s3.us-east-1.amazonaws.com"]
secret = "AWS_SECRET_ACCESS_KEY"
methods = ["GET"]
paths = ["/**"]
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("service and region"), "{e}");
    // A bad region, the secret named twice, a pinned key id sent elsewhere.
    assert!(sigv4_cap(
        r#"{ kind = "aws-sigv4", service = "s3", region = "us east", access_key_id = "AWS_ACCESS_KEY_ID" }"#
    )
    .is_err());
    let e = sigv4_cap(
        r#"{ kind = "aws-sigv4", service = "s3", region = "us-east-1", access_key_id = "AWS_SECRET_ACCESS_KEY" }"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("access key id"), "{e}");
    let e = crate::serve::compile(
        r#"
[[capability]]
name = "elsewhere"
hosts = ["api.example.com"]
secret = "MY_KEY"
methods = ["GET"]
paths = ["/**"]
auth = { kind = "aws-sigv4", service = "s3", region = "us-east-1", access_key_id = "AWS_ACCESS_KEY_ID" }
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("AWS_ACCESS_KEY_ID"), "{e}");
}

#[test]
fn sigv4_plans_carry_no_credential_and_drop_the_callers_signing_headers() {
    let caps = sigv4_cap(
        r#"{ kind = "aws-sigv4", service = "s3", region = "us-east-1", access_key_id = "AWS_ACCESS_KEY_ID" }"#,
    )
    .unwrap();
    let req = Request {
        method: "GET".into(),
        target: "/bucket/key".into(),
        headers: vec![
            ("x-amz-date".into(), "19990101T000000Z".into()),
            ("x-amz-content-sha256".into(), "UNSIGNED-PAYLOAD".into()),
            ("x-amz-meta-a".into(), "b".into()),
        ],
        body_len: 0,
    };
    let plan = caps[0].plan(&req, b"the-secret").unwrap();
    assert_eq!(plan.target, "/bucket/key");
    assert_eq!(
        plan.headers,
        vec![("x-amz-meta-a".to_owned(), "b".to_owned())]
    );
}

const OAUTH: &str = r#"
name = "api"
hosts = ["api.example.com", "auth.example.com"]
secret = "EXAMPLE_ACCESS_TOKEN"
methods = ["GET"]
paths = ["/v1/**"]
auth = { kind = "oauth2", grant = "refresh-token", token_url = "https://auth.example.com/oauth/token", client_id = "cli-1", refresh_token = "EXAMPLE_REFRESH", scope = "read write" }
"#;

#[test]
fn an_oauth2_capability_sends_its_access_token_as_bearer() {
    let cap = compile(OAUTH).unwrap();
    assert_eq!(cap.auth.token_host().as_deref(), Some("auth.example.com"));
    let plan = cap.plan(&req("GET", "/v1/me", &[]), b"at-123").unwrap();
    assert!(plan
        .headers
        .contains(&("authorization".into(), "Bearer at-123".into())));
    // The caller cannot send its own.
    assert!(cap
        .plan(
            &req("GET", "/v1/me", &[("Authorization", "Bearer x")]),
            b"at-123"
        )
        .is_err());
}

#[test]
fn oauth2_kinds_that_would_send_material_elsewhere_or_are_incomplete_are_refused_at_load() {
    let with = |from: &str, to: &str| compile(&OAUTH.replace(from, to));
    // The token endpoint on a host the capability does not pin.
    let e = with("https://auth.example.com/", "https://evil.example.net/").unwrap_err();
    assert!(
        matches!(e, CapabilityError::TokenHost(_, ref h) if h == "evil.example.net"),
        "{e}"
    );
    for bad in [
        "http://auth.example.com/oauth/token",
        "https://auth.example.com:8443/oauth/token",
        "https://user@auth.example.com/oauth/token",
        "https://auth.example.com/oauth/token?x=1",
        "https://auth.example.com/oauth/../token",
    ] {
        let e = with("https://auth.example.com/oauth/token", bad).unwrap_err();
        assert!(
            matches!(e, CapabilityError::Auth(_, AuthError::TokenUrl(_))),
            "{bad}: {e}"
        );
    }
    // refresh-token without its refresh token.
    assert!(with(", refresh_token = \"EXAMPLE_REFRESH\"", "").is_err());
    // client-credentials needs a client secret and takes no refresh token.
    let cc = OAUTH.replace("refresh-token", "client-credentials");
    assert!(compile(&cc).is_err());
    assert!(compile(&cc.replace("refresh_token =", "client_secret =")).is_ok());
    let no_client = cc
        .replace("refresh_token =", "client_secret =")
        .replace("client_id = \"cli-1\"", "client_id = \"\"");
    assert!(compile(&no_client).is_err());
    // A provider's own host is allowed for the token endpoint.
    let gh = r#"
name = "gh"
provider = "github"
secret = "GH_APP_TOKEN"
methods = ["GET"]
paths = ["/**"]
auth = { kind = "oauth2", grant = "client-credentials", token_url = "https://api.github.com/app/token", client_id = "c", client_secret = "GH_APP_SECRET" }
"#;
    compile(gh).unwrap();
}
