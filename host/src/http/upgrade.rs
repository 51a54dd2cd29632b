//! Upgrade handshakes: an HTTP/1.1 `Upgrade` (WebSocket or another
//! protocol) goes upstream with its `Upgrade` and `Connection: upgrade`;
//! an HTTP/2 extended CONNECT with `:protocol websocket` (RFC 8441) goes
//! upstream as an HTTP/1.1 WebSocket upgrade. When the upstream answers
//! 101, the client gets its 101 (HTTP/1.1) or 200 (HTTP/2), and the two
//! streams are handed to `websocket::relay`.
//!
//! An HTTP/1.1 relay runs beside the connection's HTTP task, which waits
//! for it (`ConnState::upgraded`), so the connection's counters, drain and
//! closing log line cover the upgraded life too. An HTTP/2 one is one
//! stream of a connection that goes on serving others: it holds a tunnel
//! mark (`ConnState::tunnel`) that keeps the connection's HTTP idle timer
//! off while it lives.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::timers::ConnState;
use super::websocket::{self, Heartbeat, Relay};

/// What a request asks to become.
#[derive(Debug, Clone)]
pub(super) enum Asked {
    /// HTTP/1.1 `Connection: upgrade` with `Upgrade: <protocol>`.
    Upgrade(HeaderValue),
    /// HTTP/2 extended CONNECT, `:protocol websocket`.
    WebSocketOverH2,
}

impl Asked {
    pub(super) fn is_websocket(&self) -> bool {
        match self {
            Asked::Upgrade(p) => p.to_str().is_ok_and(|p| {
                p.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
            }),
            Asked::WebSocketOverH2 => true,
        }
    }
}

/// The upgrade a request asks for, when it does.
pub(super) fn requested<B>(req: &Request<B>) -> Option<Asked> {
    if req.method() == Method::CONNECT {
        return is_h2_websocket(req).then_some(Asked::WebSocketOverH2);
    }
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| {
        req.headers()
            .get(header::UPGRADE)
            .cloned()
            .map(Asked::Upgrade)
    })
    .flatten()
}

/// An HTTP/2 CONNECT for a WebSocket (RFC 8441 §4), the only CONNECT a
/// reverse proxy serves.
pub(super) fn is_h2_websocket<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Makes a request whose hop-by-hop headers were stripped the upstream's
/// HTTP/1.1 upgrade: this hop's `Connection: upgrade` and `Upgrade`, and
/// for an HTTP/2 WebSocket, the GET and key of an HTTP/1.1 handshake
/// (RFC 8441 §5: version, subprotocols and extensions pass as they are).
pub(super) fn restore(method: &mut Method, headers: &mut HeaderMap, asked: &Asked) {
    let protocol = match asked {
        Asked::Upgrade(p) => p.clone(),
        Asked::WebSocketOverH2 => {
            *method = Method::GET;
            headers.insert(SEC_WEBSOCKET_KEY, fresh_key());
            HeaderValue::from_static("websocket")
        }
    };
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

const SEC_WEBSOCKET_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
const SEC_WEBSOCKET_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");

/// A handshake key (16 random bytes, base64): the upstream proves with it
/// that it speaks WebSocket; the HTTP/2 client never sees it.
fn fresh_key() -> HeaderValue {
    use base64::Engine as _;
    let mut key = [0u8; 16];
    crate::net::random(&mut key);
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// The client's answer to the upstream's 101: the upstream's headers less
/// hop-by-hop ones, with the upgrade restored (HTTP/1.1), or without the
/// HTTP/1.1 handshake's own headers (HTTP/2, whose answer is a 200).
pub(super) fn switching<B>(resp: &Response<B>, asked: &Asked) -> HeaderMap {
    let mut headers = resp.headers().clone();
    super::headers::strip_hop_by_hop(&mut headers);
    match asked {
        Asked::Upgrade(protocol) => {
            let upstream_protocol = resp.headers().get(header::UPGRADE).unwrap_or(protocol);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, upstream_protocol.clone());
        }
        Asked::WebSocketOverH2 => {
            headers.remove(SEC_WEBSOCKET_ACCEPT);
        }
    }
    headers
}

/// Both sides of an upgrade, once the upstream said 101.
pub(super) struct Sides {
    pub(super) client: OnUpgrade,
    pub(super) upstream: OnUpgrade,
}

/// Starts the relay of an upgrade the upstream accepted: beside the
/// connection (HTTP/1.1) or as one of its streams (HTTP/2).
pub(super) fn start(state: &Arc<ConnState>, asked: &Asked, sides: Sides, relay: Relay) {
    let conn = relay.conn;
    let run = async move {
        let (client, upstream) = match tokio::try_join!(sides.client, sides.upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(conn, error = %e, "upgrade not completed");
                return;
            }
        };
        websocket::relay(TokioIo::new(client), TokioIo::new(upstream), relay).await;
    };
    match asked {
        Asked::Upgrade(_) => state.upgraded(tokio::spawn(run)),
        Asked::WebSocketOverH2 => {
            let tunnel = state.tunnel();
            state.add_tunnel(tokio::spawn(async move {
                run.await;
                drop(tunnel);
            }));
        }
    }
}

/// The heartbeat an upstream's policy asks for.
pub(super) fn heartbeat(p: &turnout_plugin_sdk::WebSocketPolicy) -> Option<Heartbeat> {
    let ms = std::time::Duration::from_millis;
    p.ping_interval.map(|interval| Heartbeat {
        interval: ms(interval),
        timeout: ms(p.ping_timeout),
    })
}
