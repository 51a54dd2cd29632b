//! The cluster store's families of `/metrics` (only with `cluster`).

use std::borrow::Cow;
use std::fmt::Error;

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{counter, family, gauge, snapshot};
use crate::cluster::{ClusterView, State};

/// Encodes the cluster store's state, round trips, errors and fallbacks.
pub(super) fn encode(e: &mut DescriptorEncoder<'_>, c: &ClusterView) -> Result<(), Error> {
    gauge(
        e,
        "cluster_up",
        "1 while the cluster store answers; 0 while limits and plugin state are counted locally.",
        i64::from(c.state == State::Up),
    )?;
    gauge(
        e,
        "cluster_instances",
        "Instances whose heartbeat was live at the last look (this one included).",
        i64::try_from(c.instances_seen).unwrap_or(i64::MAX),
    )?;
    counter(
        e,
        "cluster_errors",
        "Calls to the cluster store that failed or timed out.",
        c.errors,
    )?;
    counter(
        e,
        "cluster_fallbacks",
        "Calls answered locally because the cluster store was down.",
        c.fallbacks,
    )?;
    family(
        e,
        "cluster_transitions",
        "Times the cluster store was found up or down.",
        MetricType::Counter,
        [("up", c.went_up), ("down", c.went_down)]
            .map(|(to, n)| (vec![("to", Cow::Borrowed(to))], n)),
        |s, v| s.encode_counter::<prometheus_client::encoding::NoLabelSet, u64, u64>(&v, None),
    )?;
    let mut m = e.encode_descriptor(
        "cluster_round_trip_seconds",
        "Round trips of answered calls to the cluster store.",
        None,
        MetricType::Histogram,
    )?;
    snapshot(&mut m, c.round_trip_histogram.clone(), 1e-6)
}
