//! aivaultd: the root-owned daemon that holds the key-encryption key and the vault.
//!
//! Main pieces:
//! * [`keys`] — key providers yielding the [`keys::Kek`];
//! * [`names`] — secret names (`aws/access_key`), the globs that select them,
//!   and the variable a name goes to;
//! * [`store`] — the encrypted vault ([`store::Vault`]), one AEAD-sealed record per secret;
//! * [`backup`] — encrypted backups: one blob, sealed under a key derived
//!   from the KEK;
//! * [`audit`] — the chained, fail-closed audit log ([`audit::AuditLog`]);
//!   [`journal`] how each record reads in the journal, and its `MESSAGE_ID`;
//! * [`server`] — the Unix socket: peer credentials, framing, limits, dispatch;
//! * [`admission`] — the per-uid and total limits every front end applies;
//! * [`ops`] — what each request does, and the authorization rules for it;
//!   [`caller`] who sent it, [`wire_error`] how a failure reads to a client,
//!   [`audit::gate`] how each decision is recorded before it takes effect;
//! * [`config`] — the daemon's configuration file and command-line overrides;
//! * [`dbus`] — the same operations as `org.aivault.Vault1` on D-Bus;
//! * [`run`] — the run path, which sees the daemon only as a [`run::RunHost`];
//! * [`jail`] — the jail host, the only process that starts processes under run uids.
//!
//! The only `unsafe` lives in [`sys`].
#![deny(unsafe_code)]

pub mod admission;
pub mod approval;
pub mod audit;
pub mod backup;
pub mod broker;
pub mod caller;
pub mod cli;
pub mod config;
pub mod dbus;
pub mod frames;
pub mod gateway;
pub mod jail;
pub mod journal;
pub mod keys;
pub mod names;
pub mod ops;
pub mod policy;
pub mod run;
pub mod secure_fs;
pub mod server;
pub mod service;
pub mod store;
pub mod sys;
pub mod wire_error;
