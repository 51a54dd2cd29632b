//! Any bytes: the parser answers without panicking, and delivering the same
//! bytes in two pieces never changes a complete answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnout::net::client_hello::{Parsed, parse};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Ok(Parsed::Hello(info)) = &whole {
        assert!(info.record_bytes <= data.len());
        assert_eq!(parse(&data[..info.record_bytes]), whole);
    }
});
