//! The jail host: the one process that creates processes under run uids.
//!
//! The daemon holds the key-encryption key and the vault; it must never
//! change uid and never share memory with a process that does. Starting a
//! runner, though, means a process that becomes the run's uid, and ending a
//! run means a process that becomes the run's uid to `kill(-1)`. Both are
//! done here, by a small single-threaded privileged helper (like OpenSSH's
//! privilege-separation monitor, or a zygote) that the daemon executes
//! *before any key is loaded*, as a separate program with a fresh address
//! space:
//!
//! * [`host`]: the jail host's loop (`aivault-jail`, `src/bin/aivault-jail.rs`);
//! * [`client`]: [`JailHost`], the daemon's handle, and [`Jailed`], one
//!   started process followed through its pidfd;
//! * [`wire`]: the requests and replies, one `SOCK_SEQPACKET` datagram each.
//!
//! The request is generic — "start a jailed process of kind K as uid U in
//! directory D" — so every kind of jailed process (the runner today; the
//! HTTP broker and MCP upstreams next) is a new [`JailKind`], not new spawn
//! code. The sandbox itself travels on the kind's own channel: each jailed
//! program confines itself (landlock, seccomp, rlimits, `no_new_privs`)
//! from the specification the daemon sends it, before any secret reaches
//! it. See docs/runner-sandbox.md.

pub mod client;
pub mod control;
pub mod host;
pub mod wire;

pub use client::{locate, JailError, JailHost, Jailed};
pub use wire::{JailKind, SpawnRequest, WorkdirRequest};
