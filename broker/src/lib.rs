//! The guards of the HTTP capability broker (issue: "HTTP capability
//! broker"), as pure functions over what a caller sends and what an
//! upstream answers. The broker process that runs them — a jailed kind on
//! the jail host, under a fresh uid — is built on top of this crate; the
//! root daemon never parses HTTP itself.
//!
//! * [`path`]: a caller's request path, normalised, refused when it tries
//!   to leave its prefix (`..`, `.`, `%2e`, `%2f`, double encoding,
//!   backslashes), and matched against a capability's path patterns.
//! * [`headers`]: caller headers that carry credentials are refused,
//!   hop-by-hop headers dropped; upstream headers that carry credentials
//!   are stripped from the response.
//! * [`addr`]: the SSRF guard over *resolved* addresses (loopback, private,
//!   link-local, CGNAT, unspecified, IPv4 inside IPv6, unique-local,
//!   multicast, documentation and reserved ranges).
//! * [`redirect`]: whether a redirect may be followed, and with or without
//!   the injected credential.
//! * [`auth`]: how a credential is put on a request (header template,
//!   query parameter, basic, path prefix), refusing a secret that would
//!   reshape the request; `aws-sigv4` is checked here and signed by
//!   [`sigv4`] as the request is sent.
//! * [`sigv4`]: AWS Signature Version 4 over exactly what is sent.
//! * [`registry`]: the shipped providers, their hosts and auth shapes, and
//!   the pinning of well-known secret names to their provider's hosts.
//! * [`capability`]: a capability from policy, checked at load (hosts
//!   within its provider's, pinning, methods, patterns, limits), and
//!   [`capability::Capability::plan`], which runs every request guard and
//!   gives the request that goes on the wire.
//! * [`rate`]: per-capability and per-caller limits over a sliding minute,
//!   as plain data the daemon keeps across restarts.
//!
//! Every function above decides from its arguments alone, so each guard is
//! tested beside its code, and fuzzed, without a network.
//!
//! The broker process (`aivault-broker`, one per caller uid, started by the
//! daemon through the jail host with its control socket at descriptor 3)
//! is built from:
//!
//! * [`serve`]: [`serve::Service`], the capabilities of an init compiled,
//!   and the loop over the control socket (connections handed over, the
//!   daemon's grants and denials routed to the requests waiting).
//! * [`control`]: the `SOCK_SEQPACKET` control socket (postcard datagrams,
//!   descriptors as `SCM_RIGHTS`).
//! * [`endpoint_http`]: HTTP/1.1 on one caller connection, routing,
//!   authorize, the upstream exchange with its redirects, errors as JSON.
//! * [`exchange`]: the request sent upstream and its redirects judged.
//! * [`upstream`]: resolve, judge every address, connect, TLS, reuse.
//! * [`tls`]: the rustls configuration (ring, web roots compiled in).
//! * [`stream`]: the response body streamed back, limited and redacted.
//! * [`confine`]: the process's own confinement (rlimits, landlock,
//!   seccomp) and the enforcement it reports.
#![forbid(unsafe_code)]

pub mod addr;
pub mod auth;
pub mod capability;
pub mod confine;
pub mod control;
pub mod endpoint_http;
pub mod exchange;
pub mod headers;
pub mod host;
pub mod oauth2;
pub mod path;
pub mod rate;
pub mod redirect;
pub mod refusal;
pub mod registry;
pub mod serve;
pub mod shared;
pub mod sigv4;
pub mod stream;
pub mod tls;
pub mod upstream;
