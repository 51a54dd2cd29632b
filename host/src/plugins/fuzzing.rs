//! Plugin answers built from fuzz bytes, for `crate::fuzzing`: the values
//! a guest could hand back through the WIT interface, however odd (any
//! strings, any bytes, any numbers), and the round trip through the WIT
//! types that every call makes.

use arbitrary::{Result, Unstructured};
use turnout_plugin_sdk::{
    CertificateDecision, Field, HeaderEdit, HttpForward, Method, Redirect, RequestDecision,
    RequestHead, ResponseDecision, Scheme,
};

use super::bindings::v02::wit_head as wit_head_v02;
use super::bindings::v03::{wit_conv, wit_head, wit_http};

/// Short lists: what matters is every shape, not size.
fn len(u: &mut Unstructured<'_>) -> Result<usize> {
    u.int_in_range(0..=6)
}

fn string(u: &mut Unstructured<'_>) -> Result<String> {
    // Mostly printable ASCII with the occasional anything, so validation is
    // passed often enough to reach what comes after it.
    if u.ratio(1, 4)? {
        return u.arbitrary();
    }
    let n = u.int_in_range(0..=24)?;
    (0..n)
        .map(|_| Ok(char::from(u.int_in_range(0x20u8..=0x7e)?)))
        .collect()
}

fn bytes(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    if u.ratio(1, 4)? {
        return u.arbitrary();
    }
    Ok(string(u)?.into_bytes())
}

fn field(u: &mut Unstructured<'_>) -> Result<Field> {
    Ok(Field::new(string(u)?, bytes(u)?))
}

fn edits(u: &mut Unstructured<'_>) -> Result<Vec<HeaderEdit>> {
    (0..len(u)?)
        .map(|_| {
            Ok(match u.int_in_range(0..=2)? {
                0 => HeaderEdit::Set(field(u)?),
                1 => HeaderEdit::Append(field(u)?),
                _ => HeaderEdit::Remove(string(u)?),
            })
        })
        .collect()
}

fn status(u: &mut Unstructured<'_>) -> Result<u16> {
    if u.ratio(3, 4)? {
        u.int_in_range(100..=599)
    } else {
        u.arbitrary()
    }
}

/// A `request` hook answer.
pub(crate) fn request_decision(u: &mut Unstructured<'_>) -> Result<RequestDecision> {
    Ok(match u.int_in_range(0..=3)? {
        0 => RequestDecision::Pass,
        1 => RequestDecision::Forward(HttpForward {
            upstream: u.arbitrary::<Option<u8>>()?.map(u32::from),
            path: if u.arbitrary()? {
                Some(format!("/{}", string(u)?))
            } else {
                u.arbitrary()?
            },
            request_edits: edits(u)?,
            response_edits: edits(u)?,
            context: u.arbitrary()?,
        }),
        2 => RequestDecision::Respond(turnout_plugin_sdk::Response {
            status: status(u)?,
            headers: (0..len(u)?).map(|_| field(u)).collect::<Result<_>>()?,
            body: bytes(u)?,
        }),
        _ => RequestDecision::Redirect(Redirect {
            status: status(u)?,
            location: string(u)?,
        }),
    })
}

/// A `response` hook answer.
pub(crate) fn response_decision(u: &mut Unstructured<'_>) -> Result<ResponseDecision> {
    Ok(if u.arbitrary()? {
        ResponseDecision::Edit(edits(u)?)
    } else {
        ResponseDecision::Pass
    })
}

fn method(u: &mut Unstructured<'_>) -> Result<Method> {
    Ok(match u.int_in_range(0..=9)? {
        0 => Method::Get,
        1 => Method::Head,
        2 => Method::Post,
        3 => Method::Put,
        4 => Method::Delete,
        5 => Method::Connect,
        6 => Method::Options,
        7 => Method::Trace,
        8 => Method::Patch,
        _ => Method::Other(string(u)?),
    })
}

/// A request head as the host hands it over.
fn request_head(u: &mut Unstructured<'_>) -> Result<RequestHead> {
    let ip: [u8; 16] = u.arbitrary()?;
    let client = if u.arbitrary()? {
        std::net::SocketAddr::from(([ip[0], ip[1], ip[2], ip[3]], u.arbitrary()?))
    } else {
        std::net::SocketAddr::from((ip, u.arbitrary()?))
    };
    let mut head = RequestHead::new(client, u.arbitrary()?, method(u)?, string(u)?, string(u)?);
    head.connection_id = u.arbitrary()?;
    head.sni = if u.arbitrary()? {
        Some(string(u)?)
    } else {
        None
    };
    head.scheme = if u.arbitrary()? {
        Scheme::Https
    } else {
        Scheme::Http
    };
    head.headers = (0..len(u)?)
        .map(|_| {
            Ok(if u.arbitrary()? {
                Some(bytes(u)?)
            } else {
                None
            })
        })
        .collect::<Result<_>>()?;
    Ok(head)
}

/// Every SDK value the 0.2 and 0.3 interfaces carry comes back from its WIT
/// form unchanged (IP addresses in their canonical form, as the SDK keeps
/// them); and any bytes as a packed 0.3 head are an answer or an error,
/// never a panic.
pub(crate) fn wit_round_trip(u: &mut Unstructured<'_>) -> Result<()> {
    let head = request_head(u)?;
    let mut expected = head.clone();
    expected.client = std::net::SocketAddr::new(
        turnout_plugin_sdk::canonical_ip(head.client.ip()),
        head.client.port(),
    );
    assert_eq!(
        wit_head_v02::request_head_from_wit(wit_head_v02::request_head_to_wit(&head)),
        expected
    );
    let mut unpacked = RequestHead::new(
        "0.0.0.0:0".parse().expect("an address"),
        0,
        Method::Get,
        "",
        "",
    );
    let packed = wit_head::request_head_to_wit(&head, Vec::new());
    wit_head::request_head_into(packed, &mut unpacked).expect("what the host packs unpacks");
    assert_eq!(unpacked, expected);
    let junk: Vec<u8> = u.arbitrary()?;
    let _ = turnout_plugin_sdk::packed::unpack_into(&junk, &mut unpacked);
    let addr = head.client;
    assert_eq!(
        wit_conv::addr_from_wit(wit_conv::addr_to_wit(addr)),
        expected.client
    );
    let d = request_decision(u)?;
    assert_eq!(
        wit_http::request_from_wit(wit_http::request_to_wit(d.clone())),
        d
    );
    let r = response_decision(u)?;
    assert_eq!(
        wit_http::response_from_wit(wit_http::response_to_wit(r.clone())),
        r
    );
    let c = match u.int_in_range(0..=2)? {
        0 => CertificateDecision::Pass,
        1 => CertificateDecision::Approve,
        _ => CertificateDecision::Refuse(string(u)?),
    };
    assert_eq!(
        wit_http::certificate_from_wit(wit_http::certificate_to_wit(c.clone())),
        c
    );
    Ok(())
}

/// The host's check of a `request` answer from a plugin that declared
/// `upstreams` upstreams.
pub(crate) fn valid_request(d: &RequestDecision, upstreams: usize) -> bool {
    super::validate::request(d, upstreams).is_ok()
}

/// The host's check of a `response` answer.
pub(crate) fn valid_response(d: &ResponseDecision) -> bool {
    super::validate::response(d).is_ok()
}
