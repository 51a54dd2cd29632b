//! One request, from head to response: checks the host makes itself, the
//! plugin chain's `request` decision, and the answer — made here, or
//! forwarded to an upstream with the forwarding headers and the plugin's
//! edits, its response edited on the way back.
//!
//! ```text
//! head ─► checks (400/405/414/413) ─► ACME HTTP-01 answer ─► request hook ─┬► respond / redirect
//!                                               ├► none: 404, failure: 502
//!                                               └► forward ─► limit (503) ─► upstream (502/504) ─► edits, response hook
//! ```

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;
use turnout_plugin_sdk::{
    HttpForward, Method, RequestDecision, RequestHead, ResponseDecision, ResponseHead, Scheme,
    Upstream,
};

use super::headers::{self, Forwarded};
use super::respond::{Body, error_label, plain};
use super::timers::ConnState;
use super::upgrade;
use super::upstream::{self, UpBody, UpError};
use super::websocket;
use super::{AccessLog, Session};
use crate::plugins::{HeadSlots, LoadedPlugin, Requested};

/// Longest request target accepted (414 past it).
const MAX_URI: usize = 8 * 1024;

/// What the access log and metrics say about one request.
#[derive(Default)]
pub(super) struct Outcome {
    /// The upstream it went to (its route names the request's).
    pub(super) upstream: Option<Picked>,
    pub(super) error: Option<&'static str>,
    /// Why, for an upstream failure (the peer and the OS's words).
    pub(super) detail: Option<String>,
}

/// An upstream a request went to, kept by reference (no copy of its
/// names per request).
pub(super) struct Picked {
    /// The plugin whose interest declares it (`None`: the connection's route).
    plugin: Option<Arc<LoadedPlugin>>,
    id: Option<u32>,
    /// The target that answered (or the first, when none did).
    pub(super) target: usize,
}

impl Picked {
    pub(super) fn upstream<'a>(&'a self, s: &'a Session) -> Option<&'a Upstream> {
        match (&self.plugin, self.id) {
            (Some(p), Some(id)) => p.info().interest.upstreams.get(id as usize),
            _ => s.route.as_ref(),
        }
    }
}

