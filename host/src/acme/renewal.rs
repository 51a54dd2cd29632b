//! When certificates are renewed: a check every `renewCheckInterval`
//! (±10 % jitter) of the names that are due — by the server's renewal
//! window (RFC 9773) when it offers one, else by the threshold.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{Acme, Issued, NETWORK_TIMEOUT, lock, unix};

impl Acme {
    /// Whether `name`'s renewal is due: at a random time in the window the
    /// server suggests, when it offers renewal information (RFC 9773: it
    /// may move the window, e.g. ahead of a revocation); otherwise by the
    /// threshold.
    async fn renewal_due(&self, name: &str) -> bool {
        let leaf = lock(&self.entries).get(name).and_then(|e| e.leaf.clone());
        match leaf {
            Some(leaf) if *lock(&self.ari) != Some(false) => match self.window(&leaf).await {
                Some((start, end)) => {
                    let mut r = [0u8; 2];
                    crate::net::random(&mut r);
                    let at =
                        start + (end - start).max(0) * i64::from(u16::from_be_bytes(r)) / 65_535;
                    unix(SystemTime::now()) >= at
                }
                None => self.due(name),
            },
            _ => self.due(name),
        }
    }

    /// The server's suggested renewal window for `leaf` (Unix seconds).
    async fn window(
        &self,
        leaf: &rustls::pki_types::CertificateDer<'static>,
    ) -> Option<(i64, i64)> {
        let id = instant_acme::CertificateIdentifier::try_from(leaf).ok()?;
        let account = self.account().await.ok()?;
        let asked = tokio::time::timeout(NETWORK_TIMEOUT, account.renewal_info(&id)).await;
        let Ok(answer) = asked else {
            tracing::warn!(target: "turnout::acme", "no renewal window within {} s; using the threshold this time",
                NETWORK_TIMEOUT.as_secs());
            return None;
        };
        match answer {
            Ok((info, _)) => {
                *lock(&self.ari) = Some(true);
                let w = info.suggested_window;
                Some((w.start.unix_timestamp(), w.end.unix_timestamp()))
            }
            Err(instant_acme::Error::Unsupported(_)) => {
                tracing::info!(target: "turnout::acme", "the directory offers no renewal information: renewing by acme.renewThresholdDays");
                *lock(&self.ari) = Some(false);
                None
            }
            Err(e) => {
                tracing::warn!(target: "turnout::acme", error = %e, "asking for the renewal window; using the threshold this time");
                None
            }
        }
    }

    /// Checks every `renewCheckInterval` (±10 %) which names are due.
    pub(super) async fn renewals(self: Arc<Self>) {
        loop {
            let mut jitter = [0u8; 1];
            crate::net::random(&mut jitter);
            let factor = 0.9 + 0.2 * f64::from(jitter[0]) / 255.0;
            tokio::time::sleep(self.config.renew_check_interval.mul_f64(factor)).await;
            // A failed renewal is tried again here once its backoff is
            // over (an on-demand name has no scheduled retry, and its
            // handshakes are served by the old certificate meanwhile).
            let now = SystemTime::now();
            let names: Vec<String> = lock(&self.entries)
                .iter()
                .filter(|(_, e)| {
                    e.in_flight.is_none()
                        && e.cert.is_some()
                        && e.next_attempt.is_none_or(|t| t <= now)
                })
                .map(|(n, _)| n.clone())
                .collect();
            for name in names {
                if self.renewal_due(&name).await {
                    tracing::info!(target: "turnout::acme", name, "renewal due");
                    self.request(&name);
                }
            }
        }
    }
}

/// When a certificate is renewed: `threshold` before expiry, but never
/// earlier than two thirds into its life (a short-lived certificate and a
/// long threshold would otherwise renew in a loop).
pub(super) fn renew_at(c: &Issued, threshold: Duration) -> i64 {
    let life = (c.not_after - c.not_before).max(0);
    let threshold = i64::try_from(threshold.as_secs()).unwrap_or(i64::MAX);
    c.not_after - threshold.min(life / 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_the_threshold_or_two_thirds_into_a_short_life() {
        let day = 86_400;
        let c = Issued {
            serial: String::new(),
            issuer: String::new(),
            not_before: 0,
            not_after: 90 * day,
        };
        assert_eq!(renew_at(&c, Duration::from_secs(30 * day as u64)), 60 * day);
        let short = Issued {
            not_after: 120,
            ..c
        };
        assert_eq!(renew_at(&short, Duration::from_secs(30 * day as u64)), 80);
    }
}
