//! Checks on the HTTP hooks' answers and on a plugin's declared interest:
//! header names are tokens, values carry no CR/LF/NUL, statuses are in
//! range, redirect locations are clean, upstream ids exist.

use turnout_plugin_sdk::{Field, HeaderEdit, Interest, RequestDecision, ResponseDecision};

use super::{MAX_NAME, MAX_TARGETS, short, target};

const MAX_BODY: usize = 1 << 20;
const MAX_HEADERS: usize = 100;
const MAX_HEADER_VALUE: usize = 8 * 1024;
const MAX_LOCATION: usize = 8 * 1024;
/// A rewritten request target: what the host accepts from clients.
const MAX_PATH: usize = 8 * 1024;
/// Declared slots and upstreams: bounded, as every request lowers the slots.
const MAX_SLOTS: usize = 64;
const MAX_UPSTREAMS: usize = 100_000;
/// Headers that frame a message's body: the host frames what it sends, and
/// a plugin setting or removing them could make the client or the backend
/// read the body differently from the host (request smuggling).
const FRAMING_HEADERS: [&str; 2] = ["content-length", "transfer-encoding"];

/// A field name is an RFC 9110 token: one or more `tchar`.
fn header_name(what: &str, name: &str) -> Result<(), String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() {
        return Err(format!("{what} has an empty header name"));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "{what} header name is {} bytes long (at most {MAX_NAME})",
            name.len()
        ));
    }
    if !name.bytes().all(tchar) {
        return Err(format!("{what} header name {name:?} is not an HTTP token"));
    }
    if FRAMING_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return Err(format!(
            "{what} sets {name:?}: the host frames the body itself"
        ));
    }
    Ok(())
}

/// A field value is visible characters, spaces and tabs (RFC 9110): a CR or
/// LF would end the header and start another, a NUL is refused by peers.
fn field(what: &str, f: &Field) -> Result<(), String> {
    header_name(what, &f.name)?;
    if f.value.len() > MAX_HEADER_VALUE {
        return Err(format!(
            "{what} header {:?} is {} bytes long (at most {MAX_HEADER_VALUE})",
            f.name,
            f.value.len()
        ));
    }
    if f.value
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(format!(
            "{what} header {:?} has a control character (CR, LF, NUL, ...) in its value",
            f.name
        ));
    }
    Ok(())
}

fn count(what: &str, n: usize) -> Result<(), String> {
    if n > MAX_HEADERS {
        return Err(format!("{what} has {n} headers (at most {MAX_HEADERS})"));
    }
    Ok(())
}

fn edits(what: &str, list: &[HeaderEdit]) -> Result<(), String> {
    count(what, list.len())?;
    list.iter().try_for_each(|edit| match edit {
        HeaderEdit::Set(f) | HeaderEdit::Append(f) => field(what, f),
        HeaderEdit::Remove(name) => header_name(what, name),
    })
}

