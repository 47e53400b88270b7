//! The wire protocol between `aivaultd` and its clients.
//!
//! A connection carries length-prefixed frames: a 4-byte big-endian length, then
//! that many bytes of postcard. The length is checked against [`MAX_FRAME`]
//! *before* anything is allocated. The first exchange is a handshake
//! ([`Hello`] / [`HelloReply`]); after it the client sends [`Request`]s and the
//! daemon answers each with a [`Response`] carrying the same id.
//!
//! Secret plaintext only ever travels *towards* the daemon ([`SecretBytes`] in
//! requests). No [`Reply`] variant has a field that could carry a value back:
//! metadata, masks, counts and audit records only.
#![forbid(unsafe_code)]

mod messages;

pub mod approval;
pub mod broker;
mod bytes;
pub mod frame;
pub mod fuzzing;
pub mod gateway;
pub mod handoff;
pub mod run;
pub mod sandbox;
pub mod tty;
pub use approval::{ApprovalChannel, ApprovalRequest, PendingApproval};
pub use frame::{read_frame, write_frame, FrameError, FRAME_HEADER_LEN, MAX_FRAME};
pub use messages::*;
pub use run::*;
pub use sandbox::{Enforcement, Isolation, Level, Limits, SandboxSpec};

/// Protocol version spoken by this build. Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 3;

/// Oldest client version the daemon serves. Version 3 changed the run
/// request (the working directory travels as a descriptor) and added the
/// paged lists and backups, so it is also the oldest.
pub const MIN_PROTOCOL_VERSION: u32 = 3;

/// Magic that opens every [`Hello`], so a stray client is told apart from a confused one.
pub const HELLO_MAGIC: [u8; 8] = *b"AIVAULT1";

/// Encodes a message as a postcard frame body.
pub fn encode<T: serde::Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    postcard::to_stdvec(msg).map_err(|_| FrameError::Encode)
}

/// Decodes a frame body; trailing bytes are an error.
pub fn decode<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes(body) {
        Ok((msg, [])) => Ok(msg),
        _ => Err(FrameError::Decode),
    }
}
