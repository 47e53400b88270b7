//! The shipped registry of providers (`broker/registry.toml`): the hosts
//! each API lives on, how its credential is sent, and the secret names
//! pinned to it. Pinning is what keeps a real key from being routed to an
//! attacker's host through a capability that merely claims to be OpenAI:
//! a capability that would send `OPENAI_API_KEY` anywhere but
//! `api.openai.com` is refused when policy is loaded.

use serde::Deserialize;
use thiserror::Error;

use crate::auth::{Auth, AuthError};
use crate::host::valid_host;

const SHIPPED: &str = include_str!("../registry.toml");

/// One provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    /// Host names, lower case; `*.example.com` stands for one or more
    /// labels before `example.com`.
    pub hosts: Vec<String>,
    /// Secret names pinned to this provider.
    #[serde(default)]
    pub secrets: Vec<String>,
    pub auth: Auth,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    provider: Vec<Provider>,
}

/// Why a registry, or a capability's use of it, was refused.
#[derive(Debug, Error)]
pub enum RegistryError {
    #[error("the provider registry is not valid TOML: {0}")]
    Syntax(String),
    #[error("provider {0:?} is listed twice")]
    Duplicate(String),
    #[error("provider {provider:?}: host {host:?} is not a valid host name")]
    Host { provider: String, host: String },
    #[error("provider {0:?} names no host")]
    NoHost(String),
    #[error("secret {secret:?} is pinned to both {first:?} and {second:?}")]
    PinnedTwice {
        secret: String,
        first: String,
        second: String,
    },
    #[error("provider {0:?}: {1}")]
    Auth(String, AuthError),
    #[error(
        "secret {secret:?} is pinned to provider {provider:?}, whose hosts do not include {host:?}"
    )]
    Pinned {
        secret: String,
        provider: String,
        host: String,
    },
}

/// The providers in force: the shipped ones, overridden or extended by
/// policy.
#[derive(Debug, Clone)]
pub struct Registry {
    providers: Vec<Provider>,
}

impl Registry {
    /// The registry shipped with the broker.
    pub fn shipped() -> Result<Registry, RegistryError> {
        Registry::parse(SHIPPED)
    }

    pub fn parse(text: &str) -> Result<Registry, RegistryError> {
        let file: File = toml::from_str(text).map_err(|e| RegistryError::Syntax(e.to_string()))?;
        let r = Registry {
            providers: file.provider,
        };
        r.validate()?;
        Ok(r)
    }

