#![no_main]
//! See `sluice::fuzzing::convert`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::convert(data));
