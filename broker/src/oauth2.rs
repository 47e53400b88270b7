//! The OAuth2 token request the broker makes itself when the daemon grants
//! refresh material instead of a stored access token: a form `POST` to the
//! capability's `token_url` (its host pinned and judged like any upstream,
//! over [`crate::upstream`]), client authentication by HTTP Basic when
//! there is a client secret (`client_id` in the form otherwise). The
//! endpoint's answer never reaches the caller, and no error repeats it.

use aivault_proto::SecretBytes;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, StatusCode};

use crate::auth::{token_url_parts, Auth, OAuth2Grant, CLIENT_SECRET, REFRESH_TOKEN};
use crate::refusal::{refuse, Refusal};
use crate::shared::Shared;

/// The most of a token endpoint's answer that is read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
const TOKEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the token endpoint issued.
pub(crate) struct Issued {
    pub(crate) access_token: SecretBytes,
    pub(crate) expires_in_s: Option<u64>,
    pub(crate) refresh_token: Option<SecretBytes>,
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn material<'a>(extra: &'a [(String, SecretBytes)], name: &str) -> Option<&'a [u8]> {
    extra
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_bytes())
}

/// The form body and the `Authorization` value (if any) of a token request.
pub(crate) fn token_request(
    auth: &Auth,
    extra: &[(String, SecretBytes)],
) -> Result<(Vec<u8>, Option<String>), Refusal> {
    let Auth::Oauth2 {
        grant,
        client_id,
        scope,
        ..
    } = auth
    else {
        return Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not an OAuth2 capability",
        ));
    };
    let missing = |what: &str| {
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the grant lacks the OAuth2 {what}"),
        )
    };
    let mut form = String::new();
    match grant {
        OAuth2Grant::ClientCredentials => form.push_str("grant_type=client_credentials"),
        OAuth2Grant::RefreshToken => {
            let rt = material(extra, REFRESH_TOKEN).ok_or_else(|| missing("refresh token"))?;
            form.push_str("grant_type=refresh_token&refresh_token=");
            form.push_str(&form_encode(rt));
        }
    }
    if let Some(s) = scope {
        form.push_str("&scope=");
        form.push_str(&form_encode(s.as_bytes()));
    }
    let basic = match material(extra, CLIENT_SECRET) {
        Some(cs) => {
            // RFC 6749 2.3.1: both parts form-encoded, then base64.
            let pair = format!("{}:{}", form_encode(client_id.as_bytes()), form_encode(cs));
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        }
        None if *grant == OAuth2Grant::ClientCredentials => {
            return Err(missing("client secret"));
        }
        None => {
            form.push_str("&client_id=");
            form.push_str(&form_encode(client_id.as_bytes()));
            None
        }
    };
    Ok((form.into_bytes(), basic))
}

/// Asks the capability's token endpoint for a new access token.
pub(crate) async fn refresh(
    shared: &Shared,
    auth: &Auth,
    extra: &[(String, SecretBytes)],
) -> Result<Issued, Refusal> {
    let Auth::Oauth2 { token_url, .. } = auth else {
        return Err(refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "not an OAuth2 capability",
        ));
    };
    let (host, target) = token_url_parts(token_url)
        .map_err(|e| refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (form, basic) = token_request(auth, extra)?;
    let mut sender = shared
        .upstream
        .connect(&host)
        .await
        .map_err(|e| refuse(StatusCode::BAD_GATEWAY, format!("token endpoint: {e}")))?;
    let mut req = Request::builder()
        .method("POST")
        .uri(target.as_str())
        .header(hyper::header::HOST, host.as_str())
        .header(
            hyper::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::ACCEPT_ENCODING, "identity")
        .header(hyper::header::CONTENT_LENGTH, form.len());
    if let Some(b) = &basic {
        req = req.header(hyper::header::AUTHORIZATION, b.as_str());
    }
    let req = req.body(Full::new(Bytes::from(form))).map_err(|_| {
        refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the token request cannot be built",
        )
    })?;
    let failed = |why: &str| refuse(StatusCode::BAD_GATEWAY, format!("token endpoint: {why}"));
    let resp = tokio::time::timeout(TOKEN_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| failed("no answer in time"))?
        .map_err(|_| failed("the request failed"))?;
    let status = resp.status();
    let body = tokio::time::timeout(
        TOKEN_TIMEOUT,
        Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE).collect(),
    )
    .await
    .map_err(|_| failed("no answer in time"))?
    .map_err(|_| failed("the answer is unreadable or too large"))?
    .to_bytes();
    if !status.is_success() {
        // Its body may echo material: only the status is told.
        return Err(failed(&format!("status {}", status.as_u16())));
    }
    parse(&body).map_err(failed)
}

