//! `GET /metrics`: the registry in the OpenMetrics text format (which
//! Prometheus scrapes), through `prometheus-client`'s collector interface so
//! the values are read from our own atomics at scrape time.
//!
//! Cardinality is bounded: one series per refusal reason, per route (capped
//! by the registry), per plugin, and per client IP and HTTP domain only for
//! the top N. The HTTP families are in `prometheus/http.rs`.

mod cluster;
mod http;

use std::borrow::Cow;
use std::fmt::Error;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::limits::ConnectionTracker;
use crate::metrics::{ChangeResult, ChangeSource, LogHistogram, Metrics};
use crate::plugins::{CALL_TIME_BUCKETS_US, PluginSet};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything one scrape reads.
#[derive(Debug)]
pub struct Scrape {
    /// The registry.
    pub metrics: Arc<Metrics>,
    /// Per-plugin call statistics, if given.
    pub plugins: Option<Arc<PluginSet>>,
    /// The limit counters, if given.
    pub tracker: Option<Arc<ConnectionTracker>>,
    /// Client IPs exposed one by one.
    pub top_ips: usize,
    /// The certificates of terminated routes, if given.
    pub tls: Option<Arc<crate::tls::Terminator>>,
    /// ACME's names, when ACME is configured.
    pub acme: Option<Vec<crate::acme::NameStatus>>,
    /// The shared store, when `cluster` is configured.
    pub cluster: Option<crate::cluster::ClusterView>,
}

/// The exposition text.
pub fn render(scrape: Scrape) -> String {
    let mut registry = Registry::with_prefix("turnout");
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// Label values come from config and plugins: escape what the text format
/// reserves (the crate writes values verbatim).
fn label(v: &str) -> Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        Cow::Owned(
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n"),
        )
    } else {
        Cow::Borrowed(v)
    }
}

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> Result<(), Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<N>(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: N) -> Result<(), Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

type Labels<'a> = Vec<(&'static str, Cow<'a, str>)>;

/// One metric family with a series per label set.
fn family<'a, V>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels<'a>, V)>,
    mut write: impl FnMut(&mut MetricEncoder<'_>, V) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let mut series = m.encode_family(&labels)?;
        write(&mut series, v)?;
    }
    Ok(())
}

/// `h` with its bounds and sum multiplied by `scale` (ms → s).
fn histogram(m: &mut MetricEncoder<'_>, h: &LogHistogram, scale: f64) -> Result<(), Error> {
    // One snapshot: `+Inf` and the count are the total of the buckets read.
    snapshot(m, h.snapshot(), scale)
}

