//! Any bytes: no panic; a parsed header never claims more bytes than given,
//! and re-encoding what was parsed parses to the same addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turnout::net::proxy_protocol::{ProxyParse, encode_v2, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(ProxyParse::Header { header, len }) = parse(data) {
        assert!(len <= data.len());
        if let (Some(src), Some(dst)) = (header.source, header.destination) {
            let again = parse(&encode_v2(src, dst));
            assert!(matches!(again, Ok(ProxyParse::Header { .. })));
        }
    }
});
