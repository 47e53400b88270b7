//! Redirects. A credential goes only to the hosts its capability pins, so
//! a redirect is followed only to a pinned host over HTTPS, and the
//! credential is dropped on any change of host, even between two pinned
//! ones (an upstream that moves a request between its own hosts re-asks
//! for authentication, and the caller sees that answer).

/// What the broker does with a 3xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// Follow to the same host with the credential.
    SameHost { path: String },
    /// Follow to another pinned host without the credential.
    OtherPinnedHost { host: String, path: String },
    /// Do not follow: the caller gets the 3xx answer without its Location.
    Refuse(&'static str),
}

/// Judges a `Location` of an answer to a request to `from_host`, given the
/// capability's pinned hosts (lower-case names). Relative locations stay
/// on `from_host`. `hops` is how many redirects were followed already.
pub fn judge(location: &str, from_host: &str, pinned: &[&str], hops: usize) -> Redirect {
    const MAX_HOPS: usize = 3;
    if hops >= MAX_HOPS {
        return Redirect::Refuse("too many redirects");
    }
    if location.starts_with('/') && !location.starts_with("//") {
        return Redirect::SameHost {
            path: location.to_owned(),
        };
    }
    let Some(rest) = location.strip_prefix("https://") else {
        return Redirect::Refuse("a redirect to a scheme other than https, or a relative one");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Redirect::Refuse("a redirect that carries user information");
    }
    // A port other than 443 is another service on the host.
    let host = match authority.rsplit_once(':') {
        Some((h, "443")) => h,
        Some(_) => return Redirect::Refuse("a redirect to a port other than 443"),
        None => authority,
    }
    .to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
    if !pinned.contains(&host.as_str()) {
        return Redirect::Refuse("a redirect to a host the capability does not pin");
    }
    let path = path.to_owned();
    if host == from_host {
        Redirect::SameHost { path }
    } else {
        Redirect::OtherPinnedHost { host, path }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: &[&str] = &["api.example.com", "uploads.example.com"];

    #[test]
    fn only_pinned_https_hosts_are_followed_and_auth_stays_on_its_host() {
        assert_eq!(
            judge("/v1/next", "api.example.com", PINNED, 0),
            Redirect::SameHost {
                path: "/v1/next".into()
            }
        );
        assert_eq!(
            judge(
                "https://API.example.com:443/v2",
                "api.example.com",
                PINNED,
                0
            ),
            Redirect::SameHost { path: "/v2".into() }
        );
        assert_eq!(
            judge(
                "https://uploads.example.com/f",
                "api.example.com",
                PINNED,
                0
            ),
            Redirect::OtherPinnedHost {
                host: "uploads.example.com".into(),
                path: "/f".into()
            }
        );
        for evil in [
            "https://evil.example/",
            "http://api.example.com/",
            "//evil.example/x",
            "https://api.example.com@evil.example/",
            "https://api.example.com:8443/",
            "https://api.example.com.evil.example/",
            "ftp://api.example.com/",
            "javascript:alert(1)",
        ] {
            assert!(
                matches!(
                    judge(evil, "api.example.com", PINNED, 0),
                    Redirect::Refuse(_)
                ),
                "{evil}"
            );
        }
        assert!(matches!(
            judge("/x", "api.example.com", PINNED, 3),
            Redirect::Refuse(_)
        ));
    }
}