/// The service hyper runs for each request on a client connection.
pub(super) async fn handle(
    session: Arc<Session>,
    state: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let h2 = req.version() == Version::HTTP_2;
    let inflight = state.begin(h2);
    let log = AccessLog::of(&req);
    let mut outcome = Outcome::default();
    let mut resp = if state.take_conflicting_framing() {
        // The body's end is ambiguous: answer, then close.
        let mut r = error(StatusCode::BAD_REQUEST);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    } else {
        // Boxed: the answer's future (the plugin call, the upstream
        // exchange, the hyper-util client's) is several KB, and hyper moves
        // this service future into place for every request — into a
        // spawned task for each h2 stream. Measured under h2 load: memmove
        // 7.4 % of the proxy's samples inline, 6.2 % boxed.
        Box::pin(answer(&session, &state, req, &mut outcome)).await
    };
    if outcome.error.is_none() && is_proxy_error(&resp) {
        outcome.error = Some(error_label(resp.status()));
    }
    if state.is_draining() && resp.status() != StatusCode::SWITCHING_PROTOCOLS && !h2 {
        // Said, not only done: the client knows not to send another
        // request here (hyper closes after an answer that says so).
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = resp.status().as_u16();
    let session2 = session.clone();
    resp.body_mut().on_done(move |bytes| {
        log.finish(&session2, status, bytes, started.elapsed(), &outcome);
        drop(inflight);
    });
    Ok(resp)
}

/// Answers made by the proxy itself carry this extension.
#[derive(Clone, Copy)]
struct ProxyMade;

fn is_proxy_error(resp: &Response<Body>) -> bool {
    resp.extensions().get::<ProxyMade>().is_some()
}

fn error(status: StatusCode) -> Response<Body> {
    let mut r = plain(status);
    r.extensions_mut().insert(ProxyMade);
    r
}

async fn answer(
    s: &Session,
    state: &Arc<ConnState>,
    mut req: Request<Incoming>,
    out: &mut Outcome,
) -> Response<Body> {
    if let Some(status) = check(&req) {
        return error(status);
    }
    // An ACME server's HTTP-01 validation, before any plugin or route.
    let acme_answer = match &s.acme {
        Some(c) => c.http01_anywhere(req.uri().path()).await,
        None => None,
    };
    if let Some(key_authorization) = acme_answer {
        tracing::info!(target: "turnout::acme", conn = s.id, client = %s.client,
            path = req.uri().path(), "HTTP-01 challenge answered");
        let mut r = Response::new(Body::full(key_authorization));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if s.acme_only {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return r;
    }
    if s.acme_only {
        // Let in for a validation, so nothing else: no plugin admitted it.
        let mut r = error(StatusCode::FORBIDDEN);
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let Some(authority) = authority(&req) else {
        return error(StatusCode::BAD_REQUEST);
    };
    let mut head = RequestHead::new(
        s.client,
        s.local.port(),
        Method::parse(req.method().as_str()),
        authority.clone(),
        req.uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    );
    head.connection_id = s.id;
    head.sni.clone_from(&s.sni);
    head.scheme = if s.https { Scheme::Https } else { Scheme::Http };
    let mut slots = HeadSlots::new(head);
    match s.chain.request(&mut slots, req.headers_mut()) {
        Requested::NoRoute => error(StatusCode::NOT_FOUND),
        Requested::Failed { plugin } => {
            tracing::debug!(conn = s.id, plugin = %plugin, "request hook failed: 502");
            out.error = Some("plugin-failure");
            error(StatusCode::BAD_GATEWAY)
        }
        Requested::Decided { plugin, decision } => match decision {
            RequestDecision::Pass => error(StatusCode::NOT_FOUND),
            RequestDecision::Respond(r) => {
                let mut resp = Response::new(Body::full(r.body));
                *resp.status_mut() =
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
                for f in r.headers {
                    headers::apply(
                        resp.headers_mut(),
                        &[turnout_plugin_sdk::HeaderEdit::Append(f)],
                    );
                }
                resp
            }
            RequestDecision::Redirect(r) => {
                let mut resp =
                    Response::new(Body::full(format!("Redirecting to {}\n", r.location)));
                *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
                if let Ok(v) = HeaderValue::from_str(&r.location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                resp
            }
            RequestDecision::Forward(f) => {
                let to = Forwarding {
                    plugin: &plugin,
                    authority: &authority,
                    state,
                };
                forward(s, to, f, req, out).await
            }
        },
    }
}

/// What the host refuses before any plugin sees the request. (A head
/// framed both ways never gets here: hyper drops its `Content-Length`, so
/// `timers::HeadScan` finds it in the bytes.)
pub(crate) fn check<B>(req: &Request<B>) -> Option<StatusCode> {
    // Two Hosts: a plugin would route on one, a backend might serve the other.
    if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
        return Some(StatusCode::BAD_REQUEST);
    }
    // A reverse proxy opens no tunnels, WebSocket over HTTP/2 aside.
    if req.method() == http::Method::CONNECT && !upgrade::is_h2_websocket(req) {
        return Some(StatusCode::METHOD_NOT_ALLOWED);
    }
    if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > MAX_URI {
        return Some(StatusCode::URI_TOO_LONG);
    }
    None
}

/// `:authority` / absolute-form authority, else `Host`; lower-cased.
pub(crate) fn authority<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_ascii_lowercase());
    }
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    (!host.is_empty() && !host.bytes().any(|b| b <= b' ')).then(|| host.to_ascii_lowercase())
}

/// Where a forwarded request came from, beside the session.
struct Forwarding<'a> {
    plugin: &'a Arc<LoadedPlugin>,
    /// The authority it was routed on.
    authority: &'a str,
    state: &'a Arc<ConnState>,
}

