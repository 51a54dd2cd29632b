//! The host's HTTP/1.1 request-head handling; the properties are in
//! `turnout::http::fuzzing::http_head`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| turnout::fuzzing::http_head(data));
