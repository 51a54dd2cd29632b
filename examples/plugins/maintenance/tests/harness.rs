//! The maintenance plugin through the SDK harness, driving the fake host's
//! wall clock across window boundaries: every case runs natively and
//! against the compiled `.wasm`.

use example_maintenance::Maintenance;
use turnout_plugin_sdk::prelude::*;
use turnout_plugin_sdk::testing::{CallError, Harness, plain_conn, tls_conn};

/// Builds a harness from a config: natively or from the `.wasm`.
type Make<'a> = &'a dyn Fn(&str) -> Result<Harness, CallError>;

fn harness(make: Make<'_>, config: &str) -> Harness {
    make(config).unwrap_or_else(|e| panic!("{config}: {e}"))
}

/// Monday 2024-01-01 00:00 UTC (`date -u -d 2024-01-01 +%s`), in ms.
const MONDAY: u64 = 1_704_067_200_000;
const MIN: u64 = 60_000;
const DAY: u64 = 24 * 60 * MIN;

/// Days after [`MONDAY`].
const MON: u64 = 0;
const THU: u64 = 3;
const FRI: u64 = 4;
const SAT: u64 = 5;
const SUN: u64 = 6;
const NEXT_MON: u64 = 7;

/// Milliseconds since the epoch at `day` (after [`MONDAY`]) `hh:mm` UTC,
/// plus `ms`.
fn at(day: u64, hhmm: &str, ms: i64) -> u64 {
    let (h, m) = hhmm.split_once(':').unwrap();
    let t =
        MONDAY + day * DAY + h.parse::<u64>().unwrap() * 60 * MIN + m.parse::<u64>().unwrap() * MIN;
    t.checked_add_signed(ms).unwrap()
}

fn refused() -> RouteDecision {
    RouteDecision::reject("maintenance", Some(TlsAlert::AccessDenied))
}

/// What a TLS connection to port 443 gets at wall-clock `when`.
fn route_at(h: &mut Harness, when: u64) -> RouteDecision {
    h.host().set_wall_ms(when);
    h.route(&tls_conn("192.0.2.1:5000", 443, "shop.example.com"))
}

/// Asserts, for each `(day, "hh:mm", ms offset)`, whether it is refused.
fn expect(h: &mut Harness, cases: &[(u64, &str, i64, bool)]) {
    for &(day, hhmm, ms, refuse) in cases {
        let want = if refuse {
            refused()
        } else {
            RouteDecision::Pass
        };
        assert_eq!(
            route_at(h, at(day, hhmm, ms)),
            want,
            "day {day} {hhmm} {ms:+} ms"
        );
    }
}

fn info(make: Make<'_>) {
    let h = harness(make, r#"{"windows": []}"#);
    assert_eq!(h.info().name, "maintenance");
    assert_eq!(h.info().hooks, Hooks::ROUTE);
    assert!(h.info().listen.is_empty(), "refuses on others' ports only");
}

fn weekend_nights(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"windows": [{"days": ["sat", "Sunday"], "from": "02:00", "to": "04:00"}]}"#,
    );
    expect(
        &mut h,
        &[
            (SAT, "02:00", -1, false),
            (SAT, "02:00", 0, true),
            (SAT, "03:00", 0, true),
            (SAT, "04:00", -1, true),
            (SAT, "04:00", 0, false),
            (SUN, "01:59", 0, false),
            (SUN, "02:30", 0, true),
            (SUN, "04:00", 0, false),
            (MON, "02:30", 0, false),
            (FRI, "02:30", 0, false),
            (NEXT_MON, "02:30", 0, false),
            (SAT + 7, "02:30", 0, true),
        ],
    );
}

/// Driving the clock forward over a whole window, a millisecond either side
/// of each edge.
fn clock_moving_through_a_window(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"windows": [{"days": ["thu"], "from": "10:15", "to": "10:45"}]}"#,
    );
    let conn = tls_conn("192.0.2.1:5000", 443, "a.example");
    h.host().set_wall_ms(at(THU, "10:15", -1));
    assert_eq!(h.route(&conn), RouteDecision::Pass);
    h.host().advance_ms(1);
    assert_eq!(h.route(&conn), refused(), "10:15:00.000");
    h.host().advance_ms(30 * MIN - 1);
    assert_eq!(h.route(&conn), refused(), "10:44:59.999");
    h.host().advance_ms(1);
    assert_eq!(h.route(&conn), RouteDecision::Pass, "10:45:00.000");
    h.host().advance_ms(7 * DAY - 20 * MIN);
    assert_eq!(h.route(&conn), refused(), "a week later, 10:25");
}

