//! SDK ↔ WIT conversions round-trip; see
//! `turnout::fuzzing::wit_conversions`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| turnout::fuzzing::wit_conversions(data));
