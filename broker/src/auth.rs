//! How a credential is put on a request. A template names where the secret
//! goes (`Bearer {{secret}}`); rendering checks the secret can go there
//! without changing the request's shape: a secret holding CR or LF would
//! add headers, one holding `/` or `?` would move the path. Query and path
//! placements are percent-encoded; nothing here ever logs or returns the
//! secret in an error.

use base64::Engine as _;
use serde::Deserialize;
use thiserror::Error;

const PLACEHOLDER: &str = "{{secret}}";

/// An auth kind as policy and the registry write it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Auth {
    /// `header = "authorization", template = "Bearer {{secret}}"`.
    Header { header: String, template: String },
    /// `?param=<secret>` added to the query.
    Query { param: String },
    /// `Authorization: Basic base64(username:password)`; either template
    /// may hold the secret.
    Basic { username: String, password: String },
    /// A prefix put before the caller's path (`/bot{{secret}}`).
    Path { template: String },
    /// AWS Signature Version 4: the request is signed when it is sent
    /// ([`crate::sigv4`]). The capability's secret is the secret access
    /// key; `access_key_id` names a second secret, read from the same
    /// scope. A provider may leave `service` and `region` out; a
    /// capability must name both.
    AwsSigv4 {
        service: Option<String>,
        region: Option<String>,
        access_key_id: String,
    },
    /// OAuth2: the capability's secret is the access token, sent as
    /// `Authorization: Bearer`; when it is missing or expired the broker
    /// gets a new one from `token_url` with the client secret
    /// (`client-credentials`) or the refresh token (`refresh-token`), both
    /// named vault secrets, and the daemon stores what it issued.
    Oauth2 {
        grant: OAuth2Grant,
        token_url: String,
        client_id: String,
        client_secret: Option<String>,
        refresh_token: Option<String>,
        scope: Option<String>,
    },
}

/// The OAuth2 grant used to obtain an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OAuth2Grant {
    ClientCredentials,
    RefreshToken,
}

/// The roles a grant's further secrets carry in `ToBroker::Grant`'s
/// `extra` ([`Auth::extra_secrets`], [`Auth::refresh_secrets`]).
pub const ACCESS_KEY_ID: &str = "access_key_id";
pub const CLIENT_SECRET: &str = "client_secret";
pub const REFRESH_TOKEN: &str = "refresh_token";

/// Why an auth kind or a rendering was refused. Never holds the secret.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("auth template {0:?} must hold {PLACEHOLDER} exactly once")]
    Placeholder(String),
    #[error("auth header name {0:?} is not a valid header name")]
    HeaderName(String),
    #[error("query parameter name {0:?} is not a plain name")]
    ParamName(String),
    #[error("the path template must start with '/' and hold no '/' after its first character around the secret")]
    PathTemplate,
    #[error("the secret holds bytes that cannot go in a header (control characters or non-ASCII)")]
    SecretNotHeaderSafe,
    #[error("aws-sigv4: service {0:?} must be 1-64 characters of a-z, 0-9 and '-'")]
    Service(String),
    #[error("aws-sigv4: region {0:?} must be 1-32 characters of a-z, 0-9 and '-'")]
    Region(String),
    #[error("aws-sigv4: access_key_id {0:?} must name a secret (1-128 characters of A-Z, a-z, 0-9, '_', '-', '.')")]
    AccessKeyName(String),
    #[error("aws-sigv4: a capability must name its service and region")]
    Sigv4Scope,
    #[error(
        "oauth2 token_url {0:?} must be https://HOST/path with no port, user, query or fragment"
    )]
    TokenUrl(String),
    #[error("oauth2 {0} is missing or not a secret name")]
    OAuth2Secret(&'static str),
    #[error("oauth2 {0} must be printable ASCII of at most 1024 characters")]
    OAuth2Text(&'static str),
    #[error("the client-credentials grant takes no refresh_token")]
    OAuth2Refresh,
}

/// Where the rendered credential goes on the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    Header {
        name: String,
        value: String,
    },
    QueryParam {
        name: String,
        value: String,
    },
    PathPrefix(String),
    /// Nothing is placed now: the request is signed as it is sent.
    Signed,
}