fn across_midnight(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"windows": [{"days": ["fri"], "from": "23:30", "to": "00:30"}]}"#,
    );
    expect(
        &mut h,
        &[
            (FRI, "23:30", -1, false),
            (FRI, "23:30", 0, true),
            (FRI, "23:59", 59_999, true),
            (SAT, "00:00", 0, true),
            (SAT, "00:30", -1, true),
            (SAT, "00:30", 0, false),
            // Only Friday starts a window: not the night before, nor after.
            (FRI, "00:15", 0, false),
            (THU, "23:45", 0, false),
            (SAT, "23:45", 0, false),
            (SUN, "00:15", 0, false),
        ],
    );

    // Sunday night into Monday: the week wraps.
    let mut h = harness(
        make,
        r#"{"windows": [{"days": ["sun"], "from": "22:00", "to": "02:00"}]}"#,
    );
    expect(
        &mut h,
        &[
            (SUN, "21:59", 0, false),
            (SUN, "22:00", 0, true),
            (NEXT_MON, "01:59", 0, true),
            (NEXT_MON, "02:00", 0, false),
            // The week is a cycle: the Sunday before covers this Monday.
            (MON, "01:00", 0, true),
            (MON + 1, "01:00", 0, false),
            (MON, "23:00", 0, false),
        ],
    );

    // Every night, 22:00 to 06:00.
    let mut h = harness(make, r#"{"windows": [{"from": "22:00", "to": "06:00"}]}"#);
    for day in MON..NEXT_MON {
        expect(
            &mut h,
            &[
                (day, "05:59", 0, true),
                (day, "06:00", 0, false),
                (day, "12:00", 0, false),
                (day, "21:59", 0, false),
                (day, "22:00", 0, true),
                (day, "23:59", 0, true),
            ],
        );
    }
}

fn whole_days_and_several_windows(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"windows": [
            {"days": ["sat"], "from": "00:00", "to": "24:00"},
            {"days": ["mon", "WED"], "from": "12:00", "to": "12:30"}
        ]}"#,
    );
    expect(
        &mut h,
        &[
            (SAT, "00:00", 0, true),
            (SAT, "23:59", 59_999, true),
            (SUN, "00:00", 0, false),
            (FRI, "23:59", 0, false),
            (MON, "12:10", 0, true),
            (MON + 2, "12:10", 0, true),
            (MON + 1, "12:10", 0, false),
        ],
    );
}

fn timezone_offset(make: Make<'_>) {
    // UTC+1: Saturday 02:00–04:00 local is 01:00–03:00 UTC.
    let mut h = harness(
        make,
        r#"{"windows": [{"days": ["sat"], "from": "02:00", "to": "04:00"}], "timezoneOffsetMinutes": 60}"#,
    );
    expect(
        &mut h,
        &[
            (SAT, "00:59", 0, false),
            (SAT, "01:00", 0, true),
            (SAT, "02:59", 0, true),
            (SAT, "03:00", 0, false),
        ],
    );
    // UTC-5: Saturday 22:00–23:00 local is Sunday 03:00–04:00 UTC.
    let mut h = harness(
        make,
        r#"{"windows": [{"days": ["sat"], "from": "22:00", "to": "23:00"}], "timezoneOffsetMinutes": -300}"#,
    );
    expect(
        &mut h,
        &[
            (SAT, "22:30", 0, false),
            (SUN, "02:59", 0, false),
            (SUN, "03:00", 0, true),
            (SUN, "03:59", 0, true),
            (SUN, "04:00", 0, false),
        ],
    );
    // UTC+5:30, crossing midnight local: Monday 23:00–01:00 local is
    // Monday 17:30–19:30 UTC.
    let mut h = harness(
        make,
        r#"{"windows": [{"days": ["mon"], "from": "23:00", "to": "01:00"}], "timezoneOffsetMinutes": 330}"#,
    );
    expect(
        &mut h,
        &[
            (MON, "17:29", 0, false),
            (MON, "17:30", 0, true),
            (MON, "19:29", 0, true),
            (MON, "19:30", 0, false),
        ],
    );
}