    /// Replaces providers of the same name and adds new ones.
    pub fn overridden_by(mut self, policy: Vec<Provider>) -> Result<Registry, RegistryError> {
        for p in policy {
            self.providers.retain(|have| have.name != p.name);
            self.providers.push(p);
        }
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<(), RegistryError> {
        for (i, p) in self.providers.iter().enumerate() {
            if self.providers[..i].iter().any(|q| q.name == p.name) {
                return Err(RegistryError::Duplicate(p.name.clone()));
            }
            if p.hosts.is_empty() {
                return Err(RegistryError::NoHost(p.name.clone()));
            }
            for h in &p.hosts {
                let bare = h.strip_prefix("*.").unwrap_or(h);
                if !valid_host(bare) || bare.split('.').count() < 2 {
                    return Err(RegistryError::Host {
                        provider: p.name.clone(),
                        host: h.clone(),
                    });
                }
            }
            p.auth
                .validate()
                .map_err(|e| RegistryError::Auth(p.name.clone(), e))?;
            for s in &p.secrets {
                if let Some(q) = self.providers[..i].iter().find(|q| q.secrets.contains(s)) {
                    return Err(RegistryError::PinnedTwice {
                        secret: s.clone(),
                        first: q.name.clone(),
                        second: p.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The provider a secret name is pinned to, if any.
    pub fn pinned(&self, secret: &str) -> Option<&Provider> {
        self.providers
            .iter()
            .find(|p| p.secrets.iter().any(|s| s == secret))
    }

    /// Refuses a capability that would send `secret` to any of `hosts`
    /// outside the hosts of the provider the secret is pinned to.
    pub fn check_pinning(&self, secret: &str, hosts: &[String]) -> Result<(), RegistryError> {
        let Some(p) = self.pinned(secret) else {
            return Ok(());
        };
        for h in hosts {
            if !p.serves(h) {
                return Err(RegistryError::Pinned {
                    secret: secret.to_owned(),
                    provider: p.name.clone(),
                    host: h.clone(),
                });
            }
        }
        Ok(())
    }
}

impl Provider {
    /// Whether `host` (a concrete name) is one of this provider's.
    pub fn serves(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.hosts.iter().any(|h| match h.strip_prefix("*.") {
            Some(parent) => host
                .strip_suffix(parent)
                .and_then(|front| front.strip_suffix('.'))
                .is_some_and(|front| !front.is_empty() && valid_host(front)),
            None => *h == host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_registry_loads_with_the_providers_it_promises() {
        let r = Registry::shipped().unwrap();
        for (name, host) in [
            ("openai", "api.openai.com"),
            ("anthropic", "api.anthropic.com"),
            ("github", "api.github.com"),
            ("gitlab", "gitlab.com"),
            ("slack", "slack.com"),
            ("stripe", "api.stripe.com"),
            ("google-gemini", "generativelanguage.googleapis.com"),
            ("aws", "s3.eu-west-1.amazonaws.com"),
            ("cloudflare", "api.cloudflare.com"),
            ("huggingface", "huggingface.co"),
        ] {
            let p = r.get(name).unwrap_or_else(|| panic!("{name} missing"));
            assert!(p.serves(host), "{name} does not serve {host}");
        }
        assert_eq!(
            r.pinned("OPENAI_API_KEY").map(|p| p.name.as_str()),
            Some("openai")
        );
        assert_eq!(
            r.get("anthropic").unwrap().auth.own_header(),
            Some("x-api-key")
        );
    }

    #[test]
    fn a_pinned_secret_cannot_be_routed_to_another_host() {
        let r = Registry::shipped().unwrap();
        assert!(r
            .check_pinning("OPENAI_API_KEY", &["api.openai.com".into()])
            .is_ok());
        for evil in [
            "evil.example",
            "api.openai.com.evil.example",
            "openai.com",
            "API.OPENAI.COM.evil.example",
        ] {
            let e = r.check_pinning("OPENAI_API_KEY", &["api.openai.com".into(), evil.into()]);
            assert!(
                matches!(e, Err(RegistryError::Pinned { .. })),
                "{evil}: {e:?}"
            );
        }
        // Wildcards stand for labels, not for any suffix.
        assert!(r
            .check_pinning("AWS_SECRET_ACCESS_KEY", &["sts.amazonaws.com".into()])
            .is_ok());
        assert!(r
            .check_pinning("AWS_SECRET_ACCESS_KEY", &["amazonaws.com".into()])
            .is_err());
        assert!(r
            .check_pinning("AWS_SECRET_ACCESS_KEY", &["evilamazonaws.com".into()])
            .is_err());
        assert!(r
            .check_pinning("AWS_SECRET_ACCESS_KEY", &["a..amazonaws.com".into()])
            .is_err());
        // An unpinned secret goes where its capability says.
        assert!(r
            .check_pinning("MY_OWN_TOKEN", &["api.example.org".into()])
            .is_ok());
    }

    #[test]
    fn policy_overrides_by_name_and_cannot_pin_a_secret_twice() {
        let r = Registry::shipped().unwrap();
        let mine: Registry = Registry::parse(
            r#"[[provider]]
name = "openai"
hosts = ["openai.internal.example"]
secrets = ["OPENAI_API_KEY"]
auth = { kind = "header", header = "authorization", template = "Bearer {{secret}}" }
"#,
        )
        .unwrap();
        let r2 = r.clone().overridden_by(mine.providers().to_vec()).unwrap();
        assert!(r2.get("openai").unwrap().serves("openai.internal.example"));
        let twice = Registry::parse(
            r#"[[provider]]
name = "fake"
hosts = ["evil.example"]
secrets = ["OPENAI_API_KEY"]
auth = { kind = "query", param = "k" }
"#,
        )
        .unwrap();
        assert!(matches!(
            r.overridden_by(twice.providers().to_vec()),
            Err(RegistryError::PinnedTwice { .. })
        ));
    }

    #[test]
    fn host_names_are_checked() {
        for ok in ["api.openai.com", "a-b.example", "x1.y2.z3"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "",
            "API.example.com",
            "a..b",
            "-a.com",
            "a-.com",
            "1.2.3.4",
            "a.com.",
            "a_b.com",
            "a.com:443",
            "évil.com",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
