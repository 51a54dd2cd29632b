//! Checks on what a plugin returns. The component model guarantees the
//! shapes; these guarantee the values are usable, so a buggy plugin is
//! counted as `malformed` instead of reaching the byte path.

use turnout_plugin_sdk::{
    AdmitDecision, Header, HeaderEdit, PluginInfo, RequestDecision, RouteDecision, Target,
};

const MAX_NAME: usize = 256;
const MAX_TARGETS: usize = 64;
const MAX_HOST: usize = 253;
const MAX_BODY: usize = 1 << 20;
const MAX_HEADERS: usize = 100;
const MAX_HEADER_VALUE: usize = 8 * 1024;
const MAX_LOCATION: usize = 8 * 1024;
/// Headers that frame a message's body: the host frames what it sends, and
/// a plugin setting or removing them could make the client or the backend
/// read the body differently from the host (request smuggling).
const FRAMING_HEADERS: [&str; 2] = ["content-length", "transfer-encoding"];

fn short(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes long (at most {max})", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} contains control characters"));
    }
    Ok(())
}

pub(crate) fn info(info: &PluginInfo) -> Result<(), String> {
    if info.name.is_empty() {
        return Err("plugin-info.name is empty".into());
    }
    short("plugin-info.name", &info.name, MAX_NAME)?;
    short("plugin-info.version", &info.version, MAX_NAME)?;
    for r in &info.listen {
        if r.from == 0 || r.from > r.to {
            return Err(format!(
                "plugin-info.listen has an invalid range {}-{}",
                r.from, r.to
            ));
        }
    }
    Ok(())
}

pub(crate) fn admit(d: &AdmitDecision) -> Result<(), String> {
    match d {
        AdmitDecision::Deny(reason) => short("deny reason", reason, MAX_NAME),
        AdmitDecision::Pass | AdmitDecision::Allow => Ok(()),
    }
}

pub(crate) fn route(d: &RouteDecision) -> Result<(), String> {
    match d {
        RouteDecision::Pass => Ok(()),
        RouteDecision::Reject(r) => short("reject reason", &r.reason, MAX_NAME),
        RouteDecision::Forward(f) => {
            if f.route.is_empty() {
                return Err("forward.route is empty".into());
            }
            short("forward.route", &f.route, MAX_NAME)?;
            if f.targets.is_empty() {
                return Err(format!("forward to route {:?} has no targets", f.route));
            }
            if f.targets.len() > MAX_TARGETS {
                return Err(format!(
                    "forward has {} targets (at most {MAX_TARGETS})",
                    f.targets.len()
                ));
            }
            f.targets.iter().try_for_each(target)
        }
    }
}

