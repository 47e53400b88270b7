//! A capability: what policy lets a caller do with one credential, and the
//! request plan the broker derives from a caller's request. The host, the
//! credential and where it goes come from here; the caller supplies only a
//! method, a path below the capability's patterns, a few headers and a
//! body. [`Capability::plan`] runs every request-side guard in order and is
//! the only way to obtain a [`Plan`].

use serde::Deserialize;
use thiserror::Error;

use crate::auth::{Auth, AuthError, Placement};
use crate::headers::{self, HeaderError};
use crate::host::valid_host;
use crate::path::{self, PathError, PathPattern, PatternError};
use crate::registry::{Registry, RegistryError};

/// The key an unmodified SDK or CLI is configured with when it talks to the
/// broker (`OPENAI_API_KEY=aivault`): it is not a credential, and the
/// header it renders to is replaced by the capability's own.
pub const STAND_IN_KEY: &str = "aivault";

/// The largest request and response bodies a capability may allow.
pub const MAX_BODY_LIMIT: u64 = 64 << 20;
const DEFAULT_REQUEST_BYTES: u64 = 1 << 20;
const DEFAULT_RESPONSE_BYTES: u64 = 8 << 20;

/// A user or group as policy names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Principal {
    Id(u32),
    Name(String),
}

/// Which store the credential comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    #[default]
    User,
    System,
}

/// `[[capability]]` as written in a policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapability {
    pub name: String,
    pub provider: Option<String>,
    pub hosts: Option<Vec<String>>,
    pub methods: Vec<String>,
    pub paths: Vec<String>,
    pub secret: String,
    #[serde(default)]
    pub scope: Scope,
    pub auth: Option<Auth>,
    #[serde(default)]
    pub users: Vec<Principal>,
    #[serde(default)]
    pub groups: Vec<Principal>,
    pub rate: Option<Rate>,
    pub max_request_bytes: Option<u64>,
    pub max_response_bytes: Option<u64>,
}

/// Requests per minute, for the capability as a whole and per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_minute: Option<u32>,
    pub per_caller_per_minute: Option<u32>,
}

/// Why a capability was refused at load.
#[derive(Debug, Error)]
pub enum CapabilityError {
    #[error("capability {0:?}: the name must be 1-64 characters of a-z, 0-9, '-', '_' and '/'")]
    Name(String),
    #[error("capability {0:?}: provider {1:?} is not in the registry")]
    UnknownProvider(String, String),
    #[error("capability {0:?}: names no host and no provider")]
    NoHost(String),
    #[error("capability {0:?}: host {1:?} is not a valid host name")]
    Host(String, String),
    #[error("capability {0:?}: host {1:?} is not one of provider {2:?}'s")]
    HostOutsideProvider(String, String, String),
    #[error("capability {0:?}: names no auth and no provider")]
    NoAuth(String),
    #[error(
        "capability {0:?}: method {1:?} is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
    )]
    Method(String, String),
    #[error("capability {0:?}: names no path pattern")]
    NoPath(String),
    #[error("capability {0:?}: {1}")]
    Pattern(String, PatternError),
    #[error("capability {0:?}: {1}")]
    Auth(String, AuthError),
    #[error("capability {0:?}: {1}")]
    Pinning(String, RegistryError),
    #[error("capability {0:?}: {1:?} is its secret; it cannot also be the access key id")]
    ExtraIsSecret(String, String),
    #[error("capability {0:?}: a body limit must be between 1 byte and {MAX_BODY_LIMIT} bytes")]
    BodyLimit(String),
    #[error("capability {0:?}: a rate of 0 requests per minute allows nothing")]
    ZeroRate(String),
    #[error("capability {0:?}: oauth2 token_url host {1:?} is neither one of its hosts nor its provider's")]
    TokenHost(String, String),
}

