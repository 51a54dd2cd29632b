//! Unit tests of the HTTP counters, with the sampler tick driven by hand.

use super::*;

fn req(m: &Metrics, domain: &str, route: &str, status: u16, error: Option<&'static str>) {
    m.request(&RequestRecord {
        domain,
        route,
        status,
        duration: Duration::from_millis(3),
        error,
    });
}

fn count_of(v: &[(&'static str, u64)], class: &str) -> u64 {
    v.iter().find(|(c, _)| *c == class).map_or(0, |(_, n)| *n)
}

#[test]
fn requests_count_by_class_route_domain_and_error() {
    let m = Metrics::default();
    req(&m, "a.test", "web", 200, None);
    req(&m, "a.test", "web", 204, None);
    req(&m, "b.test", "web", 502, Some("upstream-refused"));
    req(&m, "-", "-", 404, Some("no-route"));
    req(&m, "-", "-", 0, Some("not-a-label")); // odd input: counted, no panic
    req(&m, "-", "-", 1000, None);
    let v = m.requests();
    assert_eq!(v.total, 6);
    let classes = |v: &[(&'static str, u64)]| v.iter().map(|(_, n)| *n).collect::<Vec<_>>();
    assert_eq!(classes(&v.by_status_class), [0, 2, 0, 1, 1, 2]);
    assert_eq!(v.by_status_class.last(), Some(&(OTHER, 2)));
    let web = v.by_route.iter().find(|r| r.route == "web").unwrap();
    assert_eq!(web.total, 3);
    assert_eq!(web.by_status_class.len(), 5, "no (other) class when unused");
    assert_eq!(count_of(&web.by_status_class, "5xx"), 1);
    assert_eq!(v.by_domain[..2], [("-".into(), 3), ("a.test".into(), 2)]);
    assert_eq!(v.errors.len(), REQUEST_ERRORS.len() + 1);
    assert_eq!(count_of(&v.errors, "upstream-refused"), 1);
    assert_eq!(count_of(&v.errors, "no-route"), 1);
    assert_eq!(count_of(&v.errors, "misdirected"), 0);
    assert_eq!(count_of(&v.errors, OTHER), 1);
}

#[test]
fn route_names_beyond_the_cap_share_one_row() {
    let m = Metrics::default();
    for i in 0..(ROUTE_CAP + 5) {
        req(&m, "a.test", &format!("r{i}"), 200, None);
    }
    let v = m.requests();
    assert_eq!(v.by_route.len(), ROUTE_CAP + 1);
    assert_eq!(
        v.by_route.iter().find(|r| r.route == OTHER).unwrap().total,
        5
    );
}

#[test]
fn the_domain_table_is_bounded_and_idle_domains_fold_into_other() {
    let m = Metrics::default();
    for i in 0..(DOMAIN_CAP + 10) {
        req(&m, &format!("d{i}.test"), "web", 200, None);
    }
    req(&m, &"x".repeat(DOMAIN_MAX_LEN + 1), "web", 200, None);
    let v = m.requests();
    assert_eq!(v.by_domain.len(), DOMAIN_CAP + 1);
    assert_eq!(
        v.by_domain[0],
        (OTHER.into(), 11),
        "beyond the cap, or too long"
    );
    // A minute later a new domain makes the full table sweep: the idle
    // rows fold into OTHER and the rows still sum to the total.
    m.tick.store(DOMAIN_LINGER_SECS + 5, Ordering::Relaxed);
    req(&m, "d1.test", "web", 200, None); // still in the table: no sweep
    req(&m, "new.test", "web", 200, None);
    req(&m, "d0.test", "web", 200, None);
    let v = m.requests();
    assert_eq!(v.by_domain.len(), 4);
    assert!(
        v.by_domain.contains(&("d1.test".into(), 2)),
        "seen this minute"
    );
    assert_eq!(v.by_domain.iter().map(|(_, n)| n).sum::<u64>(), v.total);
    assert!(v.by_domain.contains(&("new.test".into(), 1)));
    assert!(
        v.by_domain.contains(&("d0.test".into(), 1)),
        "its old count is in OTHER"
    );
}

#[test]
fn rates_come_from_samples_of_the_total() {
    let m = Metrics::default();
    for _ in 0..5 {
        req(&m, "a.test", "web", 200, None);
    }
    assert_eq!(
        (m.requests().per_second, m.requests().per_minute),
        (0.0, 0),
        "not sampled yet"
    );
    m.http.sample(1);
    assert_eq!((m.requests().per_second, m.requests().per_minute), (5.0, 5));
    m.http.sample(2);
    assert_eq!((m.requests().per_second, m.requests().per_minute), (0.0, 5));
    // A steady 10/s: the same figures at any age, once a minute is kept.
    for t in 3..=200 {
        for _ in 0..10 {
            req(&m, "a.test", "web", 200, None);
        }
        m.http.sample(t);
        if t == 100 || t == 200 {
            assert_eq!(
                (m.requests().per_second, m.requests().per_minute),
                (10.0, 600)
            );
        }
    }
    // Missed ticks divide by the real gap.
    for _ in 0..30 {
        req(&m, "a.test", "web", 200, None);
    }
    m.http.sample(203);
    assert_eq!(m.requests().per_second, 10.0);
    // A sampler stalled for more than a minute: scaled to one minute.
    for _ in 0..120 {
        req(&m, "a.test", "web", 200, None);
    }
    m.http.sample(323);
    assert_eq!(m.requests().per_minute, 60);
    assert_eq!(lock(&m.http.samples).len(), TABLE_WINDOW_SECS + 1);
}

#[test]
fn duration_percentiles_in_milliseconds() {
    let m = Metrics::default();
    assert_eq!(m.requests().duration_ms.p50, None);
    for ms in 1..=100 {
        m.request(&RequestRecord {
            domain: "a.test",
            route: "web",
            status: 200,
            duration: Duration::from_millis(ms),
            error: None,
        });
    }
    let d = m.requests().duration_ms;
    for (got, exact) in [(d.p50, 50.0), (d.p90, 90.0), (d.p99, 99.0)] {
        let got = got.unwrap();
        assert!(got >= exact && got <= exact * 1.26, "{got} vs {exact}");
    }
    assert_eq!(m.request_durations_us().count(), 100);
}

#[test]
fn the_upstream_gauge_never_wraps() {
    let m = Metrics::default();
    m.upstream_connection_opened();
    m.upstream_connection_opened();
    m.upstream_connection_closed();
    assert_eq!(
        (m.requests().upstream_open, m.requests().upstream_opened),
        (1, 2)
    );
    m.upstream_connection_closed();
    m.upstream_connection_closed(); // one too many: ignored
    assert_eq!(
        (m.requests().upstream_open, m.requests().upstream_opened),
        (0, 2)
    );
}
