//! What the host does with a plugin's answer once validated; the
//! properties are in `turnout::http::fuzzing::plugin_answers`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| turnout::fuzzing::plugin_answers(data));
