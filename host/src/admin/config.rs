//! The admin API's configuration endpoints:
//!
//! * `GET /api/config` — the running document (secrets shown as
//!   `"[redacted]"`), its version in `ETag`;
//! * `PUT /api/config` — replace the whole document;
//! * `PUT /api/routes` — replace the route list (a JSON array, or an
//!   object with `routes`).
//!
//! Writes are off unless `admin.token` (or `admin.tokenFile`) is set, and
//! then need `Authorization: Bearer <token>`, as reads of the
//! configuration then do too. A write may carry `If-Match`
//! with the version it was made from: another change in between is a 409.
//! The change itself is made by whoever owns the configuration (the app's
//! reconfigure task, through [`ConfigRequest`]), one at a time, exactly as
//! a SIGHUP would be.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, AUTHORIZATION, ETAG, HeaderValue, IF_MATCH, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::{AdminState, error, json_response};
use crate::config::ConfigError;
use crate::config::document::RouteChanges;
use crate::proxy::ListenerChange;

/// The largest body a write may carry.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What the admin API asks of the configuration's owner.
#[derive(Debug)]
pub enum ConfigRequest {
    /// The running document, redacted, and its version.
    Get(oneshot::Sender<ConfigView>),
    /// Replace the document or its routes.
    Replace {
        /// What to replace.
        change: Change,
        /// `If-Match`: the version the change was made from.
        if_match: Option<String>,
        /// The outcome.
        reply: oneshot::Sender<Result<Applied, Refusal>>,
    },
}

/// A requested change.
#[derive(Debug)]
pub enum Change {
    /// A whole new document.
    Document(Value),
    /// A new route list, the rest of the document kept.
    Routes(Vec<Value>),
}

/// The running configuration as the API shows it.
#[derive(Debug, Clone)]
pub struct ConfigView {
    /// The document, secrets redacted.
    pub document: Value,
    /// Its version (the `ETag`, quoted).
    pub version: String,
}

/// A change that is now in force.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The new version (quoted).
    pub version: String,
    /// Routes added, removed, changed.
    pub routes: RouteChanges,
    /// Addresses opened and closed.
    pub listeners: ListenerChange,
    /// Keys whose new values take effect only after a restart.
    pub restart_needed: Vec<&'static str>,
    /// Written back to the config file (`admin.persist`).
    pub persisted: bool,
}

/// Why a change was not made (nothing changed).
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The document has problems (all of them).
    Invalid(Vec<ConfigError>),
    /// `If-Match` names an older version.
    Conflict {
        /// The version in force (quoted).
        version: String,
    },
    /// Something outside the document failed (a port, the file).
    Failed(String),
    /// The proxy is draining: it takes no more changes.
    Unavailable(String),
}

/// Serves `/api/config` and `/api/routes`.
pub(super) async fn handle(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(owner) = state.config.get() else {
        return error(
            StatusCode::NOT_FOUND,
            "configuration endpoints are not available here",
        );
    };
    let routes = req.uri().path() == "/api/routes";
    match (req.method(), routes) {
        // Once a token is set it guards reads of the configuration too:
        // even redacted, it maps the backends.
        (&Method::GET | &Method::HEAD, false) => match state.token() {
            Some(_) => match refuse_unauthorized(state, &req) {
                Some(refused) => refused,
                None => get(owner).await,
            },
            None => get(owner).await,
        },
        (&Method::PUT, _) => match refuse_unauthorized(state, &req) {
            Some(refused) => refused,
            None => put(owner, req, routes).await,
        },
        _ => {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                if routes {
                    "PUT replaces the route list; GET /api/config shows it"
                } else {
                    "GET shows the configuration, PUT replaces it"
                },
            );
            let allow = if routes { "PUT" } else { "GET, HEAD, PUT" };
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static(allow));
            r
        }
    }
}

async fn get(owner: &mpsc::Sender<ConfigRequest>) -> Response<Full<Bytes>> {
    let (tx, rx) = oneshot::channel();
    if owner.send(ConfigRequest::Get(tx)).await.is_err() {
        return gone();
    }
    let Ok(view) = rx.await else {
        return gone();
    };
    with_version(json_response(&view.document), &view.version)
}

fn gone() -> Response<Full<Bytes>> {
    error(StatusCode::SERVICE_UNAVAILABLE, "the proxy is stopping")
}

