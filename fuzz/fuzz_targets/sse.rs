#![no_main]
//! See `sluice::fuzzing::sse`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::sse(data));
