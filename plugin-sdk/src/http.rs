//! What the HTTP hooks receive and return (added in WIT 0.2): request and response
//! heads with declared header slots, decisions, and the interest a plugin
//! declares at `init`.

use std::net::SocketAddr;

use crate::types::Target;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// CONNECT.
    Connect,
    /// OPTIONS.
    Options,
    /// TRACE.
    Trace,
    /// PATCH.
    Patch,
    /// Any other (extension) method, as sent.
    Other(String),
}

impl Method {
    /// From its name (case-sensitive, as HTTP methods are).
    pub fn parse(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "CONNECT" => Method::Connect,
            "OPTIONS" => Method::Options,
            "TRACE" => Method::Trace,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_owned()),
        }
    }

    /// Its name.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other(s) => s,
        }
    }
}

/// `http` or `https` (the proxy terminated TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plaintext.
    Http,
    /// TLS terminated by the proxy.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One HTTP request's head, as the `request` hook sees it. Only the
/// headers the plugin declared in its [`Interest`] are here (in
/// [`RequestHead::headers`], in declared order); any other is one
/// [`crate::host::header`] call away.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestHead {
    /// The connection it arrived on.
    pub connection_id: u64,
    /// The client (from a trusted PROXY header when there was one).
    pub client: SocketAddr,
    /// The local port the client connected to.
    pub listener_port: u16,
    /// TLS server name, on terminated TLS.
    pub sni: Option<String>,
    /// Method.
    pub method: Method,
    /// `https` when the proxy terminated TLS.
    pub scheme: Scheme,
    /// `Host` / `:authority`, lower-cased, port kept.
    pub authority: String,
    /// Path and query, as received.
    pub path: String,
    /// The declared request headers' values, in [`Interest::request_headers`]
    /// order (`None`: absent).
    pub headers: Vec<Option<Vec<u8>>>,
}

impl RequestHead {
    /// A `GET` for `authority` + `path` from `client` on `listener_port`,
    /// over plaintext, with no declared headers filled in.
    pub fn new(
        client: SocketAddr,
        listener_port: u16,
        method: Method,
        authority: impl Into<String>,
        path: impl Into<String>,
    ) -> Self {
        Self {
            connection_id: 0,
            client,
            listener_port,
            sni: None,
            method,
            scheme: Scheme::Http,
            authority: authority.into(),
            path: path.into(),
            headers: Vec::new(),
        }
    }

    /// The value in declared slot `i` (`None`: absent, or no such slot).
    pub fn slot(&self, i: usize) -> Option<&[u8]> {
        self.headers.get(i).and_then(|v| v.as_deref())
    }

    /// The value in declared slot `i`, if it is UTF-8.
    pub fn slot_str(&self, i: usize) -> Option<&str> {
        self.slot(i).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The authority's host: without the port, without a trailing dot.
    pub fn host(&self) -> &str {
        let a = self.authority.as_str();
        let host = if a.starts_with('[') {
            // `[::1]:8080` → `[::1]`
            a.find(']').map_or(a, |end| &a[..=end])
        } else {
            // Byte loops here and below: `rsplit_once`/`split_once` search
            // through `memrchr`/`memchr`, whose set-up costs more than these
            // few bytes in a plugin (callgrind: a warm `routes` request call
            // 10 047 → 9 864 instructions).
            match a.bytes().rposition(|b| b == b':') {
                Some(i) if a.as_bytes()[i + 1..].iter().all(u8::is_ascii_digit) => &a[..i],
                _ => a,
            }
        };
        host.strip_suffix('.').unwrap_or(host)
    }

    /// Where the query starts (its `?`).
    fn query_start(&self) -> Option<usize> {
        self.path.bytes().position(|b| b == b'?')
    }

    /// The path without the query.
    pub fn path_only(&self) -> &str {
        self.query_start().map_or(&self.path, |i| &self.path[..i])
    }

    /// The query with its `?`, or `""`.
    pub fn query(&self) -> &str {
        self.query_start().map_or("", |i| &self.path[i..])
    }
}

/// A header name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Name (a token; case does not matter).
    pub name: String,
    /// Value (bytes; no CR, LF or NUL).
    pub value: Vec<u8>,
}