fn target(t: &Target) -> Result<(), String> {
    if t.host.is_empty() || t.port == 0 {
        return Err(format!(
            "forward target {:?}:{} is not an address",
            t.host, t.port
        ));
    }
    short("forward target host", &t.host, MAX_HOST)
}

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
fn header(what: &str, h: &Header) -> Result<(), String> {
    header_name(what, &h.name)?;
    if h.value.len() > MAX_HEADER_VALUE {
        return Err(format!(
            "{what} header {:?} is {} bytes long (at most {MAX_HEADER_VALUE})",
            h.name,
            h.value.len()
        ));
    }
    if h.value
        .bytes()
        .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(format!(
            "{what} header {:?} has a control character (CR, LF, NUL, ...) in its value",
            h.name
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

pub(crate) fn request(d: &RequestDecision) -> Result<(), String> {
    match d {
        RequestDecision::Pass => Ok(()),
        RequestDecision::Forward(f) => {
            if let Some(t) = &f.target {
                target(t)?;
            }
            count("forward", f.edits.len())?;
            for edit in &f.edits {
                match edit {
                    HeaderEdit::Set(h) | HeaderEdit::Add(h) => header("forward edit", h)?,
                    HeaderEdit::Remove(name) => header_name("forward edit", name)?,
                }
            }
            Ok(())
        }
        RequestDecision::Respond(r) => {
            // 1xx are interim answers, not a response.
            if !(200..=599).contains(&r.status) {
                return Err(format!("response status {} is not 200-599", r.status));
            }
            count("response", r.headers.len())?;
            for h in &r.headers {
                header("response", h)?;
            }
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
            // `short` refuses every control character, CR, LF and NUL among them.
            short("redirect location", &r.location, MAX_LOCATION)
        }
    }
}

#[cfg(test)]
mod tests {
    use turnout_plugin_sdk::{HttpForward, Redirect, Response};

    use super::*;

    fn respond(status: u16, headers: &[(&str, &str)]) -> RequestDecision {
        RequestDecision::Respond(Response {
            status,
            headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
            body: b"no".to_vec(),
        })
    }

    fn forward(target: Option<Target>, edits: Vec<HeaderEdit>) -> RequestDecision {
        RequestDecision::Forward(HttpForward { target, edits })
    }

    fn redirect(location: &str, status: u16) -> RequestDecision {
        RequestDecision::Redirect(Redirect {
            location: location.to_owned(),
            status,
        })
    }

    /// The error, with a panic naming the decision if it was accepted.
    fn refused(d: RequestDecision) -> String {
        match request(&d) {
            Err(e) => e,
            Ok(()) => panic!("accepted {d:?}"),
        }
    }

    #[test]
    fn good_request_decisions_pass() {
        let good = [
            RequestDecision::Pass,
            forward(None, vec![]),
            forward(
                Some(Target::new("backend.internal", 8080)),
                vec![
                    HeaderEdit::Set(Header::new("X-Forwarded-Proto", "https")),
                    HeaderEdit::Add(Header::new("x-tags", "a,\tb ; q=\"1\" é")),
                    HeaderEdit::Add(Header::new("x-empty", "")),
                    HeaderEdit::Remove("Cookie".into()),
                    HeaderEdit::Set(Header::new("!#$%&'*+-.^_`|~09azAZ", "v")),
                ],
            ),
            respond(200, &[("content-type", "text/plain")]),
            respond(599, &[]),
            redirect("https://example.com/a?b=c#d", 308),
            redirect("/relative", 302),
        ];
        for d in good {
            assert_eq!(request(&d), Ok(()), "{d:?}");
        }
    }

    #[test]
    fn header_names_must_be_tokens() {
        for name in [
            "", "x y", "x:y", "x\r\ny", "x\0", "é", "(x)", "x/y", "\"x\"",
        ] {
            let e = refused(respond(200, &[(name, "v")]));
            assert!(e.contains("header name"), "{name:?}: {e}");
            let e = refused(forward(None, vec![HeaderEdit::Remove(name.into())]));
            assert!(e.contains("header name"), "{name:?}: {e}");
        }
        let long = "x".repeat(MAX_NAME + 1);
        assert!(refused(respond(200, &[(&long, "v")])).contains("bytes long"));
    }

    #[test]
    fn header_values_have_no_cr_lf_nul_or_other_controls() {
        for value in [
            "a\r\nSet-Cookie: x=1",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\x01b",
            "a\x7fb",
        ] {
            let e = refused(respond(200, &[("x-a", value)]));
            assert!(e.contains("control character"), "{value:?}: {e}");
            for edit in [
                HeaderEdit::Set(Header::new("x-a", value)),
                HeaderEdit::Add(Header::new("x-a", value)),
            ] {
                let e = refused(forward(None, vec![edit]));
                assert!(e.contains("control character"), "{value:?}: {e}");
            }
        }
        let long = "v".repeat(MAX_HEADER_VALUE + 1);
        assert!(refused(respond(200, &[("x-a", &long)])).contains("bytes long"));
    }

    #[test]
    fn framing_headers_are_the_hosts() {
        for name in ["Content-Length", "transfer-encoding"] {
            assert!(refused(respond(200, &[(name, "5")])).contains("frames the body"));
            let edits = [
                HeaderEdit::Set(Header::new(name, "0")),
                HeaderEdit::Add(Header::new(name, "chunked")),
                HeaderEdit::Remove(name.into()),
            ];
            for edit in edits {
                assert!(refused(forward(None, vec![edit])).contains("frames the body"));
            }
        }
    }

    #[test]
    fn too_many_headers_are_refused() {
        let edits = vec![HeaderEdit::Remove("x-a".into()); MAX_HEADERS + 1];
        assert!(refused(forward(None, edits)).contains("headers (at most"));
        let headers = vec![("x-a", "v"); MAX_HEADERS + 1];
        assert!(refused(respond(200, &headers)).contains("headers (at most"));
    }

    #[test]
    fn forward_targets_are_checked_like_routes() {
        for t in [
            Target::new("", 80),
            Target::new("backend", 0),
            Target::new("back\nend", 80),
            Target::new("b".repeat(MAX_HOST + 1), 80),
        ] {
            let e = refused(forward(Some(t.clone()), vec![]));
            assert!(e.contains("forward target"), "{t:?}: {e}");
        }
    }

    #[test]
    fn response_status_is_a_final_one() {
        for status in [0, 99, 100, 101, 199, 600, u16::MAX] {
            assert!(
                refused(respond(status, &[])).contains("not 200-599"),
                "{status}"
            );
        }
        let body = RequestDecision::Respond(Response {
            status: 200,
            headers: vec![],
            body: vec![0; MAX_BODY + 1],
        });
        assert!(refused(body).contains("response body"));
    }

    #[test]
    fn redirects_need_a_clean_location_and_a_redirect_status() {
        for location in ["", "https://a/\r\nSet-Cookie: x", "/a\nb", "/a\0", "/a\x7f"] {
            let e = refused(redirect(location, 302));
            assert!(e.contains("redirect location"), "{location:?}: {e}");
        }
        let long = format!("/{}", "a".repeat(MAX_LOCATION));
        assert!(refused(redirect(&long, 302)).contains("bytes long"));
        for status in [200, 300, 304, 305, 306, 309] {
            assert!(refused(redirect("/", status)).contains("redirect status"));
        }
    }
}
