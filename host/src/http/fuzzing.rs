//! The HTTP layer's parts that see untrusted bytes, for `crate::fuzzing`:
//! the host's own scan of a request head against the parser hyper uses,
//! the checks and header work every request goes through, and what the
//! host does with a plugin's answer once it has passed validation.

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use arbitrary::Unstructured;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use turnout_plugin_sdk::matching::IpList;
use turnout_plugin_sdk::{HeaderEdit, RequestDecision, ResponseDecision};

use super::head_scan::HeadScan;
use super::headers::{self, Forwarded};
use super::service;
use crate::plugins::fuzzing as answers;

/// Any bytes as the start of a client's HTTP/1.1 stream; the first byte
/// says where the host's reads split it.
///
/// * The host's framing scan (`head_scan::HeadScan`) agrees with httparse —
///   the parser hyper reads heads with — on every head httparse accepts:
///   it ends there and sees the same `Content-Length` + `Transfer-Encoding`
///   conflict, however the bytes are split.
/// * The request hyper would build goes through the host's checks, the
///   authority it routes on, the hop-by-hop and forwarding header work and
///   the plugin slot filling without a panic.
pub fn http_head(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split).min(data.len());
    let mut scan = HeadScan::new();
    let found = scan.feed(&data[..cut]).or_else(|| scan.feed(&data[cut..]));

    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let has = |name: &str| {
        req.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    };
    let both = has("content-length") && has("transfer-encoding");
    assert_eq!(
        found,
        Some(both),
        "the head scan disagrees with httparse on {:?}",
        String::from_utf8_lossy(data)
    );

    let (Some(method), Some(path)) = (req.method, req.path) else {
        return;
    };
    let mut builder = Request::builder().method(method).uri(path);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let _ = service::check(&request);
    let authority = service::authority(&request).unwrap_or_default();
    let mut h = request.headers().clone();
    let slots: Vec<HeaderName> = h.keys().cloned().collect();
    let _ = crate::plugins::request::fill(&slots, &h);
    headers::strip_hop_by_hop(&mut h);
    headers::join_cookies(&mut h);
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    headers::set_forwarded(
        &mut h,
        &Forwarded {
            values: &headers::ForwardedValues::new(client, 443),
            peer: client,
            trusted: &IpList::default(),
            https: split & 1 == 1,
            authority: &authority,
        },
    );
}

/// A plugin's answer decoded from any bytes: once the host's validation
/// accepts it, everything
/// the host then builds from it is well-formed — every header edit is a
/// valid name and value (none is silently skipped), a rewritten path is a
/// valid path, a redirect's location a valid header value, a status a
/// status.
pub fn plugin_answers(data: &[u8]) {
    let mut u = Unstructured::new(data);
    if let Ok(d) = answers::request_decision(&mut u)
        && answers::valid_request(&d, 4)
    {
        accepted_request(&d);
    }
    if let Ok(r) = answers::response_decision(&mut u)
        && answers::valid_response(&r)
        && let ResponseDecision::Edit(edits) = &r
    {
        accepted_edits(edits);
    }
}

fn accepted_request(d: &RequestDecision) {
    match d {
        RequestDecision::Pass => {}
        RequestDecision::Forward(f) => {
            if let Some(path) = &f.path {
                // As `upstream.rs` builds the upstream request's URI.
                let uri = format!("http://[2001:db8::1]:65535{path}");
                assert!(
                    http::Uri::from_str(&uri).is_ok(),
                    "a validated path does not make a URI: {path:?}"
                );
            }
            accepted_edits(&f.request_edits);
            accepted_edits(&f.response_edits);
        }
        RequestDecision::Respond(r) => {
            assert!(http::StatusCode::from_u16(r.status).is_ok());
            let edits: Vec<HeaderEdit> =
                r.headers.iter().cloned().map(HeaderEdit::Append).collect();
            accepted_edits(&edits);
        }
        RequestDecision::Redirect(r) => {
            assert!(http::StatusCode::from_u16(r.status).is_ok());
            assert!(
                HeaderValue::from_str(&r.location).is_ok(),
                "a validated location is not a header value: {:?}",
                r.location
            );
        }
    }
}

fn accepted_edits(edits: &[HeaderEdit]) {
    for e in edits {
        let (name, value) = match e {
            HeaderEdit::Set(f) | HeaderEdit::Append(f) => (&f.name, Some(&f.value)),
            HeaderEdit::Remove(name) => (name, None),
        };
        assert!(
            HeaderName::from_bytes(name.as_bytes()).is_ok(),
            "a validated header name is refused by http: {name:?}"
        );
        if let Some(v) = value {
            assert!(
                HeaderValue::from_bytes(v).is_ok(),
                "a validated header value is refused by http: {v:?}"
            );
        }
    }
    headers::apply(&mut HeaderMap::new(), edits);
}
