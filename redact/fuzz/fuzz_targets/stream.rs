//! Decodes the input into secrets, a stream (with encoded forms of the
//! secrets spliced in) and write sizes, then checks that the split stream
//! equals the whole-buffer result and that no pattern survives outside a
//! label. The logic lives in `aivault_redact::fuzzing` so unit tests run it
//! too.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let case = aivault_redact::fuzzing::decode(data);
    if let Err(failure) = aivault_redact::fuzzing::check(&case.values, &case.input, &case.splits) {
        panic!("{failure}");
    }
});
