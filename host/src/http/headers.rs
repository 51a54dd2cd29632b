//! Header work the host does on every proxied message: hop-by-hop headers
//! out (both ways), the `X-Forwarded-*` set, and a plugin's edits.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{self, HeaderName, HeaderValue};
use turnout_plugin_sdk::HeaderEdit;
use turnout_plugin_sdk::matching::IpList;

/// RFC 9110 §7.6.1's connection-specific fields, plus the legacy ones
/// peers still send: they describe one hop and must not cross the proxy.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers and every header `Connection` names.
/// (`Transfer-Encoding` is hyper's: it frames each hop itself.)
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// One `Cookie` field: an HTTP/2 client sends each cookie as a field of
/// its own, which HTTP/1.1 upstreams must get joined with `; ` (RFC 9113
/// §8.2.3).
pub(crate) fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, v);
    }
}

/// What the forwarding headers say about one request.
pub(crate) struct Forwarded<'a> {
    /// The client's address and the port it connected to, as values.
    pub(crate) values: &'a ForwardedValues,
    /// The previous hop (the client as a trusted PROXY header named it, or
    /// the socket peer): only a trusted one may extend `X-Forwarded-For`.
    pub(crate) peer: IpAddr,
    pub(crate) trusted: &'a IpList,
    pub(crate) https: bool,
    pub(crate) authority: &'a str,
}

/// A connection's `X-Forwarded-For` and `-Port` values, made once per
/// connection: formatting the address and allocating both values on every
/// request was per-request work with a per-connection answer.
#[derive(Debug, Clone)]
pub struct ForwardedValues {
    /// The client (a trusted PROXY header's, or the peer).
    client: HeaderValue,
    /// The port the client connected to.
    port: HeaderValue,
}

impl ForwardedValues {
    /// The values for `client` connected to `port`.
    pub fn new(client: IpAddr, port: u16) -> Self {
        Self {
            client: HeaderValue::try_from(client.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            port: HeaderValue::from(port),
        }
    }
}

/// Sets `X-Forwarded-For` (appended to when the previous hop is a trusted
/// proxy, else replaced: a client cannot forge its way into the list),
/// `-Proto`, `-Host` and `-Port` (kept as a trusted proxy sent them: it
/// knows what its client used).
pub(crate) fn set_forwarded(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    const PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
    let client = &f.values.client;
    let trusted = f.trusted.matches(f.peer);
    let prior: Vec<&str> = if trusted {
        headers
            .get_all(&XFF)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    let xff = if prior.is_empty() {
        // The common case: a clone of the connection's value, no allocation.
        Some(client.clone())
    } else {
        let client = client.to_str().unwrap_or_default();
        HeaderValue::try_from(format!("{}, {client}", prior.join(", "))).ok()
    };
    headers.remove(&XFF);
    if let Some(v) = xff {
        headers.insert(XFF, v);
    }
    if !(trusted && headers.contains_key(&PROTO)) {
        headers.insert(
            PROTO,
            HeaderValue::from_static(if f.https { "https" } else { "http" }),
        );
    }
    if !(trusted && headers.contains_key(&HOST))
        && let Ok(v) = HeaderValue::from_str(f.authority)
    {
        headers.insert(HOST, v);
    }
    if !(trusted && headers.contains_key(&PORT)) {
        headers.insert(PORT, f.values.port.clone());
    }
}

/// Applies a plugin's edits in order. Names and values were validated
/// when the answer came back; one that still fails to convert is skipped.
pub(crate) fn apply(headers: &mut HeaderMap, edits: &[HeaderEdit]) {
    for edit in edits {
        match edit {
            HeaderEdit::Set(f) | HeaderEdit::Append(f) => {
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(f.name.as_bytes()),
                    HeaderValue::from_bytes(&f.value),
                ) else {
                    continue;
                };
                if matches!(edit, HeaderEdit::Set(_)) {
                    headers.insert(name, value);
                } else {
                    headers.append(name, value);
                }
            }
            HeaderEdit::Remove(name) => {
                if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                    headers.remove(name);
                }
            }
        }
    }
}

/// The client's socket address as the forwarding headers see it.
pub(crate) fn ip(addr: SocketAddr) -> IpAddr {
    turnout_plugin_sdk::canonical_ip(addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    fn forwarded(peer: &str, trusted: &IpList, headers: &mut HeaderMap) {
        set_forwarded(
            headers,
            &Forwarded {
                values: &ForwardedValues::new("203.0.113.9".parse().unwrap(), 8443),
                peer: peer.parse().unwrap(),
                trusted,
                https: true,
                authority: "example.com:8443",
            },
        );
    }

    #[test]
    fn x_forwarded_for_is_extended_only_behind_a_trusted_proxy() {
        let trusted = IpList::parse(&["10.0.0.1"]).unwrap();
        let mut h = map(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("X-Forwarded-For", "192.0.2.7"),
            ("x-forwarded-proto", "http"),
        ]);
        forwarded("10.0.0.1", &trusted, &mut h);
        assert_eq!(h["x-forwarded-for"], "198.51.100.1, 192.0.2.7, 203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "http", "a trusted proxy's is kept");
        assert_eq!(h["x-forwarded-port"], "8443", "and set when it sent none");

        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "gopher"),
        ]);
        forwarded("10.0.0.2", &trusted, &mut h);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(
            h["x-forwarded-proto"], "https",
            "an untrusted client's is replaced"
        );
        assert_eq!(h["x-forwarded-host"], "example.com:8443");
        assert_eq!(h["x-forwarded-port"], "8443");
    }

    #[test]
    fn an_h2_clients_cookie_fields_become_one() {
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1; b=2"]);
    }

    #[test]
    fn edits_apply_in_order() {
        let mut h = map(&[("x-a", "1"), ("x-b", "1")]);
        apply(
            &mut h,
            &[
                HeaderEdit::append("x-a", "2"),
                HeaderEdit::set("x-b", "3"),
                HeaderEdit::remove("x-a"),
                HeaderEdit::append("x-c", "4"),
            ],
        );
        assert_eq!(h.get_all("x-a").iter().count(), 0);
        assert_eq!(h["x-b"], "3");
        assert_eq!(h["x-c"], "4");
    }
}