async fn forward(
    s: &Session,
    to: Forwarding<'_>,
    f: HttpForward,
    mut req: Request<Incoming>,
    out: &mut Outcome,
) -> Response<Body> {
    let Forwarding {
        plugin,
        authority,
        state,
    } = to;
    // An upgrade (WebSocket) keeps its handshake headers for this hop.
    let upgrade = upgrade::requested(&req);
    let Some(up) = upstream_for(s, plugin, f.upstream) else {
        out.error = Some("plugin-failure");
        return error(StatusCode::BAD_GATEWAY);
    };
    if upgrade.as_ref().is_some_and(upgrade::Asked::is_websocket) && !up.websocket.enabled {
        out.error = Some("websocket-disabled");
        return error(StatusCode::FORBIDDEN);
    }
    let on_client = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    out.upstream = Some(Picked {
        plugin: f.upstream.map(|_| plugin.clone()),
        id: f.upstream,
        target: 0,
    });
    // A limited route counts its requests in flight as the connection
    // counters count connections (`limits`), so plugins see them too.
    let slot = if up.max_requests > 0 {
        match s.routes.enter_route(&up.route, up.max_requests, 0) {
            Ok(slot) => Some(slot),
            Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE),
        }
    } else {
        None
    };
    if over_limit(&req, up.max_body) {
        return error(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let path = f.path.clone().unwrap_or_else(|| {
        req.uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
    });
    let (mut parts, body) = req.into_parts();
    let bodiless = hyper::body::Body::is_end_stream(&body);
    prepare_request(s, &mut parts.headers, authority, &f);
    if let Some(asked) = &upgrade {
        upgrade::restore(&mut parts.method, &mut parts.headers, asked);
    }
    let mut up_req = Request::from_parts(parts, limited(body, up.max_body));
    *up_req.version_mut() = Version::HTTP_11;
    // A re-encrypting route's own verification (its CA, `verify: false`,
    // `serverName`); other TLS upstreams verify against the system's roots.
    let route_tls = up.tls.then(|| s.tls.route(&up.route)).flatten();
    let to = upstream::Outbound {
        upstream: up,
        tls: route_tls.and_then(|r| r.upstream.clone()),
        server_name: route_tls.and_then(|r| r.config.upstream.server_name.clone()),
        path: &path,
        config: &s.config,
        connect_timeout: s.connect_timeout,
        metrics: &s.metrics,
        force_h1: upgrade.is_some(),
    };
    match upstream::send(to, up_req, bodiless).await {
        Ok((mut resp, i)) => {
            if let Some(p) = &mut out.upstream {
                p.target = i;
            }
            if let (Some(asked), Some(on_client)) = (&upgrade, on_client) {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    return switch(s, state, (asked, up), on_client, &mut resp);
                }
                if matches!(asked, upgrade::Asked::WebSocketOverH2) && resp.status().is_success() {
                    // A 2xx to an extended CONNECT opens the tunnel: an
                    // upstream that did not switch must not look like one.
                    out.error = Some("upstream-refused");
                    out.detail = Some(format!("answered {} to a WebSocket upgrade", resp.status()));
                    return error(StatusCode::BAD_GATEWAY);
                }
            }
            let mut resp = response(s, plugin, &f, resp, out);
            // In flight until its body has been sent.
            resp.body_mut().keep(slot);
            resp
        }
        Err(e) => upstream_failed(e, out),
    }
}

/// The upstream switched protocols: the client gets its 101 (HTTP/1.1) or
/// 200 (HTTP/2), and the two are relayed once both have upgraded.
fn switch(
    s: &Session,
    state: &Arc<ConnState>,
    (asked, up): (&upgrade::Asked, &Upstream),
    on_client: hyper::upgrade::OnUpgrade,
    resp: &mut http::Response<Incoming>,
) -> Response<Body> {
    let headers = upgrade::switching(resp, asked);
    let sides = upgrade::Sides {
        client: on_client,
        upstream: hyper::upgrade::on(resp),
    };
    let websocket = asked.is_websocket();
    let relay = websocket::Relay {
        conn: s.id,
        route: up.route.clone(),
        timers: s.upgrade,
        websocket,
        heartbeat: websocket
            .then(|| upgrade::heartbeat(&up.websocket))
            .flatten(),
        metrics: s.metrics.clone(),
    };
    upgrade::start(state, asked, sides, relay);
    let mut r = Response::new(Body::full(bytes::Bytes::new()));
    *r.status_mut() = match asked {
        upgrade::Asked::Upgrade(_) => StatusCode::SWITCHING_PROTOCOLS,
        upgrade::Asked::WebSocketOverH2 => StatusCode::OK,
    };
    *r.headers_mut() = headers;
    r
}

