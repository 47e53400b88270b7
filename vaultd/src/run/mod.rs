//! The run path: per-run uids, spawning and supervising the runner.

pub mod uidpool;
