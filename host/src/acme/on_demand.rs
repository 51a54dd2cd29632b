//! Certificates ordered at the first handshake for a name a plugin
//! approved (`acme.onDemand`): one order in flight per name, a bounded
//! number started a minute and of names in all, a failed name not retried
//! before its backoff, the handshake waiting at most `onDemandTimeout`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use tokio::time::Instant;

use super::{Acme, Entry, is_orderable, lock, unix};

/// On-demand orders started per minute, all names together.
const ON_DEMAND_PER_MINUTE: usize = 10;
/// Names ordered on demand, at most: past it, new names are refused (a
/// client choosing names must not grow the table without bound).
const MAX_ON_DEMAND_NAMES: usize = 10_000;

/// Why an on-demand certificate is not there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnDemandError {
    #[error("{0:?} is not a name a certificate can be ordered for")]
    BadName(String),
    #[error("the order for {name:?} failed ({error}); next attempt after {next_attempt}")]
    RecentlyFailed {
        name: String,
        error: String,
        next_attempt: i64,
    },
    #[error("on-demand orders are limited to {ON_DEMAND_PER_MINUTE} a minute")]
    RateLimited,
    #[error("{MAX_ON_DEMAND_NAMES} names were ordered on demand already")]
    TooMany,
    #[error("no certificate for {name:?} within {waited_ms} ms")]
    Timeout { name: String, waited_ms: u128 },
    #[error("the order for {0:?} failed")]
    Failed(String),
}

impl Acme {
    /// The certificate for `name` at a handshake, ordering it when there is
    /// none (the caller has had a plugin approve the name), within
    /// `onDemandTimeout`.
    pub async fn on_demand(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Arc<CertifiedKey>, OnDemandError> {
        if let Some(k) = self.certificate(name) {
            return Ok(k);
        }
        if !is_orderable(name) {
            return Err(OnDemandError::BadName(name.to_owned()));
        }
        let mut rx = {
            let mut entries = lock(&self.entries);
            // A name gets an entry only once its order starts: refusals
            // leave nothing behind.
            match entries.get(name) {
                Some(e) if e.in_flight.is_some() => {}
                Some(e) if e.next_attempt.is_some_and(|t| t > SystemTime::now()) => {
                    return Err(OnDemandError::RecentlyFailed {
                        name: name.to_owned(),
                        error: e.last_error.clone().unwrap_or_default(),
                        next_attempt: e.next_attempt.map_or(0, unix),
                    });
                }
                known => {
                    let on_demand = entries.values().filter(|e| e.on_demand).count();
                    if known.is_none() && on_demand >= MAX_ON_DEMAND_NAMES {
                        return Err(OnDemandError::TooMany);
                    }
                    if !self.take_on_demand_slot() {
                        return Err(OnDemandError::RateLimited);
                    }
                    entries.entry(name.to_owned()).or_insert_with(|| Entry {
                        on_demand: true,
                        ..Entry::default()
                    });
                }
            }
            drop(entries);
            self.request(name)
        };
        let wait = self.config.on_demand_timeout;
        match tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await {
            Ok(Ok(_)) => self
                .certificate(name)
                .ok_or_else(|| OnDemandError::Failed(name.to_owned())),
            Ok(Err(_)) => Err(OnDemandError::Failed(name.to_owned())),
            Err(_) => Err(OnDemandError::Timeout {
                name: name.to_owned(),
                waited_ms: wait.as_millis(),
            }),
        }
    }

    /// One of the minute's on-demand starts, if any is left.
    fn take_on_demand_slot(&self) -> bool {
        let mut starts = lock(&self.on_demand_starts);
        let now = Instant::now();
        while starts
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            starts.pop_front();
        }
        if starts.len() >= ON_DEMAND_PER_MINUTE {
            return false;
        }
        starts.push_back(now);
        true
    }
}