/// [`histogram`] of a snapshot taken already.
fn snapshot(
    m: &mut MetricEncoder<'_>,
    snap: crate::metrics::HistogramSnapshot,
    scale: f64,
) -> Result<(), Error> {
    // The encoder sums the counts it is given, and writes `+Inf` only for
    // `f64::MAX`: hand it each bucket's own count, not the running total.
    let mut below = 0;
    let buckets: Vec<(f64, u64)> = snap
        .cumulative
        .into_iter()
        .map(|(le, n)| (le as f64 * scale, n))
        .chain([(f64::MAX, snap.count)])
        .map(|(le, n)| {
            let own = n.saturating_sub(below);
            below = n;
            (le, own)
        })
        .collect();
    m.encode_histogram::<NoLabelSet>(snap.sum as f64 * scale, snap.count, &buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), Error> {
        let m = &self.metrics;
        let e = &mut enc;
        gauge(
            e,
            "uptime_seconds",
            "Seconds since start.",
            m.uptime().as_secs_f64(),
        )?;
        counter(e, "connections", "Connections accepted.", m.accepted())?;
        gauge(e, "connections_active", "Connections open now.", m.active())?;
        family(
            e,
            "connections_refused",
            "Connections refused before the relay, by reason.",
            MetricType::Counter,
            m.refusals()
                .into_iter()
                .map(|(r, n)| (vec![("reason", Cow::Borrowed(r))], n)),
            |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
        )?;
        let verdicts = m.plugin_refusals();
        family(
            e,
            "plugin_refusals",
            "Denials (admit) and rejections (route) by plugin and reason.",
            MetricType::Counter,
            verdicts
                .iter()
                .map(|((p, r), n)| (vec![("plugin", label(p)), ("reason", label(r))], *n)),
            |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
        )?;
        let (bytes_in, bytes_out) = m.bytes();
        family(
            e,
            "bytes",
            "Bytes across client sockets (TLS records included, PROXY headers not).",
            MetricType::Counter,
            [
                (vec![("direction", Cow::Borrowed("in"))], bytes_in),
                (vec![("direction", Cow::Borrowed("out"))], bytes_out),
            ],
            |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
        )?;
        let windows = [("1s", m.rate(1)), ("10s", m.rate(10)), ("60s", m.rate(60))];
        family(
            e,
            "throughput_bytes_per_second",
            "Bytes per second over the window, from 1 Hz samples.",
            MetricType::Gauge,
            windows.iter().flat_map(|(w, r)| {
                [
                    (
                        vec![
                            ("direction", Cow::Borrowed("in")),
                            ("window", Cow::Borrowed(*w)),
                        ],
                        r.bytes_in,
                    ),
                    (
                        vec![
                            ("direction", Cow::Borrowed("out")),
                            ("window", Cow::Borrowed(*w)),
                        ],
                        r.bytes_out,
                    ),
                ]
            }),
            |s, v| s.encode_gauge(&v),
        )?;

        let workers = m.workers();
        family(
            e,
            "worker_connections_active",
            "Open connections by worker thread.",
            MetricType::Gauge,
            workers
                .iter()
                .enumerate()
                .map(|(i, w)| (vec![("worker", Cow::Owned(i.to_string()))], w.active)),
            |s, v| s.encode_gauge(&v),
        )?;
        family(
            e,
            "worker_connections",
            "Connections accepted, by worker thread (the kernel spreads them by address hash).",
            MetricType::Counter,
            workers
                .iter()
                .enumerate()
                .map(|(i, w)| (vec![("worker", Cow::Owned(i.to_string()))], w.accepted)),
            |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
        )?;

        let routes = m.routes();
        family(
            e,
            "route_connections_active",
            "Open connections by route.",
            MetricType::Gauge,
            routes
                .iter()
                .map(|(r, u)| (vec![("route", label(r))], u.active)),
            |s, v| s.encode_gauge(&v),
        )?;
        family(
            e,
            "route_connections",
            "Connections routed, by route.",
            MetricType::Counter,
            routes
                .iter()
                .map(|(r, u)| (vec![("route", label(r))], u.total)),
            |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
        )?;
        family(
            e,
            "route_bytes",
            "Client-side bytes by route.",
            MetricType::Counter,
            routes.iter().flat_map(|(r, u)| {
                [
                    (
                        vec![("route", label(r)), ("direction", "in".into())],
                        u.bytes_in,
                    ),
                    (
                        vec![("route", label(r)), ("direction", "out".into())],
                        u.bytes_out,
                    ),
                ]
            }),
            |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
        )?;
        family(
            e,
            "route_throughput_bytes_per_second",
            "Bytes per second by route over the last 10 s.",
            MetricType::Gauge,
            routes.iter().flat_map(|(r, u)| {
                [
                    (
                        vec![("route", label(r)), ("direction", "in".into())],
                        u.rate_10s.bytes_in,
                    ),
                    (
                        vec![("route", label(r)), ("direction", "out".into())],
                        u.rate_10s.bytes_out,
                    ),
                ]
            }),
            |s, v| s.encode_gauge(&v),
        )?;

        let top = m.top_ips(self.top_ips);
        let ips: Vec<(String, crate::metrics::UsageView)> =
            top.into_iter().map(|(ip, u)| (ip.to_string(), u)).collect();
        family(
            e,
            "client_connections_active",
            "Open connections of the busiest client IPs (top N only).",
            MetricType::Gauge,
            ips.iter()
                .map(|(ip, u)| (vec![("ip", Cow::Borrowed(ip.as_str()))], u.active)),
            |s, v| s.encode_gauge(&v),
        )?;
        family(
            e,
            "client_bytes",
            "Client-side bytes of the busiest client IPs (top N only).",
            MetricType::Counter,
            ips.iter().flat_map(|(ip, u)| {
                [
                    (
                        vec![
                            ("ip", Cow::Borrowed(ip.as_str())),
                            ("direction", "in".into()),
                        ],
                        u.bytes_in,
                    ),
                    (
                        vec![
                            ("ip", Cow::Borrowed(ip.as_str())),
                            ("direction", "out".into()),
                        ],
                        u.bytes_out,
                    ),
                ]
            }),
            |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
        )?;
        gauge(
            e,
            "client_ips_tracked",
            "Client IPs in the per-IP table (live, or seen in the last minute).",
            m.tracked_ips() as u64,
        )?;

        let d = m.durations_ms();
        let mut h = e.encode_descriptor(
            "connection_duration_seconds",
            "Lifetime of relayed connections at close.",
            None,
            MetricType::Histogram,
        )?;
        histogram(&mut h, d, 0.001)?;
        let b = m.connection_bytes();
        let mut h = e.encode_descriptor(
            "connection_bytes",
            "Bytes (in + out) of relayed connections at close.",
            None,
            MetricType::Histogram,
        )?;
        histogram(&mut h, b, 1.0)?;

        if let Some(t) = &self.tracker {
            gauge(
                e,
                "limit_ips_tracked",
                "Client IPs the per-IP limits remember (live, or connected in the last minute).",
                t.tracked_ips() as u64,
            )?;
        }
        if let Some(set) = &self.plugins {
            plugins(e, set)?;
        }
        let handshakes = m.handshakes();
        family(
            e,
            "tls_handshakes",
            "TLS handshakes of terminated routes, by result, version and ALPN.",
            MetricType::Counter,
            handshakes.iter().map(|(h, n)| {
                (
                    vec![
                        ("result", Cow::Borrowed(h.result)),
                        ("version", Cow::Borrowed(h.version)),
                        ("alpn", label(&h.alpn)),
                    ],
                    *n,
                )
            }),
            |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
        )?;
        let (applied, refused) = m.certificate_reloads();
        family(
            e,
            "tls_certificate_reloads",
            "Certificate reloads after start (a changed file, SIGHUP): applied, or refused because a file was broken.",
            MetricType::Counter,
            [("applied", applied), ("refused", refused)]
                .map(|(result, n)| (vec![("result", Cow::Borrowed(result))], n)),
            |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
        )?;
        family(
            e,
            "config_changes",
            "Changes to the running configuration: from SIGHUP or the admin API; applied, refused (invalid, or a port could not be bound) or conflict (If-Match).",
            MetricType::Counter,
            ChangeSource::ALL.into_iter().flat_map(|(source, s)| {
                ChangeResult::ALL.into_iter().map(move |(result, r)| {
                    (
                        vec![("source", Cow::Borrowed(s)), ("result", Cow::Borrowed(r))],
                        m.config_changes(source, result),
                    )
                })
            }),
            |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
        )?;
        if self.tls.is_some() || self.acme.is_some() {
            let certs = self
                .tls
                .as_ref()
                .map(|t| t.store().certs())
                .unwrap_or_default();
            let issued = self
                .acme
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter_map(|a| {
                    let c = a.certificate.as_ref()?;
                    Some((c.serial.as_str(), a.name.as_str(), c.not_after))
                });
            family(
                e,
                "tls_certificate_expiry_timestamp_seconds",
                "notAfter of each certificate in use, static and ACME (Unix seconds).",
                MetricType::Gauge,
                certs
                    .iter()
                    .map(|c| {
                        let name = c.cert.names.first().map_or("", String::as_str);
                        (c.cert.serial.as_str(), name, c.cert.not_after)
                    })
                    .chain(issued)
                    .map(|(serial, name, not_after)| {
                        (
                            vec![("serial", Cow::Borrowed(serial)), ("name", label(name))],
                            not_after,
                        )
                    }),
                |s, v| s.encode_gauge(&v),
            )?;
        }
        if let Some(acme) = &self.acme {
            let (issued, failed) = m.acme_orders();
            family(
                e,
                "acme_orders",
                "ACME orders that ended, by result.",
                MetricType::Counter,
                [("issued", issued), ("failed", failed)]
                    .map(|(result, n)| (vec![("result", Cow::Borrowed(result))], n)),
                |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
            )?;
            let by = |status: crate::acme::Status| {
                acme.iter().filter(|a| a.status == status).count() as u64
            };
            family(
                e,
                "acme_certificates",
                "Names ACME manages, by status.",
                MetricType::Gauge,
                [
                    crate::acme::Status::Valid,
                    crate::acme::Status::Pending,
                    crate::acme::Status::Renewing,
                    crate::acme::Status::Failed,
                ]
                .map(|st| (vec![("status", Cow::Borrowed(st.as_str()))], by(st))),
                |s, v| s.encode_gauge(&v),
            )?;
        }
        if let Some(c) = &self.cluster {
            cluster::encode(e, c)?;
        }
        http::encode(e, m, self.top_ips)
    }
}

