//! The HTTP families of `/metrics`: requests by route and status class,
//! the proxy's own error answers by reason, request durations, the busiest
//! domains (top N, like client IPs: a Host header is client data), and the
//! upstream connection pool; and the WebSockets the proxy relays.

use std::borrow::Cow;
use std::fmt::Error;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{counter, family, gauge, histogram, label};
use crate::metrics::Metrics;

/// Encodes the HTTP families, with `top` domains one by one.
pub(super) fn encode(e: &mut DescriptorEncoder<'_>, m: &Metrics, top: usize) -> Result<(), Error> {
    let v = m.requests();
    family(
        e,
        "http_requests",
        "HTTP requests finished, by the route that answered (`-` when none did) and status class.",
        MetricType::Counter,
        v.by_route.iter().flat_map(|r| {
            r.by_status_class.iter().map(move |(class, n)| {
                (
                    vec![
                        ("route", label(&r.route)),
                        ("status_class", Cow::Borrowed(*class)),
                    ],
                    *n,
                )
            })
        }),
        |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
    )?;
    family(
        e,
        "http_request_errors",
        "HTTP answers the proxy made itself because something failed, by reason.",
        MetricType::Counter,
        v.errors
            .iter()
            .map(|(r, n)| (vec![("reason", Cow::Borrowed(*r))], *n)),
        |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
    )?;
    let mut h = e.encode_descriptor(
        "http_request_duration_seconds",
        "HTTP requests from head received to response body finished (or dropped).",
        None,
        MetricType::Histogram,
    )?;
    histogram(&mut h, m.request_durations_us(), 1e-6)?;
    family(
        e,
        "http_requests_by_domain",
        "HTTP requests of the busiest domains (Host without port; top N only).",
        MetricType::Counter,
        v.by_domain
            .iter()
            .take(top)
            .map(|(d, n)| (vec![("domain", label(d))], *n)),
        |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
    )?;
    gauge(
        e,
        "http_upstream_connections",
        "Upstream connections of the HTTP proxy open now.",
        v.upstream_open,
    )?;
    counter(
        e,
        "http_upstream_connections_opened",
        "Upstream connections the HTTP proxy opened.",
        v.upstream_opened,
    )?;
    websockets(e, m)
}

/// WebSockets the proxy speaks itself (terminated and plaintext HTTP).
fn websockets(e: &mut DescriptorEncoder<'_>, m: &Metrics) -> Result<(), Error> {
    let w = m.websockets();
    gauge(
        e,
        "websockets",
        "WebSockets relayed now (upgraded on terminated or plaintext HTTP routes).",
        w.active,
    )?;
    family(
        e,
        "websocket_upgrades",
        "WebSocket upgrades completed, by route.",
        MetricType::Counter,
        w.upgrades
            .iter()
            .map(|(r, n)| (vec![("route", label(r))], *n)),
        |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
    )?;
    counter(
        e,
        "websocket_pings",
        "Heartbeat pings the proxy sent to WebSocket clients.",
        w.pings_sent,
    )?;
    family(
        e,
        "websocket_closes",
        "WebSockets closed, by reason (the side that closed first, ping-timeout, lifetime, idle, shutdown).",
        MetricType::Counter,
        w.closes
            .iter()
            .map(|(r, n)| (vec![("reason", Cow::Borrowed(*r))], *n)),
        |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::admin::prometheus::{Scrape, render};
    use crate::metrics::{Metrics, RequestRecord};

    fn scrape(m: &std::sync::Arc<Metrics>, top_ips: usize) -> String {
        render(Scrape {
            metrics: m.clone(),
            plugins: None,
            tracker: None,
            top_ips,
            tls: None,
            acme: None,
            cluster: None,
        })
    }

    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn http_families_are_exposed_with_their_labels() {
        let m = Metrics::new();
        for (domain, status, micros, error) in [
            ("a.test", 200, 3, None),
            ("a.test", 200, 1500, None),
            ("b.test", 502, 1500, Some("upstream-reset")),
            ("c\"d", 404, 40_000, Some("no-route")),
        ] {
            m.request(&RequestRecord {
                domain,
                route: if error == Some("no-route") {
                    "-"
                } else {
                    "web"
                },
                status,
                duration: Duration::from_micros(micros),
                error,
            });
        }
        m.upstream_connection_opened();
        m.websocket_opened("chat");
        m.websocket_ping();
        m.websocket_closed("ping-timeout");
        m.websocket_opened("chat");
        let text = scrape(&m, 2);
        let v = |series: &str| value(&text, series);
        let requests = "turnout_http_requests_total";
        assert_eq!(
            v(&format!("{requests}{{route=\"web\",status_class=\"2xx\"}}")),
            Some(2)
        );
        assert_eq!(
            v(&format!("{requests}{{route=\"web\",status_class=\"5xx\"}}")),
            Some(1)
        );
        assert_eq!(
            v(&format!("{requests}{{route=\"-\",status_class=\"4xx\"}}")),
            Some(1)
        );
        let errors = "turnout_http_request_errors_total";
        assert_eq!(
            v(&format!("{errors}{{reason=\"upstream-reset\"}}")),
            Some(1)
        );
        assert_eq!(v(&format!("{errors}{{reason=\"misdirected\"}}")), Some(0));
        let domains = "turnout_http_requests_by_domain_total";
        assert_eq!(v(&format!("{domains}{{domain=\"a.test\"}}")), Some(2));
        assert_eq!(text.matches(domains).count(), 2, "top 2 only:\n{text}");
        assert_eq!(v("turnout_http_upstream_connections"), Some(1));
        assert_eq!(v("turnout_http_upstream_connections_opened_total"), Some(1));
        assert_eq!(v("turnout_websockets"), Some(1));
        assert_eq!(
            v("turnout_websocket_upgrades_total{route=\"chat\"}"),
            Some(2)
        );
        assert_eq!(v("turnout_websocket_pings_total"), Some(1));
        assert_eq!(
            v("turnout_websocket_closes_total{reason=\"ping-timeout\"}"),
            Some(1)
        );
        assert_eq!(
            v("turnout_websocket_closes_total{reason=\"idle\"}"),
            Some(0)
        );
        // A client's Host is escaped, never written raw into the format.
        let all = scrape(&m, 10);
        assert!(all.contains(r#"{domain="c\"d"} 1"#), "{all}");
    }

    /// The encoder sums the bucket counts it is given: cumulative ones went
    /// in twice, and `+Inf` came out above `_count`.
    #[test]
    fn duration_buckets_are_cumulative_once_and_end_at_plus_inf() {
        let m = Metrics::new();
        for micros in [3, 1500, 1500, 40_000] {
            m.request(&RequestRecord {
                domain: "a.test",
                route: "web",
                status: 200,
                duration: Duration::from_micros(micros),
                error: None,
            });
        }
        let text = scrape(&m, 0);
        let b = |le: &str| {
            let series = format!("turnout_http_request_duration_seconds_bucket{{le=\"{le}\"}}");
            value(&text, &series)
        };
        assert_eq!(b("0.000004"), Some(1), "{text}");
        assert_eq!(b("0.002048"), Some(3));
        assert_eq!(b("0.065536"), Some(4));
        assert_eq!(b("+Inf"), Some(4));
        assert_eq!(
            value(&text, "turnout_http_request_duration_seconds_count"),
            Some(4)
        );
    }
}