/// `upstreams`: how many the plugin declared, for the id check.
pub(crate) fn request(d: &RequestDecision, upstreams: usize) -> Result<(), String> {
    match d {
        RequestDecision::Pass => Ok(()),
        RequestDecision::Forward(f) => {
            if let Some(id) = f.upstream
                && id as usize >= upstreams
            {
                return Err(format!(
                    "forward to upstream {id}, but the plugin declared {upstreams}"
                ));
            }
            // The request line is rebuilt around it: it must be what the
            // http crate takes as a path (found by the
            // `plugin_answers` fuzz target), or the request would fail as if
            // the backend had refused it.
            if let Some(path) = &f.path
                && path.len() > MAX_PATH
            {
                return Err(format!(
                    "forward path is {} bytes long (at most {MAX_PATH})",
                    path.len()
                ));
            }
            if let Some(path) = &f.path
                && (!path.starts_with('/')
                    || path.bytes().any(|b| b <= b' ' || b == 0x7f)
                    || path.parse::<http::uri::PathAndQuery>().is_err())
            {
                return Err(format!(
                    "forward path {path:?} is not an absolute path without spaces, controls or characters a request target cannot carry (percent-encode them)"
                ));
            }
            edits("forward request edit", &f.request_edits)?;
            edits("forward response edit", &f.response_edits)
        }
        RequestDecision::Respond(r) => {
            // 1xx are interim answers, not a response.
            if !(200..=599).contains(&r.status) {
                return Err(format!("response status {} is not 200-599", r.status));
            }
            count("response", r.headers.len())?;
            r.headers.iter().try_for_each(|h| field("response", h))?;
            if r.body.len() > MAX_BODY {
                return Err(format!(
                    "response body is {} bytes (at most {MAX_BODY})",
                    r.body.len()
                ));
            }
            Ok(())
        }
        RequestDecision::Redirect(r) => {
            if ![301, 302, 303, 307, 308].contains(&r.status) {
                return Err(format!(
                    "redirect status {} is not 301/302/303/307/308",
                    r.status
                ));
            }
            if r.location.is_empty() {
                return Err("redirect location is empty".into());
            }
            if !r.location.is_ascii() {
                return Err(format!(
                    "redirect location {:?} is not ASCII (percent-encode it)",
                    r.location
                ));
            }
            // `short` refuses every control character, CR, LF and NUL among them.
            short("redirect location", &r.location, MAX_LOCATION)
        }
    }
}

pub(crate) fn response(d: &ResponseDecision) -> Result<(), String> {
    match d {
        ResponseDecision::Pass => Ok(()),
        ResponseDecision::Edit(list) => edits("response edit", list),
    }
}

/// What a plugin declares at init for its HTTP hooks.
pub(super) fn interest(i: &Interest) -> Result<(), String> {
    for (what, names) in [
        ("interest.request-headers", &i.request_headers),
        ("interest.response-headers", &i.response_headers),
    ] {
        if names.len() > MAX_SLOTS {
            return Err(format!(
                "{what} declares {} headers (at most {MAX_SLOTS})",
                names.len()
            ));
        }
        for name in names {
            // Framing headers may be read, just not set.
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(format!("{what} has {name:?}, which is not a header name"));
            }
        }
    }
    if i.upstreams.len() > MAX_UPSTREAMS {
        return Err(format!(
            "interest.upstreams has {} entries (at most {MAX_UPSTREAMS})",
            i.upstreams.len()
        ));
    }
    for (id, u) in i.upstreams.iter().enumerate() {
        if u.route.is_empty() {
            return Err(format!("interest.upstreams[{id}].route is empty"));
        }
        short("interest upstream route", &u.route, MAX_NAME)?;
        if u.targets.is_empty() || u.targets.len() > MAX_TARGETS {
            return Err(format!(
                "interest.upstreams[{id}] (route {:?}) has {} targets (1-{MAX_TARGETS})",
                u.route,
                u.targets.len()
            ));
        }
        u.targets.iter().try_for_each(target)?;
        websocket(id, u)?;
    }
    Ok(())
}

/// Shortest heartbeat period and pong wait: below it a plugin could make
/// the host ping in a loop.
const MIN_HEARTBEAT_MS: u64 = 100;
/// Longest: a day (and no overflow adding it to a clock).
const MAX_HEARTBEAT_MS: u64 = 86_400_000;

fn websocket(id: usize, u: &turnout_plugin_sdk::Upstream) -> Result<(), String> {
    let ws = &u.websocket;
    let bad = |what: &str, ms: u64| {
        Err(format!(
            "interest.upstreams[{id}] (route {:?}) has websocket {what} {ms} ms \
             ({MIN_HEARTBEAT_MS}-{MAX_HEARTBEAT_MS})",
            u.route
        ))
    };
    let range = MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS;
    match ws.ping_interval {
        Some(ms) if !range.contains(&ms) => bad("ping-interval", ms),
        Some(_) if !range.contains(&ws.ping_timeout) => bad("ping-timeout", ws.ping_timeout),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