impl Field {
    /// A field.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A header edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replace every value.
    Set(Field),
    /// Add a value, keeping the others.
    Append(Field),
    /// Remove by name.
    Remove(String),
}

impl HeaderEdit {
    /// `Set`.
    pub fn set(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        HeaderEdit::Set(Field::new(name, value))
    }

    /// `Append`.
    pub fn append(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        HeaderEdit::Append(Field::new(name, value))
    }

    /// `Remove`.
    pub fn remove(name: impl Into<String>) -> Self {
        HeaderEdit::Remove(name.into())
    }
}

/// Forward a request: to a declared upstream (or the connection's route),
/// optionally with a new path and header edits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpForward {
    /// Index into [`Interest::upstreams`]; `None`: the targets of the route
    /// the connection was given (terminated TLS only).
    pub upstream: Option<u32>,
    /// Replace path and query.
    pub path: Option<String>,
    /// Edits on the request sent upstream.
    pub request_edits: Vec<HeaderEdit>,
    /// Edits on the response sent back.
    pub response_edits: Vec<HeaderEdit>,
    /// Hands the response to the `response` hook with this value.
    pub context: Option<u64>,
}

impl HttpForward {
    /// To upstream `id`.
    pub fn to(id: u32) -> Self {
        Self {
            upstream: Some(id),
            ..Self::default()
        }
    }

    /// To the connection's route.
    pub fn to_route() -> Self {
        Self::default()
    }

    /// Adds a request edit.
    pub fn edit_request(mut self, edit: HeaderEdit) -> Self {
        self.request_edits.push(edit);
        self
    }

    /// Adds a response edit.
    pub fn edit_response(mut self, edit: HeaderEdit) -> Self {
        self.response_edits.push(edit);
        self
    }

    /// Rewrites path and query.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Asks for the `response` hook with `context`.
    pub fn context(mut self, context: u64) -> Self {
        self.context = Some(context);
        self
    }
}

/// A response made by the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 200-599.
    pub status: u16,
    /// Headers.
    pub headers: Vec<Field>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// `status` with a `text/plain` body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![Field::new("content-type", "text/plain; charset=utf-8")],
            body: body.into().into_bytes(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Field::new(name, value));
        self
    }
}

/// A redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// Absolute URL or absolute path.
    pub location: String,
}

/// Answer of the `request` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDecision {
    /// No opinion (everyone passing is a 404).
    Pass,
    /// Send it upstream.
    Forward(HttpForward),
    /// Answer it here.
    Respond(Response),
    /// Redirect the client.
    Redirect(Redirect),
}

/// An upstream response, as the `response` hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseHead {
    /// The connection.
    pub connection_id: u64,
    /// [`HttpForward::context`].
    pub context: u64,
    /// Status.
    pub status: u16,
    /// The declared response headers' values, in
    /// [`Interest::response_headers`] order.
    pub headers: Vec<Option<Vec<u8>>>,
}

impl ResponseHead {
    /// A response head.
    pub fn new(context: u64, status: u16) -> Self {
        Self {
            connection_id: 0,
            context,
            status,
            headers: Vec::new(),
        }
    }
}

/// Answer of the `response` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseDecision {
    /// No change.
    Pass,
    /// These edits, in order.
    Edit(Vec<HeaderEdit>),
}

/// How the host speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendProtocol {
    /// HTTP/2 when a TLS target offers it by ALPN, else HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (ALPN on TLS, prior knowledge in cleartext).
    Http2,
}

/// A route's targets, as requests are sent to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The route's name (logs, metrics).
    pub route: String,
    /// Tried in order on connect failure.
    pub targets: Vec<Target>,
    /// TLS to the targets.
    pub tls: bool,
    /// Protocol.
    pub protocol: BackendProtocol,
    /// Requests in flight; 0 is unlimited (past it: 503).
    pub max_requests: u32,
    /// Largest request body (past it: 413).
    pub max_body: Option<u64>,
    /// WebSocket upgrades sent here.
    pub websocket: WebSocketPolicy,
}

