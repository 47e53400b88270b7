//! The decoding property the fuzz target (`proto/fuzz/`) and the unit tests
//! check on arbitrary bytes, for every message a peer can send.
//!
//! For each message type: decoding never panics, and whatever decodes
//! re-encodes to bytes that decode to a message encoding to those same bytes
//! again (encode ∘ decode is a fixpoint on encoded forms; compared as bytes,
//! so values that are not equal to themselves cannot hide a difference). A
//! framed reader over the same bytes never allocates more than
//! [`crate::MAX_FRAME`] and never panics.

use serde::{de::DeserializeOwned, Serialize};

use crate::{
    decode, encode, read_frame, Hello, HelloReply, Request, Response, RunEvent, RunInput,
    RunnerEvent, RunnerJob, RunnerSecrets,
};

/// The message types the fuzz input can select, by its first byte.
pub const KINDS: [&str; 9] = [
    "Hello",
    "HelloReply",
    "Request",
    "Response",
    "RunEvent",
    "RunInput",
    "RunnerJob",
    "RunnerSecrets",
    "RunnerEvent",
];

fn fixpoint<T: Serialize + DeserializeOwned>(body: &[u8]) -> Result<(), String> {
    let Ok(first) = decode::<T>(body) else {
        return Ok(());
    };
    let once = encode(&first).map_err(|e| format!("a decoded message does not encode: {e}"))?;
    let again: T =
        decode(&once).map_err(|e| format!("a re-encoded message does not decode: {e}"))?;
    let twice = encode(&again).map_err(|e| format!("encode after decode failed: {e}"))?;
    if once != twice {
        return Err(format!(
            "encode(decode(encode(m))) differs from encode(m): {once:?} vs {twice:?}"
        ));
    }
    Ok(())
}

/// Checks the property for the message type selected by `data[0]` on the
/// rest of `data`, and the framed reader on all of it.
pub fn check(data: &[u8]) -> Result<(), String> {
    let Some((&selector, body)) = data.split_first() else {
        return Ok(());
    };
    let mut reader = data;
    if let Ok(frame) = read_frame(&mut reader) {
        if frame.len() > crate::MAX_FRAME || frame.is_empty() {
            return Err(format!("a frame of {} bytes was accepted", frame.len()));
        }
    }
    match selector as usize % KINDS.len() {
        0 => fixpoint::<Hello>(body),
        1 => fixpoint::<HelloReply>(body),
        2 => fixpoint::<Request>(body),
        3 => fixpoint::<Response>(body),
        4 => fixpoint::<RunEvent>(body),
        5 => fixpoint::<RunInput>(body),
        6 => fixpoint::<RunnerJob>(body),
        7 => fixpoint::<RunnerSecrets>(body),
        _ => fixpoint::<RunnerEvent>(body),
    }
}