/// The proxy's answer when an upstream did not answer, with the reason
/// (and the peer's words) for the log.
fn upstream_failed(e: UpError, out: &mut Outcome) -> Response<Body> {
    let (status, label) = match e {
        UpError::Refused(why) => {
            out.detail = Some(why);
            (StatusCode::BAD_GATEWAY, "upstream-refused")
        }
        UpError::Reset(why) => {
            out.detail = Some(why);
            (StatusCode::BAD_GATEWAY, "upstream-reset")
        }
        UpError::Timeout => (StatusCode::GATEWAY_TIMEOUT, "upstream-timeout"),
        UpError::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body-too-large"),
    };
    out.error = Some(label);
    error(status)
}

/// A declared `Content-Length` past the route's body limit.
fn over_limit(req: &Request<Incoming>, max: Option<u64>) -> bool {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    matches!((max, declared), (Some(max), Some(len)) if len > max)
}

/// The body upstream, cut (as an error) past the route's limit.
fn limited(body: Incoming, max: Option<u64>) -> UpBody {
    match max {
        Some(max) => {
            http_body_util::Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).boxed()
        }
        None => body.map_err(Into::into).boxed(),
    }
}

/// The upstream a forward names: a declared one, or the connection's route.
fn upstream_for<'a>(
    s: &'a Session,
    plugin: &'a LoadedPlugin,
    id: Option<u32>,
) -> Option<&'a Upstream> {
    match id {
        Some(id) => plugin.info().interest.upstreams.get(id as usize),
        None => s.route.as_ref(),
    }
}

/// Hop-by-hop out, `Host` set to the authority the request was routed on
/// (the client's `Host`, or the absolute-form / `:authority` one, which
/// RFC 9112 §3.2.2 says wins — a backend must not see another name than the
/// one the plugins decided on), forwarding headers, then the plugin's edits.
fn prepare_request(s: &Session, h: &mut http::HeaderMap, authority: &str, f: &HttpForward) {
    headers::strip_hop_by_hop(h);
    headers::join_cookies(h);
    let routed_on = h
        .get(header::HOST)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(authority.as_bytes()));
    if !routed_on && let Ok(v) = HeaderValue::from_str(authority) {
        h.insert(header::HOST, v);
    }
    headers::set_forwarded(
        h,
        &Forwarded {
            values: &s.forwarded,
            // The previous hop: the client, or what a trusted PROXY header
            // named (an L4 balancer adds no X-Forwarded-For of its own).
            peer: headers::ip(s.client),
            trusted: &s.trusted,
            https: s.https,
            authority,
        },
    );
    headers::apply(h, &f.request_edits);
}

/// The upstream's response on its way back: hop-by-hop out, the forward's
/// response edits, then the plugin's `response` hook when it asked.
fn response(
    s: &Session,
    plugin: &LoadedPlugin,
    f: &HttpForward,
    resp: http::Response<Incoming>,
    out: &mut Outcome,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        // hyper decoded the body as chunked; a length beside it is stale.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::apply(&mut parts.headers, &f.response_edits);
    if let Some(context) = f.context
        && plugin.implements(turnout_plugin_sdk::Hooks::RESPONSE)
    {
        let mut head = ResponseHead::new(context, parts.status.as_u16());
        head.connection_id = s.id;
        head.headers = plugin.response_slots(&parts.headers);
        match plugin.response(&head) {
            Ok(ResponseDecision::Edit(edits)) => headers::apply(&mut parts.headers, &edits),
            Ok(ResponseDecision::Pass) => {}
            Err(_) if plugin.failure_policy() == crate::config::FailurePolicy::Open => {}
            Err(_) => {
                out.error = Some("plugin-failure");
                return error(StatusCode::BAD_GATEWAY);
            }
        }
    }
    Response::from_parts(parts, Body::upstream(body))
}