/// What the host does with WebSocket upgrades sent to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketPolicy {
    /// `false`: an upgrade to `websocket` is a 403.
    pub enabled: bool,
    /// Ping the client this often (ms), between frames; `None`: no
    /// heartbeat.
    pub ping_interval: Option<u64>,
    /// No pong this long (ms) after a ping: close (1001) both sides.
    pub ping_timeout: u64,
}

impl WebSocketPolicy {
    /// SmartProxy's `websocket.pingInterval` default.
    pub const PING_INTERVAL: u64 = 30_000;
    /// SmartProxy's `websocket.pingTimeout` default.
    pub const PING_TIMEOUT: u64 = 10_000;
}

impl Default for WebSocketPolicy {
    /// Enabled, pinging every 30 s, closing 10 s after an unanswered ping.
    fn default() -> Self {
        Self {
            enabled: true,
            ping_interval: Some(Self::PING_INTERVAL),
            ping_timeout: Self::PING_TIMEOUT,
        }
    }
}

impl Upstream {
    /// Plain HTTP to `targets`, no limits.
    pub fn new(route: impl Into<String>, targets: Vec<Target>) -> Self {
        Self {
            route: route.into(),
            targets,
            tls: false,
            protocol: BackendProtocol::Auto,
            max_requests: 0,
            max_body: None,
            websocket: WebSocketPolicy::default(),
        }
    }
}

/// What a plugin wants handed to its HTTP hooks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interest {
    /// Request header names (lower-case) for [`RequestHead::headers`].
    pub request_headers: Vec<String>,
    /// Response header names for [`ResponseHead::headers`].
    pub response_headers: Vec<String>,
    /// Upstreams, addressed by index.
    pub upstreams: Vec<Upstream>,
}

impl Interest {
    /// Declares a request header; returns its slot (an existing one when the
    /// name was declared already).
    pub fn request_header(&mut self, name: &str) -> usize {
        slot_for(&mut self.request_headers, name)
    }

    /// Declares a response header; returns its slot.
    pub fn response_header(&mut self, name: &str) -> usize {
        slot_for(&mut self.response_headers, name)
    }

    /// Declares an upstream; returns its id.
    pub fn upstream(&mut self, upstream: Upstream) -> u32 {
        self.upstreams.push(upstream);
        u32::try_from(self.upstreams.len() - 1).unwrap_or(u32::MAX)
    }
}

fn slot_for(names: &mut Vec<String>, name: &str) -> usize {
    let name = name.to_ascii_lowercase();
    if let Some(i) = names.iter().position(|n| *n == name) {
        return i;
    }
    names.push(name);
    names.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(authority: &str, path: &str) -> RequestHead {
        RequestHead::new(
            "127.0.0.1:1".parse().unwrap(),
            80,
            Method::Get,
            authority,
            path,
        )
    }

    #[test]
    fn host_strips_ports_and_trailing_dots() {
        assert_eq!(head("example.com:8080", "/").host(), "example.com");
        assert_eq!(head("example.com.", "/").host(), "example.com");
        assert_eq!(head("[::1]:8080", "/").host(), "[::1]");
        assert_eq!(head("[::1]", "/").host(), "[::1]");
        assert_eq!(head("a:b", "/").host(), "a:b");
        assert_eq!(head("example.com:", "/").host(), "example.com");
        assert_eq!(head("a:1:2", "/").host(), "a:1");
    }

    #[test]
    fn path_and_query_split_at_the_first_question_mark() {
        let h = head("a", "/x/y?q=1?2");
        assert_eq!(h.path_only(), "/x/y");
        assert_eq!(h.query(), "?q=1?2");
        assert_eq!(head("a", "/x").query(), "");
    }

    #[test]
    fn declaring_a_header_twice_gives_one_slot() {
        let mut i = Interest::default();
        assert_eq!(i.request_header("Cookie"), 0);
        assert_eq!(i.request_header("x-ab"), 1);
        assert_eq!(i.request_header("cookie"), 0);
        assert_eq!(i.request_headers, ["cookie", "x-ab"]);
    }

    #[test]
    fn methods_round_trip() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "PURGE",
        ] {
            assert_eq!(Method::parse(m).as_str(), m);
        }
    }
}