fn with_version(mut r: Response<Full<Bytes>>, version: &str) -> Response<Full<Bytes>> {
    if let Ok(v) = HeaderValue::from_str(version) {
        r.headers_mut().insert(ETAG, v);
    }
    r
}

/// The write endpoints' gate: off without a token (403), 401 without the
/// right one, `None` to go ahead. Failures are logged so a guessing
/// client shows up.
fn refuse_unauthorized(
    state: &AdminState,
    req: &Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    let Some(token) = state.token() else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "the write endpoints are off: set admin.token (or admin.tokenFile) in the config to turn them on",
        ));
    };
    // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
    let given = req.headers().get(AUTHORIZATION).and_then(|v| {
        let v = v.as_bytes();
        (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..])
    });
    let unauthorized = |message: &str| {
        tracing::warn!(path = req.uri().path(), "admin API: {message}");
        let mut r = error(StatusCode::UNAUTHORIZED, message);
        r.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"turnout admin\""),
        );
        r
    };
    match given {
        None => Some(unauthorized(
            "this endpoint needs Authorization: Bearer <admin.token>",
        )),
        Some(given) if !same_secret(given, token.as_bytes()) => {
            Some(unauthorized("the bearer token is not admin.token"))
        }
        Some(_) => None,
    }
}

/// Compares two secrets in time that depends on neither: both are hashed
/// first (so their lengths do not show either), then every byte of the
/// digests is compared.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn put(
    owner: &mpsc::Sender<ConfigRequest>,
    req: Request<Incoming>,
    routes: bool,
) -> Response<Full<Bytes>> {
    // A value that is not text cannot name a version: kept (lossily) so it
    // is a conflict, not dropped into an unconditional write.
    let if_match = req
        .headers()
        .get(IF_MATCH)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than {MAX_BODY} bytes"),
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body could not be read: {e}"),
            );
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("body: not JSON: {e}")),
    };
    let change = if routes {
        match value {
            Value::Array(list) => Change::Routes(list),
            Value::Object(mut o) if o.len() == 1 && o.contains_key("routes") => {
                match o.remove("routes") {
                    Some(Value::Array(list)) => Change::Routes(list),
                    _ => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "routes: must be an array of routes",
                        );
                    }
                }
            }
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "body: expected an array of routes, or {\"routes\": [...]}",
                );
            }
        }
    } else {
        Change::Document(value)
    };
    let (tx, rx) = oneshot::channel();
    let request = ConfigRequest::Replace {
        change,
        if_match,
        reply: tx,
    };
    if owner.send(request).await.is_err() {
        return gone();
    }
    match rx.await {
        Err(_) => gone(),
        Ok(Ok(applied)) => with_version(json_response(&applied_json(&applied)), &applied.version),
        Ok(Err(Refusal::Invalid(problems))) => {
            let mut r = json_response(&json!({
                "error": format!("the configuration was refused ({} problem(s)); nothing changed", problems.len()),
                "problems": problems.iter().map(|p| json!({"path": p.path, "message": p.message})).collect::<Vec<_>>(),
            }));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
        Ok(Err(Refusal::Conflict { version })) => {
            let mut r = json_response(&json!({
                "error": format!("If-Match names another version than the one in force ({version}): someone changed the configuration since; GET /api/config, apply your change to it and try again"),
                "version": version,
            }));
            *r.status_mut() = StatusCode::CONFLICT;
            with_version(r, &version)
        }
        Ok(Err(Refusal::Failed(message))) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{message}; nothing changed"),
        ),
        Ok(Err(Refusal::Unavailable(message))) => error(StatusCode::SERVICE_UNAVAILABLE, &message),
    }
}

fn applied_json(a: &Applied) -> Value {
    let addrs = |l: &[std::net::SocketAddr]| l.iter().map(ToString::to_string).collect::<Vec<_>>();
    json!({
        "version": a.version,
        "routes": {
            "added": a.routes.added,
            "removed": a.routes.removed,
            "changed": a.routes.changed,
        },
        "listeners": {
            "added": addrs(&a.listeners.added),
            "removed": addrs(&a.listeners.removed),
        },
        "restartNeeded": a.restart_needed,
        "persisted": a.persisted,
    })
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_by_content_only() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