fn reason_and_alert(make: Make<'_>) {
    let window = r#""windows": [{"from": "00:00", "to": "24:00"}]"#;
    let mut h = harness(make, &format!("{{{window}}}"));
    assert_eq!(
        h.route(&tls_conn("192.0.2.1:1", 443, "a.example")),
        refused()
    );
    assert_eq!(
        h.route(&plain_conn("192.0.2.1:1", 80)),
        RouteDecision::reject("maintenance", None),
        "no alert on a plain connection"
    );
    let mut h = harness(
        make,
        &format!(r#"{{{window}, "reason": "planned-upgrade", "alert": "handshake-failure"}}"#),
    );
    assert_eq!(
        h.route(&tls_conn("[2001:db8::1]:1", 443, "a.example")),
        RouteDecision::reject("planned-upgrade", Some(TlsAlert::HandshakeFailure))
    );
    let mut h = harness(make, &format!(r#"{{{window}, "alert": "none"}}"#));
    assert_eq!(
        h.route(&tls_conn("192.0.2.1:1", 443, "a.example")),
        RouteDecision::reject("maintenance", None)
    );
}

fn only_configured_ports_and_domains(make: Make<'_>) {
    let mut h = harness(
        make,
        r#"{"windows": [{"from": "00:00", "to": "24:00"}], "ports": [443, 8443],
            "domains": ["shop.example.com", "*.shop.example.com"]}"#,
    );
    for (conn, refuse) in [
        (tls_conn("192.0.2.1:1", 443, "shop.example.com"), true),
        (tls_conn("192.0.2.1:1", 8443, "eu.shop.example.com"), true),
        (tls_conn("192.0.2.1:1", 9443, "shop.example.com"), false),
        (tls_conn("192.0.2.1:1", 443, "blog.example.com"), false),
        (plain_conn("192.0.2.1:1", 443), false),
    ] {
        let got = h.route(&conn);
        assert_eq!(got != RouteDecision::Pass, refuse, "{conn:?}: {got:?}");
    }
}

fn no_windows_never_refuses(make: Make<'_>) {
    let mut h = harness(make, r#"{"windows": [], "reason": "x"}"#);
    for day in MON..NEXT_MON {
        for hhmm in ["00:00", "03:00", "12:00", "23:59"] {
            assert_eq!(route_at(&mut h, at(day, hhmm, 0)), RouteDecision::Pass);
        }
    }
}

fn bad_configs(make: Make<'_>) {
    for (config, text) in [
        ("{}", "windows: required"),
        (
            r#"{"windows": {}}"#,
            "windows: expected a list, got an object",
        ),
        (
            r#"{"windows": [{"from": "02:00"}]}"#,
            "windows[0].to: required",
        ),
        (
            r#"{"windows": [{"from": "02:00", "to": "04:00"}, {"from": "25:00", "to": "04:00"}]}"#,
            r#"windows[1].from: "25:00" is not a time of day (00:00 to 23:59)"#,
        ),
        (
            r#"{"windows": [{"from": "2pm", "to": "04:00"}]}"#,
            r#"windows[0].from: "2pm" is not a time of day "HH:MM""#,
        ),
        (
            r#"{"windows": [{"from": "24:00", "to": "04:00"}]}"#,
            r#"windows[0].from: "24:00": a window cannot start at 24:00"#,
        ),
        (
            r#"{"windows": [{"from": "04:00", "to": "04:00"}]}"#,
            "windows[0]: from and to are equal",
        ),
        (
            r#"{"windows": [{"from": 4, "to": "05:00"}]}"#,
            "windows[0].from: expected a string, got a number",
        ),
        (
            r#"{"windows": [{"days": ["sat", "sonday"], "from": "01:00", "to": "02:00"}]}"#,
            r#"windows[0].days[1]: "sonday" is not a day (mon, tue, wed, thu, fri, sat, sun)"#,
        ),
        (
            r#"{"windows": [{"days": [], "from": "01:00", "to": "02:00"}]}"#,
            "windows[0].days: must not be empty",
        ),
        (
            r#"{"windows": [{"day": ["sat"], "from": "01:00", "to": "02:00"}]}"#,
            "windows[0].day: unknown key (expected one of days, from, to)",
        ),
        (
            r#"{"windows": [], "timezoneOffsetMinutes": 1440}"#,
            "timezoneOffsetMinutes: 1440 is out of range -1439 to 1439",
        ),
        (
            r#"{"windows": [], "timezoneOffsetMinutes": 1.5}"#,
            "timezoneOffsetMinutes: 1.5 is not a whole number",
        ),
        (
            r#"{"windows": [], "timezoneOffsetMinutes": "+01:00"}"#,
            "timezoneOffsetMinutes: expected a number, got a string",
        ),
        (
            r#"{"windows": [], "alert": "teapot"}"#,
            r#"alert: "teapot" is not one of "access-denied""#,
        ),
        (
            r#"{"windows": [], "reason": ""}"#,
            "reason: must not be empty",
        ),
        (
            r#"{"windows": [], "ports": [443, 0]}"#,
            "ports[1]: 0 is not a port 1-65535",
        ),
        (
            r#"{"windows": [], "domains": ["a", 3]}"#,
            "domains[1]: expected a string, got a number",
        ),
        (
            r#"{"windows": [], "timezone": "UTC"}"#,
            "timezone: unknown key (expected one of windows, timezoneOffsetMinutes,",
        ),
        ("[]", "maintenance config: expected an object, got a list"),
        ("{", "maintenance config: "),
    ] {
        match make(config) {
            Err(CallError::Init(msg)) => assert!(msg.starts_with(text), "{config}: {msg}"),
            Err(other) => panic!("{config}: expected an init error, got {other}"),
            Ok(_) => panic!("{config}: expected an init error"),
        }
    }
}

// Each case runs natively and against the built `.wasm`.
turnout::natively_and_as_wasm!(
    Maintenance:
    info,
    weekend_nights,
    clock_moving_through_a_window,
    across_midnight,
    whole_days_and_several_windows,
    timezone_offset,
    reason_and_alert,
    only_configured_ports_and_domains,
    no_windows_never_refuses,
    bad_configs,
);
