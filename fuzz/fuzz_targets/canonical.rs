#![no_main]
//! See `sluice::fuzzing::canonical`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::canonical(data));