/// The fields of a token endpoint's JSON answer (RFC 6749 5.1).
pub(crate) fn parse(body: &[u8]) -> Result<Issued, &'static str> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "the answer is not JSON")?;
    let access = v
        .get("access_token")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
        .ok_or("the answer has no access_token")?;
    if let Some(t) = v.get("token_type") {
        if !t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
            return Err("the token is not a bearer token");
        }
    }
    let expires_in_s = match v.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(e) => Some(e.as_u64().ok_or("expires_in is not a number of seconds")?),
    };
    let refresh_token = match v.get("refresh_token") {
        None | Some(serde_json::Value::Null) => None,
        Some(r) => Some(SecretBytes::new(
            r.as_str()
                .filter(|r| !r.is_empty())
                .ok_or("refresh_token is not a string")?
                .as_bytes()
                .to_vec(),
        )),
    };
    Ok(Issued {
        access_token: SecretBytes::new(access.as_bytes().to_vec()),
        expires_in_s,
        refresh_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(grant: &str, secret: bool) -> Auth {
        let cs = if secret {
            "\nclient_secret = \"CS\""
        } else {
            ""
        };
        let rt = if grant == "refresh-token" {
            "\nrefresh_token = \"RT\""
        } else {
            ""
        };
        toml::from_str::<toml::Value>(&format!(
            "kind = \"oauth2\"\ngrant = \"{grant}\"\ntoken_url = \"https://a.example/t\"\nclient_id = \"id:1\"\nscope = \"a b\"{cs}{rt}"
        ))
        .unwrap()
        .try_into()
        .unwrap()
    }

    fn m(pairs: &[(&str, &[u8])]) -> Vec<(String, SecretBytes)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), SecretBytes::new(v.to_vec())))
            .collect()
    }

    #[test]
    fn the_form_and_client_authentication_follow_the_grant() {
        let (form, basic) = token_request(
            &auth("client-credentials", true),
            &m(&[(CLIENT_SECRET, b"s&=")]),
        )
        .unwrap();
        assert_eq!(form, b"grant_type=client_credentials&scope=a%20b");
        // base64("id%3A1:s%26%3D")
        assert_eq!(basic.as_deref(), Some("Basic aWQlM0ExOnMlMjYlM0Q="));
        let (form, basic) = token_request(
            &auth("refresh-token", false),
            &m(&[(REFRESH_TOKEN, b"r/1")]),
        )
        .unwrap();
        assert_eq!(
            form,
            b"grant_type=refresh_token&refresh_token=r%2F1&scope=a%20b&client_id=id%3A1"
        );
        assert!(basic.is_none());
        assert!(token_request(&auth("refresh-token", false), &[]).is_err());
        assert!(token_request(&auth("client-credentials", true), &[]).is_err());
    }

    #[test]
    fn only_a_bearer_answer_with_an_access_token_is_taken() {
        let ok = parse(
            br#"{"access_token":"at","token_type":"Bearer","expires_in":60,"refresh_token":"rt2"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token.as_bytes(), b"at");
        assert_eq!(ok.expires_in_s, Some(60));
        assert_eq!(ok.refresh_token.unwrap().as_bytes(), b"rt2");
        for bad in [
            &br#"{"token_type":"bearer"}"#[..],
            br#"{"access_token":"at","token_type":"mac"}"#,
            br#"{"access_token":"at","expires_in":"soon"}"#,
            b"access_token=at",
        ] {
            assert!(parse(bad).is_err());
        }
    }
}
