//! The config loader in both formats; the properties are in
//! `turnout::fuzzing::config`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| turnout::fuzzing::config(data));
