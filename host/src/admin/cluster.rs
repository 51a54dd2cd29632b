//! `GET /api/cluster`: the shared store's state and the instances whose
//! heartbeat is live; and the `cluster` group of `/api/stats`.

use serde_json::{Value, json};

use crate::cluster::{Cluster, ClusterView};

/// The summary `/api/stats` carries (`null` without `cluster`).
pub(super) fn summary(cluster: Option<&Cluster>) -> Value {
    let Some(c) = cluster else {
        return Value::Null;
    };
    view_json(&c.view())
}

fn view_json(v: &ClusterView) -> Value {
    json!({
        "instance": v.instance,
        "state": v.state.as_str(),
        "redis": v.redis,
        "prefix": v.prefix,
        "instances": v.instances_seen,
        "roundTripUs": {"count": v.round_trips, "p50": v.p50_us, "p99": v.p99_us},
        "errors": v.errors,
        "fallbacks": v.fallbacks,
        "transitions": {"up": v.went_up, "down": v.went_down},
        "lastError": v.last_error,
    })
}

/// `/api/cluster`: the summary, and the instances read from the store now
/// (when it cannot answer, `instances` is empty and `instancesError` says
/// why; the state says the rest).
pub(super) async fn handle(cluster: Option<&Cluster>) -> Value {
    let Some(c) = cluster else {
        return json!({"enabled": false, "instances": []});
    };
    let listed = c.instances().await;
    let mut out = view_json(&c.view());
    out["enabled"] = json!(true);
    let me = c.config().instance.as_str();
    match listed {
        Ok(list) => {
            out["instances"] = list
                .into_iter()
                .map(|i| {
                    let mut v = serde_json::to_value(&i).unwrap_or(Value::Null);
                    v["self"] = json!(i.instance == me);
                    v
                })
                .collect();
        }
        Err(e) => {
            out["instances"] = json!([]);
            out["instancesError"] = json!(e.to_string());
        }
    }
    out
}
