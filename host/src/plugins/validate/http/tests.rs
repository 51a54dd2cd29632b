use turnout_plugin_sdk::{
    Field, HeaderEdit, HttpForward, Interest, Redirect, RequestDecision, Response,
    ResponseDecision, Target, Upstream,
};

use super::*;

fn respond(status: u16, headers: &[(&str, &str)]) -> RequestDecision {
    RequestDecision::Respond(Response {
        status,
        headers: headers.iter().map(|(n, v)| Field::new(*n, *v)).collect(),
        body: b"no".to_vec(),
    })
}

fn forward(edits: Vec<HeaderEdit>) -> RequestDecision {
    RequestDecision::Forward(HttpForward {
        request_edits: edits,
        ..HttpForward::to(0)
    })
}

fn redirect(location: &str, status: u16) -> RequestDecision {
    RequestDecision::Redirect(Redirect {
        location: location.to_owned(),
        status,
    })
}

/// The error, with a panic naming the decision if it was accepted.
fn refused(d: RequestDecision) -> String {
    match request(&d, 1) {
        Err(e) => e,
        Ok(()) => panic!("accepted {d:?}"),
    }
}

#[test]
fn good_request_decisions_pass() {
    let good = [
        RequestDecision::Pass,
        RequestDecision::Forward(HttpForward::to_route()),
        forward(vec![
            HeaderEdit::set("X-Forwarded-Proto", "https"),
            HeaderEdit::append("x-tags", "a,\tb ; q=\"1\" é"),
            HeaderEdit::append("x-empty", ""),
            HeaderEdit::remove("Cookie"),
            HeaderEdit::set("!#$%&'*+-.^_`|~09azAZ", "v"),
        ]),
        RequestDecision::Forward(HttpForward::to(0).path("/v2/a?b=c")),
        respond(200, &[("content-type", "text/plain")]),
        respond(599, &[]),
        redirect("https://example.com/a?b=c#d", 308),
        redirect("/relative", 302),
    ];
    for d in good {
        assert_eq!(request(&d, 1), Ok(()), "{d:?}");
    }
}

#[test]
fn upstream_ids_must_be_declared_and_paths_clean() {
    let e = refused(RequestDecision::Forward(HttpForward::to(1)));
    assert!(e.contains("declared 1"), "{e}");
    let long = format!("/{}", "a".repeat(70_000));
    for path in [
        "relative",
        "/a b",
        "/a\r\n",
        "",
        "/}}}}}}}}}}}f//<f//Wc_",
        &long,
    ] {
        let e = refused(RequestDecision::Forward(HttpForward::to(0).path(path)));
        assert!(e.contains("forward path"), "{path:?}: {e}");
    }
}

#[test]
fn header_names_must_be_tokens() {
    for name in [
        "", "x y", "x:y", "x\r\ny", "x\0", "é", "(x)", "x/y", "\"x\"",
    ] {
        let e = refused(respond(200, &[(name, "v")]));
        assert!(e.contains("header name"), "{name:?}: {e}");
        let e = refused(forward(vec![HeaderEdit::remove(name)]));
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
            HeaderEdit::set("x-a", value),
            HeaderEdit::append("x-a", value),
        ] {
            let e = refused(forward(vec![edit.clone()]));
            assert!(e.contains("control character"), "{value:?}: {e}");
            let e = response(&ResponseDecision::Edit(vec![edit])).unwrap_err();
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
        for edit in [
            HeaderEdit::set(name, "0"),
            HeaderEdit::append(name, "chunked"),
            HeaderEdit::remove(name),
        ] {
            assert!(refused(forward(vec![edit])).contains("frames the body"));
        }
    }
}

#[test]
fn too_many_headers_are_refused() {
    let edits = vec![HeaderEdit::remove("x-a"); MAX_HEADERS + 1];
    assert!(refused(forward(edits)).contains("headers (at most"));
    let headers = vec![("x-a", "v"); MAX_HEADERS + 1];
    assert!(refused(respond(200, &headers)).contains("headers (at most"));
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
    for location in [
        "",
        "https://a/\r\nSet-Cookie: x",
        "/a\nb",
        "/a\0",
        "/a\x7f",
        "/é",
    ] {
        let e = refused(redirect(location, 302));
        assert!(e.contains("redirect location"), "{location:?}: {e}");
    }
    let long = format!("/{}", "a".repeat(MAX_LOCATION));
    assert!(refused(redirect(&long, 302)).contains("bytes long"));
    for status in [200, 300, 304, 305, 306, 309] {
        assert!(refused(redirect("/", status)).contains("redirect status"));
    }
}

#[test]
fn interest_is_bounded_and_its_upstreams_usable() {
    let mut ok = Interest::default();
    ok.request_header("cookie");
    ok.upstream(Upstream::new("a", vec![Target::new("127.0.0.1", 80)]));
    assert_eq!(interest(&ok), Ok(()));

    let mut bad = ok.clone();
    bad.request_headers.push("x y".into());
    assert!(interest(&bad).unwrap_err().contains("not a header name"));

    let mut bad = ok.clone();
    bad.upstreams.push(Upstream::new("b", vec![]));
    assert!(interest(&bad).unwrap_err().contains("upstreams[1]"));

    let mut bad = ok.clone();
    bad.upstreams
        .push(Upstream::new("c", vec![Target::new("", 80)]));
    assert!(interest(&bad).unwrap_err().contains("forward target"));

    let mut bad = ok;
    bad.response_headers = (0..=MAX_SLOTS).map(|i| format!("x-{i}")).collect();
    assert!(interest(&bad).unwrap_err().contains("at most"));
}

#[test]
fn a_websocket_heartbeat_cannot_make_the_host_ping_in_a_loop() {
    let mut ok = Interest::default();
    let id = ok.upstream(Upstream::new("ws", vec![Target::new("127.0.0.1", 80)]));
    ok.upstreams[id as usize].websocket.ping_interval = Some(100);
    ok.upstreams[id as usize].websocket.ping_timeout = 100;
    assert_eq!(interest(&ok), Ok(()));

    let mut bad = ok.clone();
    bad.upstreams[0].websocket.ping_interval = Some(0);
    let why = interest(&bad).unwrap_err();
    assert!(
        why.contains("upstreams[0]") && why.contains("ping-interval 0 ms"),
        "{why}"
    );

    let mut bad = ok.clone();
    bad.upstreams[0].websocket.ping_timeout = 5;
    assert!(interest(&bad).unwrap_err().contains("ping-timeout 5 ms"));

    let mut bad = ok.clone();
    bad.upstreams[0].websocket.ping_interval = Some(u64::MAX);
    assert!(interest(&bad).unwrap_err().contains("ping-interval"));

    // No heartbeat: the pong wait is never used.
    let mut off = ok;
    off.upstreams[0].websocket.ping_interval = None;
    off.upstreams[0].websocket.ping_timeout = 0;
    assert_eq!(interest(&off), Ok(()));
}