impl Auth {
    /// Checks an auth kind at policy load, before any secret is near it.
    pub fn validate(&self) -> Result<(), AuthError> {
        match self {
            Auth::Header { header, template } => {
                if !is_token(header) {
                    return Err(AuthError::HeaderName(header.clone()));
                }
                once(template)
            }
            Auth::Query { param } => {
                if param.is_empty()
                    || !param
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(AuthError::ParamName(param.clone()));
                }
                Ok(())
            }
            Auth::Basic { username, password } => {
                let n =
                    username.matches(PLACEHOLDER).count() + password.matches(PLACEHOLDER).count();
                // A ':' in the user name would move the split of the pair.
                if n != 1 || username.contains(':') {
                    return Err(AuthError::Placeholder(format!("{username}:{password}")));
                }
                Ok(())
            }
            Auth::Path { template } => {
                once(template)?;
                let around = template.replace(PLACEHOLDER, "");
                if !template.starts_with('/') || around[1..].contains(['/', '?', '#', '%', '\\']) {
                    return Err(AuthError::PathTemplate);
                }
                Ok(())
            }
            Auth::AwsSigv4 {
                service,
                region,
                access_key_id,
            } => {
                if let Some(s) = service.as_deref().filter(|s| !scope_word(s, 64)) {
                    return Err(AuthError::Service(s.to_owned()));
                }
                if let Some(r) = region.as_deref().filter(|r| !scope_word(r, 32)) {
                    return Err(AuthError::Region(r.to_owned()));
                }
                let plain = !access_key_id.is_empty()
                    && access_key_id.len() <= 128
                    && access_key_id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
                if !plain {
                    return Err(AuthError::AccessKeyName(access_key_id.clone()));
                }
                Ok(())
            }
            Auth::Oauth2 {
                grant,
                token_url,
                client_id,
                client_secret,
                refresh_token,
                scope,
            } => {
                token_url_parts(token_url)?;
                if client_id.is_empty() || !oauth2_text(client_id) {
                    return Err(AuthError::OAuth2Text("client_id"));
                }
                if scope.as_deref().is_some_and(|s| !oauth2_text(s)) {
                    return Err(AuthError::OAuth2Text("scope"));
                }
                let named = |n: &Option<String>| n.as_deref().is_some_and(secret_name);
                match grant {
                    OAuth2Grant::ClientCredentials => {
                        if !named(client_secret) {
                            return Err(AuthError::OAuth2Secret("client_secret"));
                        }
                        if refresh_token.is_some() {
                            return Err(AuthError::OAuth2Refresh);
                        }
                    }
                    OAuth2Grant::RefreshToken => {
                        if !named(refresh_token) {
                            return Err(AuthError::OAuth2Secret("refresh_token"));
                        }
                        if client_secret.is_some() && !named(client_secret) {
                            return Err(AuthError::OAuth2Secret("client_secret"));
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Checks what a capability (rather than a provider) must say in full.
    pub fn validate_for_capability(&self) -> Result<(), AuthError> {
        self.validate()?;
        match self {
            Auth::AwsSigv4 {
                service, region, ..
            } if service.is_none() || region.is_none() => Err(AuthError::Sigv4Scope),
            _ => Ok(()),
        }
    }

    /// The secrets besides the capability's own that every grant carries,
    /// as `(role, vault name)` (`aws-sigv4`: its access key id); the role
    /// names each in `ToBroker::Grant`'s `extra`.
    pub fn extra_secrets(&self) -> Vec<(&'static str, &str)> {
        match self {
            Auth::AwsSigv4 { access_key_id, .. } => vec![(ACCESS_KEY_ID, access_key_id.as_str())],
            _ => Vec::new(),
        }
    }

    /// The refresh material of an `oauth2` kind, as `(role, vault name)`,
    /// granted in place of a missing or expired access token.
    pub fn refresh_secrets(&self) -> Vec<(&'static str, &str)> {
        match self {
            Auth::Oauth2 {
                client_secret,
                refresh_token,
                ..
            } => [
                (CLIENT_SECRET, client_secret),
                (REFRESH_TOKEN, refresh_token),
            ]
            .into_iter()
            .filter_map(|(role, n)| n.as_deref().map(|n| (role, n)))
            .collect(),
            _ => Vec::new(),
        }
    }

    /// The vault name of the secret a grant's `extra` carries as `role`.
    pub fn secret_of_role(&self, role: &str) -> Option<&str> {
        self.extra_secrets()
            .into_iter()
            .chain(self.refresh_secrets())
            .find(|(r, _)| *r == role)
            .map(|(_, n)| n)
    }

    /// The host of an OAuth2 kind's token endpoint.
    pub fn token_host(&self) -> Option<String> {
        match self {
            Auth::Oauth2 { token_url, .. } => token_url_parts(token_url).ok().map(|(h, _)| h),
            _ => None,
        }
    }

    /// The name of the header this kind writes, which callers may not send.
    pub fn own_header(&self) -> Option<&str> {
        match self {
            Auth::Header { header, .. } => Some(header),
            Auth::Basic { .. } | Auth::AwsSigv4 { .. } | Auth::Oauth2 { .. } => {
                Some("authorization")
            }
            _ => None,
        }
    }

    /// Renders the credential for one request.
    pub fn render(&self, secret: &[u8]) -> Result<Placement, AuthError> {
        self.validate()?;
        match self {
            Auth::Header { header, template } => Ok(Placement::Header {
                name: header.to_ascii_lowercase(),
                value: template.replace(PLACEHOLDER, header_safe(secret)?),
            }),
            Auth::Query { param } => Ok(Placement::QueryParam {
                name: param.clone(),
                value: percent_encode(secret),
            }),
            Auth::Basic { username, password } => {
                // Bytes of the secret go into base64 as they are.
                let mut pair = Vec::new();
                for (i, part) in [username, password].into_iter().enumerate() {
                    if i == 1 {
                        pair.push(b':');
                    }
                    match part.split_once(PLACEHOLDER) {
                        Some((a, b)) => {
                            pair.extend_from_slice(a.as_bytes());
                            pair.extend_from_slice(secret);
                            pair.extend_from_slice(b.as_bytes());
                        }
                        None => pair.extend_from_slice(part.as_bytes()),
                    }
                }
                let value = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(&pair)
                );
                Ok(Placement::Header {
                    name: "authorization".into(),
                    value,
                })
            }
            Auth::Path { template } => Ok(Placement::PathPrefix(
                template.replace(PLACEHOLDER, &percent_encode(secret)),
            )),
            Auth::AwsSigv4 { .. } => Ok(Placement::Signed),
            Auth::Oauth2 { .. } => Ok(Placement::Header {
                name: "authorization".into(),
                value: format!("Bearer {}", header_safe(secret)?),
            }),
        }
    }
}

/// A credential-scope word: lowercase letters, digits, inner '-'.
fn scope_word(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `https://HOST/path` split into the host (lower case) and the target.
pub fn token_url_parts(url: &str) -> Result<(String, String), AuthError> {
    let bad = || AuthError::TokenUrl(url.to_owned());
    let rest = url.strip_prefix("https://").ok_or_else(bad)?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = host.to_ascii_lowercase();
    if !crate::host::valid_host(&host) || host.starts_with("*.") || path.contains(['?', '#']) {
        return Err(bad());
    }
    let checked = crate::path::check(path).map_err(|_| bad())?;
    if checked.path != path {
        return Err(bad());
    }
    Ok((host, path.to_owned()))
}

fn oauth2_text(s: &str) -> bool {
    s.len() <= 1024 && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A vault secret's name as policy may write it.
fn secret_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn once(template: &str) -> Result<(), AuthError> {
    if template.matches(PLACEHOLDER).count() != 1 {
        return Err(AuthError::Placeholder(template.to_owned()));
    }
    Ok(())
}

fn header_safe(secret: &[u8]) -> Result<&str, AuthError> {
    if secret.is_empty()
        || !secret
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) || b == b' ')
    {
        return Err(AuthError::SecretNotHeaderSafe);
    }
    std::str::from_utf8(secret).map_err(|_| AuthError::SecretNotHeaderSafe)
}

/// Everything but RFC 3986 unreserved characters, escaped.
fn percent_encode(bytes: &[u8]) -> String {
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

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_put_the_secret_where_they_say() {
        let bearer = Auth::Header {
            header: "Authorization".into(),
            template: "Bearer {{secret}}".into(),
        };
        assert_eq!(
            bearer.render(b"sk-abc").unwrap(),
            Placement::Header {
                name: "authorization".into(),
                value: "Bearer sk-abc".into()
            }
        );
        let q = Auth::Query {
            param: "key".into(),
        };
        assert_eq!(
            q.render(b"a/b?c&d=e").unwrap(),
            Placement::QueryParam {
                name: "key".into(),
                value: "a%2Fb%3Fc%26d%3De".into()
            }
        );
        let basic = Auth::Basic {
            username: "api".into(),
            password: "{{secret}}".into(),
        };
        assert_eq!(
            basic.render(b"key-1").unwrap(),
            Placement::Header {
                name: "authorization".into(),
                value: "Basic YXBpOmtleS0x".into()
            }
        );
        let path = Auth::Path {
            template: "/bot{{secret}}".into(),
        };
        assert_eq!(
            path.render(b"123:AB/..").unwrap(),
            Placement::PathPrefix("/bot123%3AAB%2F..".into())
        );
    }

    #[test]
    fn a_secret_cannot_reshape_the_request() {
        let bearer = Auth::Header {
            header: "authorization".into(),
            template: "Bearer {{secret}}".into(),
        };
        for bad in [
            &b"tok\r\nX-Evil: 1"[..],
            b"tok\n",
            b"tok\0",
            b"t\xc3\xa9",
            b"",
        ] {
            let e = bearer.render(bad).unwrap_err();
            assert_eq!(e, AuthError::SecretNotHeaderSafe);
            assert!(!e.to_string().contains("tok"));
        }
    }

    #[test]
    fn bad_kinds_are_refused_at_load() {
        let h = |header: &str, t: &str| {
            Auth::Header {
                header: header.into(),
                template: t.into(),
            }
            .validate()
        };
        assert!(h("authorization", "Bearer").is_err());
        assert!(h("authorization", "{{secret}}{{secret}}").is_err());
        assert!(h("bad header", "{{secret}}").is_err());
        assert!(Auth::Query {
            param: "k&x".into()
        }
        .validate()
        .is_err());
        assert!(Auth::Path {
            template: "/a/{{secret}}".into()
        }
        .validate()
        .is_err());
        assert!(Auth::Path {
            template: "bot{{secret}}".into()
        }
        .validate()
        .is_err());
        assert!(Auth::Basic {
            username: "u".into(),
            password: "p".into()
        }
        .validate()
        .is_err());
    }

    fn sigv4(service: Option<&str>, region: Option<&str>, akid: &str) -> Auth {
        Auth::AwsSigv4 {
            service: service.map(Into::into),
            region: region.map(Into::into),
            access_key_id: akid.into(),
        }
    }

    #[test]
    fn sigv4_scopes_and_key_names_are_checked_at_load() {
        let good = sigv4(Some("s3"), Some("us-east-1"), "AWS_ACCESS_KEY_ID");
        assert_eq!(good.validate_for_capability(), Ok(()));
        assert_eq!(good.render(b"any bytes\n"), Ok(Placement::Signed));
        assert_eq!(
            good.extra_secrets(),
            vec![(ACCESS_KEY_ID, "AWS_ACCESS_KEY_ID")]
        );
        assert_eq!(good.own_header(), Some("authorization"));
        // A provider may leave the scope to its capabilities; they may not.
        let provider = sigv4(None, None, "AWS_ACCESS_KEY_ID");
        assert_eq!(provider.validate(), Ok(()));
        assert_eq!(
            provider.validate_for_capability(),
            Err(AuthError::Sigv4Scope)
        );
        assert_eq!(
            sigv4(Some("s3"), None, "K").validate_for_capability(),
            Err(AuthError::Sigv4Scope)
        );
        for bad in ["S3", "s3/x", "", "-s3", "s 3", "s3\n"] {
            assert!(matches!(
                sigv4(Some(bad), Some("us-east-1"), "K").validate(),
                Err(AuthError::Service(_))
            ));
        }
        for bad in ["us-east-1/aws4_request", "US-EAST-1", "", "us_east_1"] {
            assert!(matches!(
                sigv4(Some("s3"), Some(bad), "K").validate(),
                Err(AuthError::Region(_))
            ));
        }
        for bad in ["", "A B", "A/B", "K\n"] {
            assert!(matches!(
                sigv4(Some("s3"), Some("us-east-1"), bad).validate(),
                Err(AuthError::AccessKeyName(_))
            ));
        }
    }
}