fn plugins(e: &mut DescriptorEncoder<'_>, set: &PluginSet) -> Result<(), Error> {
    let chain = set.chain();
    let snaps: Vec<(String, crate::plugins::PluginMetricsSnapshot)> = chain
        .plugins()
        .iter()
        .map(|p| (p.name().to_owned(), p.metrics().snapshot()))
        .collect();
    family(
        e,
        "plugin_calls",
        "Hook calls, failed ones included.",
        MetricType::Counter,
        snaps
            .iter()
            .map(|(p, s)| (vec![("plugin", label(p))], s.calls)),
        |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
    )?;
    family(
        e,
        "plugin_failures",
        "Failed hook calls by kind.",
        MetricType::Counter,
        snaps.iter().flat_map(|(p, s)| {
            s.failures.iter().map(move |(k, n)| {
                (
                    vec![("plugin", label(p)), ("kind", Cow::Borrowed(k.as_str()))],
                    *n,
                )
            })
        }),
        |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
    )?;
    family(
        e,
        "plugin_instances",
        "Plugin instances alive (pooled or in a call).",
        MetricType::Gauge,
        snaps
            .iter()
            .map(|(p, s)| (vec![("plugin", label(p))], s.instances_live)),
        |s, v| s.encode_gauge(&v),
    )?;
    family(
        e,
        "plugin_instantiations",
        "Plugin instances created.",
        MetricType::Counter,
        snaps
            .iter()
            .map(|(p, s)| (vec![("plugin", label(p))], s.instantiations)),
        |s, n| s.encode_counter::<NoLabelSet, _, u64>(&n, None),
    )?;
    family(
        e,
        "plugin_call_duration_seconds",
        "Hook call time.",
        MetricType::Histogram,
        snaps.iter().map(|(p, s)| (vec![("plugin", label(p))], s)),
        |m, s| {
            // Each bucket's own count: the encoder sums them (see `histogram`).
            let mut acc = 0;
            let buckets: Vec<(f64, u64)> = s
                .call_time_buckets
                .iter()
                .map(|(le, n)| {
                    acc += n;
                    (le.map_or(f64::MAX, |us| us as f64 / 1e6), *n)
                })
                .collect();
            debug_assert_eq!(buckets.len(), CALL_TIME_BUCKETS_US.len() + 1);
            m.encode_histogram::<NoLabelSet>(s.call_time_sum.as_secs_f64(), acc, &buckets, None)
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{Scrape, render};
    use crate::metrics::Metrics;

    /// `(le, count)` of every bucket line of `name` in the exposition.
    fn buckets(text: &str, name: &str) -> Vec<(String, u64)> {
        let prefix = format!("{name}_bucket{{le=\"");
        text.lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| {
                let (le, n) = rest.split_once("\"} ")?;
                Some((le.to_owned(), n.trim().parse().ok()?))
            })
            .collect()
    }

    /// Scrapes while another thread records: every scrape's buckets must
    /// be cumulative, `+Inf` included (it was read from a separate counter
    /// that `record` bumps after the bucket, so it could fall below).
    #[test]
    fn inf_is_never_below_the_last_bucket_while_recording() {
        let m = Metrics::new();
        m.durations_ms().record(1);
        let stop = Arc::new(AtomicBool::new(false));
        let recorder = {
            let (m, stop) = (m.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut v = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    m.durations_ms().record(v % 4096);
                    v = v.wrapping_mul(31).wrapping_add(7);
                }
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut scrapes = 0;
        while scrapes < 20_000 && std::time::Instant::now() < deadline {
            let text = render(Scrape {
                metrics: m.clone(),
                plugins: None,
                tracker: None,
                top_ips: 0,
                tls: None,
                acme: None,
                cluster: None,
            });
            let b = buckets(&text, "turnout_connection_duration_seconds");
            assert!(b.len() >= 2, "{text}");
            for pair in b.windows(2) {
                assert!(
                    pair[0].1 <= pair[1].1,
                    "scrape {scrapes}: buckets not cumulative: {b:?}"
                );
            }
            scrapes += 1;
        }
        stop.store(true, Ordering::Relaxed);
        recorder.join().unwrap();
        assert!(scrapes > 100, "only {scrapes} scrapes");
    }
}
