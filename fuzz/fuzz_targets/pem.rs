//! Certificate and key loading from PEM text; see `turnout::fuzzing::pem`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| turnout::fuzzing::pem(data));
