//! The first byte picks a message type (a request, a runner event, a job, …);
//! the rest is decoded as that type. Decoding must never panic and whatever
//! decodes must be a fixpoint of encode ∘ decode. The logic lives in
//! `aivault_proto::fuzzing` so the unit tests run it too.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(failure) = aivault_proto::fuzzing::check(data) {
        panic!("{failure}");
    }
});
