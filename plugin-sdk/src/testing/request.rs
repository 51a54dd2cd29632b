//! HTTP requests and responses as a test writes them: every header, by
//! name. The harness hands a plugin what the host would: the declared
//! slots in the head, the rest through `host::header`.

use std::net::SocketAddr;

use crate::types::{Interest, Method, RequestHead, ResponseHead, Scheme};

/// A whole request head, for [`super::Harness::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    head: RequestHead,
    headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// `method` for `authority` + `path` from 192.0.2.1:40000 on port 80,
    /// plaintext.
    pub fn new(method: Method, authority: &str, path: &str) -> Self {
        let client: SocketAddr = "192.0.2.1:40000".parse().unwrap_or_else(|_| unreachable!());
        let mut head = RequestHead::new(client, 80, method, authority.to_ascii_lowercase(), path);
        head.connection_id = 1;
        Self {
            head,
            headers: Vec::new(),
        }
    }

    /// A `GET`.
    pub fn get(authority: &str, path: &str) -> Self {
        Self::new(Method::Get, authority, path)
    }

    /// Adds a header value (repeat for several values).
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// From this client (`"ip:port"`; panics on a malformed literal: test input).
    pub fn client(mut self, client: &str) -> Self {
        self.head.client = client
            .parse()
            .unwrap_or_else(|_| panic!("test address {client:?} is not ip:port"));
        self
    }

    /// On this listener port.
    pub fn port(mut self, port: u16) -> Self {
        self.head.listener_port = port;
        self
    }

    /// Over TLS the proxy terminated, with this SNI.
    pub fn tls(mut self, sni: &str) -> Self {
        self.head.scheme = Scheme::Https;
        self.head.sni = Some(sni.to_owned());
        self
    }

    /// On this connection.
    pub fn connection(mut self, id: u64) -> Self {
        self.head.connection_id = id;
        self
    }

    /// The head the host would pass a plugin with this interest: declared
    /// headers in their slots (several values joined with `, `, as the host
    /// does).
    pub fn head_for(&self, interest: &Interest) -> RequestHead {
        let mut head = self.head.clone();
        head.headers = interest
            .request_headers
            .iter()
            .map(|name| join(name, self.values(name)))
            .collect();
        head
    }

    /// Every value of `name` (case-insensitive).
    pub fn values(&self, name: &str) -> Vec<Vec<u8>> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The header names, lower-case, each once, in first-seen order.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (n, _) in &self.headers {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names
    }

    /// Every header, in order.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }
}

/// A response head as the host would pass it to the `response` hook of a
/// plugin with this interest.
pub fn response_head(
    interest: &Interest,
    context: u64,
    status: u16,
    headers: &[(&str, &str)],
) -> ResponseHead {
    let mut head = ResponseHead::new(context, status);
    head.headers = interest
        .response_headers
        .iter()
        .map(|name| {
            join(
                name,
                headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_bytes().to_vec())
                    .collect(),
            )
        })
        .collect();
    head
}

/// Several values of one header as the host joins them for a slot: `, `
/// (RFC 9110), `; ` for `cookie` (RFC 9113 §8.2.3).
fn join(name: &str, values: Vec<Vec<u8>>) -> Option<Vec<u8>> {
    let sep: &[u8] = if name.eq_ignore_ascii_case("cookie") {
        b"; "
    } else {
        b", "
    };
    let mut values = values.into_iter();
    let mut out = values.next()?;
    for v in values {
        out.extend_from_slice(sep);
        out.extend_from_slice(&v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_values_join_as_the_host_joins_them() {
        let mut interest = Interest::default();
        interest.request_header("cookie");
        interest.request_header("x-list");
        interest.request_header("x-absent");
        let head = Request::get("a", "/")
            .header("Cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-list", "1")
            .header("X-List", "2")
            .head_for(&interest);
        assert_eq!(
            head.headers,
            [Some(b"a=1; b=2".to_vec()), Some(b"1, 2".to_vec()), None]
        );
    }
}