/// Headers an `aws-sigv4` signature is made of, dropped from a caller's
/// request (`authorization` and `x-amz-security-token`, credentials, are
/// refused by the header guard).
pub const SIGNING_HEADERS: &[&str] = &["x-amz-date", "x-amz-content-sha256"];

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A capability after every load-time check.
#[derive(Debug, Clone)]
pub struct Capability {
    pub name: String,
    /// The host requests go to; the others are redirect targets only.
    pub hosts: Vec<String>,
    pub methods: Vec<String>,
    pub paths: Vec<PathPattern>,
    pub secret: String,
    pub scope: Scope,
    pub auth: Auth,
    pub users: Vec<Principal>,
    pub groups: Vec<Principal>,
    pub rate: Option<Rate>,
    pub max_request_bytes: u64,
    pub max_response_bytes: u64,
}

impl Capability {
    pub fn compile(raw: RawCapability, registry: &Registry) -> Result<Capability, CapabilityError> {
        let name = raw.name.clone();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_/".contains(&b));
        if !valid_name {
            return Err(CapabilityError::Name(name));
        }
        let provider = match &raw.provider {
            Some(p) => Some(
                registry
                    .get(p)
                    .ok_or_else(|| CapabilityError::UnknownProvider(name.clone(), p.clone()))?,
            ),
            None => None,
        };
        let hosts: Vec<String> = match (&raw.hosts, provider) {
            (Some(h), _) => h.iter().map(|h| h.to_ascii_lowercase()).collect(),
            // A provider's wildcard hosts name no concrete host to call.
            (None, Some(p)) => p
                .hosts
                .iter()
                .filter(|h| !h.starts_with("*."))
                .cloned()
                .collect(),
            (None, None) => Vec::new(),
        };
        if hosts.is_empty() {
            return Err(CapabilityError::NoHost(name));
        }
        for h in &hosts {
            if !valid_host(h) {
                return Err(CapabilityError::Host(name, h.clone()));
            }
            if let Some(p) = provider {
                if !p.serves(h) {
                    return Err(CapabilityError::HostOutsideProvider(
                        name,
                        h.clone(),
                        p.name.clone(),
                    ));
                }
            }
        }
        registry
            .check_pinning(&raw.secret, &hosts)
            .map_err(|e| CapabilityError::Pinning(name.clone(), e))?;
        let auth = match (raw.auth, provider) {
            (Some(a), _) => a,
            (None, Some(p)) => p.auth.clone(),
            (None, None) => return Err(CapabilityError::NoAuth(name)),
        };
        auth.validate_for_capability()
            .map_err(|e| CapabilityError::Auth(name.clone(), e))?;
        for (_, extra) in auth.extra_secrets() {
            if extra == raw.secret {
                return Err(CapabilityError::ExtraIsSecret(name, extra.to_owned()));
            }
            registry
                .check_pinning(extra, &hosts)
                .map_err(|e| CapabilityError::Pinning(name.clone(), e))?;
        }
        if matches!(auth, Auth::Oauth2 { .. }) {
            let token_host = auth.token_host().unwrap_or_default();
            let pinned =
                hosts.contains(&token_host) || provider.is_some_and(|p| p.serves(&token_host));
            if !pinned {
                return Err(CapabilityError::TokenHost(name, token_host));
            }
            // The refresh material goes to the token host only.
            for (_, n) in auth.refresh_secrets() {
                registry
                    .check_pinning(n, std::slice::from_ref(&token_host))
                    .map_err(|e| CapabilityError::Pinning(name.clone(), e))?;
            }
        }
        for m in &raw.methods {
            if !METHODS.contains(&m.as_str()) {
                return Err(CapabilityError::Method(name, m.clone()));
            }
        }
        if raw.paths.is_empty() {
            return Err(CapabilityError::NoPath(name));
        }
        let paths = raw
            .paths
            .iter()
            .map(|p| PathPattern::parse(p).map_err(|e| CapabilityError::Pattern(name.clone(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let limit = |v: Option<u64>, default: u64| match v {
            None => Ok(default),
            Some(n) if (1..=MAX_BODY_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(CapabilityError::BodyLimit(name.clone())),
        };
        let max_request_bytes = limit(raw.max_request_bytes, DEFAULT_REQUEST_BYTES)?;
        let max_response_bytes = limit(raw.max_response_bytes, DEFAULT_RESPONSE_BYTES)?;
        if let Some(r) = raw.rate {
            if r.per_minute == Some(0) || r.per_caller_per_minute == Some(0) {
                return Err(CapabilityError::ZeroRate(name));
            }
        }
        Ok(Capability {
            name,
            hosts,
            methods: raw.methods,
            paths,
            secret: raw.secret,
            scope: raw.scope,
            auth,
            users: raw.users,
            groups: raw.groups,
            rate: raw.rate,
            max_request_bytes,
            max_response_bytes,
        })
    }

    /// The caller's headers without the capability's own header where it
    /// carries exactly what [`STAND_IN_KEY`] renders to (`Authorization:
    /// Bearer aivault` for OpenAI): an unmodified SDK configured with the
    /// stand-in key asking for the broker's credential, not a credential.
    /// Any other value of that header is still refused by the header guard.
    fn without_stand_in(&self, headers: &[(String, String)]) -> Vec<(String, String)> {
        let Ok(Placement::Header { name, value }) = self.auth.render(STAND_IN_KEY.as_bytes())
        else {
            return headers.to_vec();
        };
        headers
            .iter()
            .filter(|(n, v)| !(n.eq_ignore_ascii_case(&name) && v.trim() == value))
            .cloned()
            .collect()
    }

    /// Runs the request-side guards over a caller's request and, with the
    /// credential, gives what goes on the wire.
    pub fn plan(&self, req: &Request, secret: &[u8]) -> Result<Plan, RequestError> {
        if !self.methods.contains(&req.method) {
            return Err(RequestError::Method);
        }
        let target = path::check(&req.target).map_err(RequestError::Path)?;
        if !self.paths.iter().any(|p| p.matches(&target)) {
            return Err(RequestError::PathNotAllowed);
        }
        if req.body_len > self.max_request_bytes {
            return Err(RequestError::BodyTooLarge(self.max_request_bytes));
        }
        let offered = self.without_stand_in(&req.headers);
        let mut headers = headers::check_request(&offered, self.auth.own_header())
            .map_err(RequestError::Header)?;
        let mut path = target.path;
        let mut query = target.query;
        match self.auth.render(secret).map_err(RequestError::Auth)? {
            Placement::Header { name, value } => headers.push((name, value)),
            Placement::QueryParam { name, value } => {
                // A caller's own parameter of that name would be ambiguous.
                let taken = query.as_deref().is_some_and(|q| {
                    q.split('&')
                        .any(|kv| kv.split('=').next() == Some(name.as_str()))
                });
                if taken {
                    return Err(RequestError::AuthParam);
                }
                let pair = format!("{name}={value}");
                query = Some(match query {
                    Some(q) if !q.is_empty() => format!("{q}&{pair}"),
                    _ => pair,
                });
            }
            Placement::PathPrefix(prefix) => path = format!("{prefix}{path}"),
            // The broker signs as it sends; the signing headers are its own.
            Placement::Signed => headers.retain(|(n, _)| !SIGNING_HEADERS.contains(&n.as_str())),
        }
        let target = match query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        Ok(Plan {
            host: self.hosts[0].clone(),
            method: req.method.clone(),
            target,
            headers,
        })
    }
}

/// What a caller asks of a capability.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
}

/// What goes on the wire (it holds the credential: never logged, never
/// returned to the caller).
#[derive(Clone, PartialEq, Eq)]
pub struct Plan {
    pub host: String,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("host", &self.host)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// Why a caller's request was refused. None repeats the credential.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the capability does not allow this method")]
    Method,
    #[error("{0}")]
    Path(PathError),
    #[error("the capability does not allow this path")]
    PathNotAllowed,
    #[error("the request body is larger than the capability's {0} bytes")]
    BodyTooLarge(u64),
    #[error("{0}")]
    Header(HeaderError),
    #[error("the request names the query parameter the credential goes in")]
    AuthParam,
    #[error("{0}")]
    Auth(AuthError),
}

#[cfg(test)]
mod tests;
