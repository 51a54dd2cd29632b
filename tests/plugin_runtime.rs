//! The plugin runtime against real components: values crossing the boundary,
//! the harness in both modes, and every deliberately bad fixture.

use std::sync::Arc;
use std::time::{Duration, Instant};

use turnout::plugins::{
    Admission, Chain, FailureKind, FailurePolicy, LoadError, Routing, Runtime, RuntimeConfig,
};
use turnout_plugin_sdk::testing::{
    CallError, FakeHost, Harness, Request, peer, plain_conn, tls_conn,
};
use turnout_plugin_sdk::*;
use turnout_tests::{guest_bytes, guest_dir};

/// A runtime with a short deadline, so the looping fixtures end quickly,
/// and no disk cache (each test compiles its own).
fn runtime(deadline_ms: u64) -> Arc<Runtime> {
    Runtime::new(RuntimeConfig {
        call_deadline: Duration::from_millis(deadline_ms),
        init_deadline: Duration::from_millis(500),
        cache_dir: None,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

fn host() -> Arc<FakeHost> {
    Arc::new(FakeHost::new())
}

fn misbehave(
    rt: &Arc<Runtime>,
    config: &str,
    policy: FailurePolicy,
) -> Arc<turnout::plugins::LoadedPlugin> {
    rt.load_plugin(
        "misbehave",
        &guest_bytes("misbehave"),
        config,
        policy,
        host(),
    )
    .expect("misbehave loads")
}

/// The same cases, run natively and against the `.wasm`.
fn probe_cases(h: &mut Harness) {
    assert_eq!(h.info().name, "probe");
    assert_eq!(h.info().hooks, Hooks::ALL);
    assert_eq!(
        h.info().listen,
        vec![
            PortRange {
                from: 8000,
                to: 8010
            },
            PortRange::single(9443)
        ]
    );
    assert!(
        h.host()
            .logs()
            .iter()
            .any(|(l, m)| *l == LogLevel::Info && m == "probe init with {\"tag\":1}"),
        "init logged through the host: {:?}",
        h.host().logs()
    );

    // admit reads the host's counters for the client IP (mapped v6 folded).
    let p = peer("[::ffff:10.1.2.3]:4000", 443);
    assert_eq!(h.admit(&p), AdmitDecision::Pass);
    h.host().set_active_for_ip("10.1.2.3".parse().unwrap(), 3);
    h.host().set_recent_for_ip("10.1.2.3".parse().unwrap(), 7);
    assert_eq!(
        h.admit(&p),
        AdmitDecision::Deny("busy 10.1.2.3 active=3 recent=7".into())
    );
    assert_eq!(h.admit(&peer("10.9.9.9:1", 1)), AdmitDecision::Allow);

    // route: hello fields in, a full forward verdict out, kv shared across calls.
    h.host().set_active_total(42);
    let conn = Connection::tls(
        7,
        peer("[2001:db8::5]:5555", 9443),
        ClientHello::with_sni("API.Example.com.").alpn(["h2", "http/1.1"]),
    );
    for n in 1..=2 {
        let RouteDecision::Forward(f) = h.route(&conn) else {
            panic!("forward expected")
        };
        assert_eq!(
            f.route,
            format!("api.example.com|h2,http/1.1|hits={n}|total=42|[2001:db8::5]:5555")
        );
        assert_eq!(
            f.targets,
            vec![
                Target::new("backend.test", 443),
                Target::new("10.0.0.2", 8443)
            ]
        );
        assert_eq!(f.tls_mode, TlsMode::TerminateAndReencrypt);
        assert_eq!(f.proxy_protocol, ProxyProtocol::V2);
        assert_eq!(f.limits, RouteLimits::new(100, 5));
    }
    assert_eq!(
        h.host().kv().get("hits", 0),
        Some(2i64.to_le_bytes().to_vec())
    );
    let RouteDecision::Forward(f) = h.route(&plain_conn("127.0.0.1:1", 80)) else {
        panic!("forward expected")
    };
    assert!(f.route.starts_with("-||hits=3"), "{}", f.route);

    // policy sees the defaults and the host clocks.
    h.host().advance_ms(5_000);
    let routed = Routed::new("r", Target::new("b", 8443), TlsMode::Passthrough);
    let PolicyDecision::Set(pol) = h.policy(&conn, &routed, &Policy::new(Some(60_000))) else {
        panic!("policy expected")
    };
    assert_eq!(pol.keep_alive_treatment, KeepAliveTreatment::Immortal);
    assert_eq!(pol.inactivity_timeout, None);
    assert_eq!(pol.half_open_grace, 8443);
    assert_eq!(
        pol.stuck_timeout,
        Some(6_000),
        "fake monotonic clock: 1 s + 5 s"
    );
    assert_eq!(
        pol.max_lifetime,
        Some((1_700_000_000_000 + 5_000) % 1_000_000)
    );
    assert_eq!(pol.tcp_keep_alive, Some(10_000));

    // on-idle and request.
    assert_eq!(
        h.on_idle(&conn, &IdleStats::new("r", 10, 10, 0, 0)),
        IdleDecision::Close
    );
    assert_eq!(
        h.on_idle(&conn, &IdleStats::new("r", 10, 7, 1, 0)),
        IdleDecision::Extend(14)
    );
    let req = Request::get("Example.com:8443", "/x?y=1")
        .tls("example.com")
        .header("X-Test", "yes")
        .header("x-other", "1")
        .header("x-other", "2");
    assert_eq!(
        h.request(&req),
        RequestDecision::Respond(
            Response::text(
                200,
                "GET https example.com /x?y=1 sni=example.com yes other=1|2 names=x-other,x-test"
            )
            .header("x-tag", "{\"tag\":1}")
        )
    );
    assert_eq!(
        h.request(&Request::get("example.com", "/redirect")),
        RequestDecision::Redirect(Redirect {
            location: "https://example.com/".into(),
            status: 308
        })
    );
    assert_eq!(
        h.request(&Request::new(Method::Other("PURGE".into()), "a", "/forward").connection(7)),
        RequestDecision::Forward(
            HttpForward::to(0)
                .path("/rewritten")
                .edit_request(HeaderEdit::set("x-probe", "PURGE"))
                .edit_response(HeaderEdit::remove("server"))
                .context(7)
        )
    );
    let head = h.response_head(7, 503, &[("Server", "up/1")]);
    assert_eq!(
        h.response(&head),
        ResponseDecision::Edit(vec![HeaderEdit::set("x-probe-response", "7 503 up/1")])
    );
}

#[test]
fn probe_cases_pass_natively() {
    probe_cases(&mut Harness::native::<guest_probe::Probe>("{\"tag\":1}").unwrap());
}

#[test]
fn probe_cases_pass_against_the_wasm() {
    let mut h = turnout::testing::wasm_harness(guest_dir("probe"), "{\"tag\":1}").unwrap();
    probe_cases(&mut h);
    // The host checks what the plugin answers: a CR LF in a header value is
    // a malformed answer, never a response.
    let e = h.try_request(&Request::get("a", "/bad")).unwrap_err();
    assert!(
        matches!(&e, CallError::Malformed(m) if m.contains("control character")),
        "{e:?}"
    );
}

#[test]
fn init_errors_reach_the_harness_in_both_modes() {
    let native = Harness::native::<guest_probe::Probe>("fail-init").err();
    let wasm = turnout::testing::wasm_harness(guest_dir("probe"), "fail-init").err();
    assert_eq!(
        native,
        Some(CallError::Init("probe was told to fail".into()))
    );
    assert_eq!(wasm, native);
}

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline_and_the_plugin_keeps_serving() {
    let rt = runtime(50);
    let p = misbehave(&rt, r#"{"route":"loop"}"#, FailurePolicy::Closed);
    let started = Instant::now();
    let err = p.route(&tls_conn("10.0.0.1:1", 443, "a.test")).unwrap_err();
    assert_eq!(err.kind, FailureKind::Deadline);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped by the epoch deadline"
    );
    // The trapped instance was replaced: other hooks on the same plugin work.
    assert_eq!(p.admit(&peer("10.0.0.1:1", 443)), Ok(AdmitDecision::Pass));
    assert_eq!(p.metrics().failures(FailureKind::Deadline), 1);
}

#[test]
fn a_memory_bomb_hits_the_cap_and_is_reported_as_such() {
    let rt = runtime(2_000);
    let p = misbehave(&rt, r#"{"route":"membomb"}"#, FailurePolicy::Closed);
    let err = p.route(&tls_conn("10.0.0.1:1", 443, "a.test")).unwrap_err();
    assert_eq!(err.kind, FailureKind::MemoryLimit, "{err}");
    assert!(
        err.message.contains("memory limit of 16777216 bytes"),
        "{err}"
    );
    assert_eq!(p.admit(&peer("10.0.0.1:1", 443)), Ok(AdmitDecision::Pass));
    assert_eq!(p.metrics().failures(FailureKind::MemoryLimit), 1);
}

#[test]
fn a_panic_is_a_trap_and_the_instance_is_replaced() {
    let rt = runtime(2_000);
    let p = misbehave(&rt, r#"{"route":"panic"}"#, FailurePolicy::Closed);
    let before = p.metrics().snapshot().instantiations;
    for _ in 0..3 {
        let err = p.route(&tls_conn("10.0.0.1:1", 443, "a.test")).unwrap_err();
        assert_eq!(err.kind, FailureKind::Trap, "{err}");
        assert!(err.message.contains("unreachable"), "{err}");
    }
    let snap = p.metrics().snapshot();
    // The first call used the instance made at load; each later one needed a
    // fresh instance because the previous one trapped.
    assert_eq!(
        snap.instantiations,
        before + 2,
        "one fresh instance per trapped call"
    );
    assert_eq!(snap.instances_live, 0, "trapped instances are gone");
    assert_eq!(p.admit(&peer("10.0.0.1:1", 443)), Ok(AdmitDecision::Pass));
    assert_eq!(p.metrics().snapshot().instances_live, 1);
}

#[test]
fn a_malformed_answer_is_refused() {
    let rt = runtime(2_000);
    let p = misbehave(&rt, r#"{"route":"malformed"}"#, FailurePolicy::Closed);
    let err = p.route(&tls_conn("10.0.0.1:1", 443, "a.test")).unwrap_err();
    assert_eq!(err.kind, FailureKind::Malformed);
    assert!(err.message.contains("has no targets"), "{err}");
}

#[test]
fn slow_failing_and_panicking_init_are_load_errors_naming_the_plugin() {
    let rt = runtime(50);
    let started = Instant::now();
    let cases = [
        (r#"{"init":"slow"}"#, FailureKind::Deadline, "deadline"),
        (
            r#"{"init":"fail"}"#,
            FailureKind::Init,
            "the answer is not 42",
        ),
        (r#"{"init":"panic"}"#, FailureKind::Trap, "unreachable"),
        ("not json", FailureKind::Init, "expected ident"),
    ];
    for (config, kind, text) in cases {
        let err = rt
            .load_plugin(
                "misbehave",
                &guest_bytes("misbehave"),
                config,
                FailurePolicy::Closed,
                host(),
            )
            .unwrap_err();
        match &err {
            LoadError::Init { plugin, failure } => {
                assert_eq!(plugin, "misbehave");
                assert_eq!(failure.kind, kind, "{config}: {err}");
            }
            other => panic!("{config}: expected an init error, got {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("\"misbehave\" failed to initialise") && msg.contains(text),
            "{msg}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_plugin_built_for_wit_0_1_keeps_working_and_never_sees_requests() {
    let rt = runtime(50);
    let p = rt
        .load_plugin(
            "legacy",
            &guest_bytes("legacy-v01"),
            "{}",
            FailurePolicy::Closed,
            host(),
        )
        .expect("a 0.1 component loads");
    // 0.1 declared `request`; the host drops it from the hooks it calls.
    assert_eq!(p.info().hooks, Hooks::ROUTE);
    assert_eq!(p.info().listen, vec![PortRange::single(7000)]);
    assert!(p.info().http_ports.is_empty());
    let RouteDecision::Forward(f) = p.route(&plain_conn("10.0.0.1:5", 7000)).unwrap() else {
        panic!("the 0.1 route hook answers")
    };
    assert_eq!(f.route, "legacy-7000");
    let mut head = RequestHead::new("10.0.0.1:5".parse().unwrap(), 7000, Method::Get, "a", "/");
    let mut headers = http::HeaderMap::new();
    assert_eq!(
        p.request(&mut head, &mut headers).unwrap(),
        RequestDecision::Pass
    );
    // And through a chain: a 0.1 plugin is never asked.
    let chain = turnout::plugins::Chain::new(vec![p]);
    let mut slots = turnout::plugins::HeadSlots::new(head);
    assert!(matches!(
        chain.request(&mut slots, &mut headers),
        turnout::plugins::Requested::NoRoute
    ));
}

#[test]
fn a_plugin_built_for_wit_0_2_gets_every_request_field_the_0_2_way() {
    let rt = runtime(50);
    let p = rt
        .load_plugin(
            "legacy-v02",
            &guest_bytes("legacy-v02"),
            "{}",
            FailurePolicy::Closed,
            host(),
        )
        .expect("a 0.2 component loads");
    assert_eq!(p.info().hooks, Hooks::REQUEST);
    let mut head = RequestHead::new(
        "[::ffff:192.0.2.9]:50123".parse().unwrap(),
        8443,
        Method::Other("PURGE".into()),
        "example.com:8443",
        "/x?y=1",
    );
    head.connection_id = 77;
    head.scheme = Scheme::Https;
    head.sni = Some("example.com".into());
    let mut headers = http::HeaderMap::new();
    headers.append("x-test", "yes".parse().unwrap());
    headers.append("x-other", "1".parse().unwrap());
    headers.append("x-other", "2".parse().unwrap());
    head.headers = p.request_slot_values(&headers);
    // Twice: the lent strings come back after each call.
    for _ in 0..2 {
        let RequestDecision::Respond(r) = p.request(&mut head, &mut headers).unwrap() else {
            panic!("the 0.2 request hook answers")
        };
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            "PURGE https example.com:8443 /x?y=1 sni=example.com yes \
             client=192.0.2.9:50123 port=8443 conn=77 other=2"
        );
        assert_eq!(head.path, "/x?y=1");
        assert_eq!(headers.len(), 3, "the headers come back too");
    }
}

#[test]
fn a_plugin_built_for_another_wit_version_is_refused_by_version() {
    let rt = runtime(50);
    let err = rt
        .load_plugin(
            "future",
            &guest_bytes("wrong-version"),
            "{}",
            FailurePolicy::Closed,
            host(),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, LoadError::IncompatibleVersion { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("turnout:plugin@0.9.0") && msg.contains("turnout:plugin@0.3.x"),
        "{msg}"
    );
}

#[test]
fn things_that_are_not_plugin_components_get_a_precise_error() {
    let rt = runtime(50);
    let core_module = b"\0asm\x01\0\0\0";
    let cases: [(&[u8], &str); 3] = [
        (b"hello", "is not WebAssembly"),
        (core_module, "core WebAssembly module, not a component"),
        (b"\0asm\x0d\0\x01\0garbage", "failed to compile"),
    ];
    for (bytes, text) in cases {
        let err = rt
            .load_plugin("junk", bytes, "{}", FailurePolicy::Closed, host())
            .unwrap_err();
        assert!(err.to_string().contains(text), "{err}");
    }
}

#[test]
fn the_chain_applies_failure_policies_and_first_answer_wins() {
    let rt = runtime(50);
    let probe = rt
        .load_plugin(
            "probe",
            &guest_bytes("probe"),
            "{}",
            FailurePolicy::Closed,
            host(),
        )
        .unwrap();
    let conn = tls_conn("10.0.0.1:1", 443, "a.test");

    let closed = Chain::new(vec![
        misbehave(&rt, r#"{"route":"panic"}"#, FailurePolicy::Closed),
        probe.clone(),
    ]);
    match closed.route(&conn) {
        Routing::Failed { plugin } => assert_eq!(plugin, "misbehave"),
        other => panic!("closed failure must reject, got {other:?}"),
    }

    let open = Chain::new(vec![
        misbehave(
            &rt,
            r#"{"route":"loop","admit":"loop"}"#,
            FailurePolicy::Open,
        ),
        probe.clone(),
    ]);
    assert!(
        matches!(open.route(&conn), Routing::Forward { ref plugin, .. } if plugin == "probe"),
        "open failure passes to the next plugin"
    );
    assert_eq!(open.admit(&peer("10.0.0.1:1", 443)), Admission::Admit);

    let ok_first = Chain::new(vec![misbehave(&rt, "{}", FailurePolicy::Closed), probe]);
    assert!(
        matches!(ok_first.route(&conn), Routing::Forward { ref plugin, .. } if plugin == "misbehave")
    );
    assert_eq!(Chain::default().route(&conn), Routing::NoRoute);
    let d = Policy::new(Some(1));
    assert_eq!(
        Chain::default().policy(
            &conn,
            &Routed::new("r", Target::new("h", 1), TlsMode::Passthrough),
            &d
        ),
        d
    );
}

#[test]
fn a_looping_plugin_does_not_slow_other_threads_calls() {
    let rt = runtime(50);
    let bad = misbehave(&rt, r#"{"route":"loop"}"#, FailurePolicy::Closed);
    let good = rt
        .load_plugin(
            "trivial",
            &guest_bytes("trivial"),
            "{}",
            FailurePolicy::Closed,
            host(),
        )
        .unwrap();
    let conn = tls_conn("10.0.0.1:1", 443, "a.test");
    std::thread::scope(|s| {
        let looping = s.spawn(|| {
            for _ in 0..5 {
                assert_eq!(bad.route(&conn).unwrap_err().kind, FailureKind::Deadline);
            }
        });
        let mut answered = 0;
        while !looping.is_finished() && answered < 1_000_000 {
            assert!(matches!(good.route(&conn), Ok(RouteDecision::Forward(_))));
            answered += 1;
        }
        looping.join().unwrap();
        assert!(answered > 0);
    });
    assert_eq!(
        good.metrics()
            .snapshot()
            .failures
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>(),
        0
    );
}

#[test]
fn instances_are_reused_then_recycled_after_the_call_bound() {
    let rt = Runtime::new(RuntimeConfig {
        max_calls_per_instance: 3,
        cache_dir: None,
        call_deadline: Duration::from_secs(2),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let p = rt
        .load_plugin(
            "trivial",
            &guest_bytes("trivial"),
            "{}",
            FailurePolicy::Closed,
            host(),
        )
        .unwrap();
    for _ in 0..10 {
        p.route(&tls_conn("10.0.0.1:1", 443, "a.test")).unwrap();
    }
    let snap = p.metrics().snapshot();
    assert_eq!(snap.calls, 10);
    assert_eq!(
        snap.instantiations, 4,
        "1 at load + a fresh one every 3 calls"
    );
    assert_eq!(snap.instances_live, 1);
    assert_eq!(
        snap.call_time_buckets.iter().map(|(_, n)| n).sum::<u64>(),
        10
    );
}

#[test]
fn compiled_components_are_cached_on_disk_and_a_corrupt_cache_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let config = || RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    };
    let bytes = guest_bytes("trivial");
    let load = |rt: &Arc<Runtime>| {
        rt.load_plugin("trivial", &bytes, "{}", FailurePolicy::Closed, host())
            .map(|p| p.route(&tls_conn("10.0.0.1:1", 443, "a.test")).unwrap())
    };
    load(&Runtime::new(config()).unwrap()).unwrap();
    let cached: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].extension().is_some_and(|e| e == "cwasm"));
    let first_write = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();

    // A second engine with the same settings reuses it (file untouched).
    load(&Runtime::new(config()).unwrap()).unwrap();
    assert_eq!(
        std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
        first_write
    );

    // A corrupt artifact is ignored and replaced.
    std::fs::write(&cached[0], b"corrupt").unwrap();
    load(&Runtime::new(config()).unwrap()).unwrap();
    assert_ne!(std::fs::read(&cached[0]).unwrap(), b"corrupt");
}
