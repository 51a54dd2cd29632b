//! ACME certificates for routes with `certificate: "auto"`: one
//! certificate per listed name (so each renews, fails and is stored on its
//! own), ordered at start unless the store holds a valid one, renewed
//! before expiry, and — with `acme.onDemand` — ordered at the first
//! handshake for a name a plugin approves.
//!
//! * `store.rs` — account and certificates on disk, behind a trait;
//! * `challenges.rs` — the HTTP-01 and TLS-ALPN-01 answers while orders
//!   are validated, which the connection path serves before any plugin;
//! * `order.rs` — one order with `instant-acme`;
//! * `renewal.rs` — which names are due: by the server's renewal
//!   information (RFC 9773) when it offers it, else by the threshold;
//! * `on_demand.rs` — ordering at a handshake, deduplicated and bounded;
//! * this file — [`Acme`]: what is issued (swapped in whole: a renewal
//!   never drops a connection, the old certificate serves until the new
//!   one is in place), each name's status, orders and their retries with
//!   backoff.
//!
//! Above `tls` and `plugins` (it asks nothing of them but types); `proxy`,
//! `http` and `admin` ask it.

mod challenges;
mod on_demand;
mod order;
mod renewal;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use self::challenges::{
    ACME_TLS_ALPN, ChallengeFuture, Challenges, HTTP01_PREFIX, SharedChallenges,
};
pub use self::on_demand::OnDemandError;
pub use self::order::OrderError;
pub use self::store::{Claim, DiskStore, Store, StoreError};
use crate::config::acme::AcmeConfig;
use crate::config::tls::{CertSource, Pem};
use crate::metrics::Metrics;
use crate::tls::LoadedCert;

/// Orders at once (validation waits on the server, not on us).
const CONCURRENT_ORDERS: usize = 4;
/// First retry after a failed order; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3_600);
/// One order, from the account to the chain: past it the order counts as
/// failed (a server that stops answering must not hold a name in flight
/// forever).
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);
/// One request outside an order (the account, a renewal window).
const NETWORK_TIMEOUT: Duration = Duration::from_secs(60);
/// While another instance holds a name's order claim: how often the store
/// is looked at for its certificate (and the claim tried again).
const CLAIM_POLL: Duration = Duration::from_secs(1);

/// A name's certificate state, as `/api/certificates` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A certificate is served.
    Valid,
    /// No certificate yet; an order is in flight.
    Pending,
    /// A certificate is served and a new one is being ordered.
    Renewing,
    /// The last order failed (see `last_error`, `next_attempt`).
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::Pending => "pending",
            Status::Renewing => "renewing",
            Status::Failed => "failed",
        }
    }
}

/// What is known of a served certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub serial: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
}

/// One name, as `/api/certificates` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameStatus {
    pub name: String,
    pub status: Status,
    pub certificate: Option<Issued>,
    pub last_error: Option<String>,
    /// Unix seconds.
    pub next_attempt: Option<i64>,
    /// Ordered at a handshake (`onDemand`), not from a route's list.
    pub on_demand: bool,
}

#[derive(Debug, Default)]
struct Entry {
    cert: Option<Issued>,
    /// The served leaf, to ask the server for its renewal window.
    leaf: Option<rustls::pki_types::CertificateDer<'static>>,
    last_error: Option<String>,
    next_attempt: Option<SystemTime>,
    /// Orders failed in a row (0 after one succeeds).
    failures: u32,
    on_demand: bool,
    /// The order in flight; its waiters see `Some(issued)` when it ends.
    in_flight: Option<watch::Sender<Option<bool>>>,
}

/// The ACME manager.
pub struct Acme {
    config: AcmeConfig,
    store: Arc<dyn Store>,
    challenges: Arc<Challenges>,
    metrics: Arc<Metrics>,
    issued: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    entries: Mutex<HashMap<String, Entry>>,
    account: tokio::sync::Mutex<Option<instant_acme::Account>>,
    permits: Semaphore,
    on_demand_starts: Mutex<VecDeque<Instant>>,
    tasks: Mutex<JoinSet<()>>,
    /// The directory offers ACME renewal information (RFC 9773): `None`
    /// until asked.
    ari: Mutex<Option<bool>>,
    /// The runtime orders run on (the one that created this: the control
    /// thread), so an on-demand order started by a handshake never runs —
    /// and waits on its store — on a worker thread.
    runtime: Option<tokio::runtime::Handle>,
}

/// Where a certificate an order ended with came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    /// Ordered by this process.
    Ordered,
    /// Ordered by another instance sharing the store, and loaded from it.
    Loaded,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("directory", &self.config.directory_url)
            .field("names", &lock(&self.entries).len())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Acme {
    /// Checks `directoryCa`, opens the store and serves what it holds for
    /// `names` (the `auto` routes' listed names) — and, with `onDemand`,
    /// every name stored. Nothing is ordered until [`Acme::start`].
    pub fn new(
        config: AcmeConfig,
        names: &[String],
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Acme>, StoreError> {
        Self::new_over(config, names, metrics, |disk| Arc::new(disk))
    }

    /// [`Acme::new`] with the disk store wrapped by `store` (a cluster's
    /// shared store keeps the disk one underneath).
    pub fn new_over(
        config: AcmeConfig,
        names: &[String],
        metrics: Arc<Metrics>,
        store: impl FnOnce(DiskStore) -> Arc<dyn Store>,
    ) -> Result<Arc<Acme>, StoreError> {
        // Checked now, not at the first order: a wrong path fails the start.
        if let Some(ca) = &config.directory_ca {
            use rustls::pki_types::pem::PemObject as _;
            let bad = |message: String| StoreError {
                path: format!("acme.directoryCa ({})", ca.display()),
                message,
            };
            let pem = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
            if rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .next()
                .is_none()
            {
                return Err(bad("holds no PEM certificate".into()));
            }
        }
        let store = store(DiskStore::open(&config.store)?);
        Ok(Self::with_store(config, store, names, metrics))
    }

    /// [`Acme::new`] with a given store.
    pub fn with_store(
        config: AcmeConfig,
        store: Arc<dyn Store>,
        names: &[String],
        metrics: Arc<Metrics>,
    ) -> Arc<Acme> {
        let acme = Arc::new(Acme {
            config,
            store,
            challenges: Arc::default(),
            metrics,
            issued: ArcSwap::default(),
            entries: Mutex::default(),
            account: tokio::sync::Mutex::default(),
            permits: Semaphore::new(CONCURRENT_ORDERS),
            on_demand_starts: Mutex::default(),
            tasks: Mutex::default(),
            ari: Mutex::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        });
        if let Some(shared) = acme.store.shared_challenges() {
            acme.challenges.set_shared(shared);
        }
        let mut wanted: Vec<(String, bool)> = names.iter().map(|n| (n.clone(), false)).collect();
        if acme.config.on_demand {
            match acme.store.names() {
                Ok(stored) => wanted.extend(
                    stored
                        .into_iter()
                        .filter(|s| !names.contains(s))
                        .map(|s| (s, true)),
                ),
                Err(e) => {
                    tracing::warn!(target: "turnout::acme", error = %e, "listing stored certificates")
                }
            }
        }
        for (name, on_demand) in wanted {
            acme.restore(&name, on_demand);
        }
        acme
    }

    /// Reads `name`'s stored certificate: served when it is sound and
    /// covers the name; otherwise the reason is kept for the status.
    fn restore(&self, name: &str, on_demand: bool) {
        let mut entry = Entry {
            on_demand,
            ..Entry::default()
        };
        match self.store.certificate(name) {
            Ok(None) => {}
            Ok(Some(pem)) => match load(name, &pem) {
                Ok(cert) => {
                    entry.cert = Some(issued_of(&cert));
                    entry.leaf = cert.key.cert.first().cloned();
                    self.install(name, &cert);
                }
                Err(e) => {
                    tracing::warn!(target: "turnout::acme", name, file = %self.store.describe(Some(name)),
                        error = %e, "stored certificate unusable: ordering a new one");
                    entry.last_error = Some(format!("stored certificate unusable: {e}"));
                }
            },
            Err(e) => {
                tracing::warn!(target: "turnout::acme", name, error = %e, "reading the stored certificate");
                entry.last_error = Some(e.to_string());
            }
        }
        lock(&self.entries).insert(name.to_owned(), entry);
    }

    /// Orders what is missing or due, and starts the renewal checks.
    pub fn start(self: &Arc<Self>) {
        let names: Vec<String> = lock(&self.entries).keys().cloned().collect();
        for name in names {
            if self.due(&name) {
                self.request(&name);
            }
        }
        if self.config.auto_renew {
            let me = self.clone();
            self.spawn(async move { me.renewals().await });
        }
    }

    /// Adds names a reloaded config lists (they are served from the store
    /// or ordered); names already managed are left as they are.
    pub fn manage(self: &Arc<Self>, names: &[String]) {
        for name in names {
            if lock(&self.entries).contains_key(name) {
                continue;
            }
            self.restore(name, false);
            if self.due(name) {
                self.request(name);
            }
        }
    }

    /// Stops every order, retry and check (the proxy is shutting down).
    pub fn stop(&self) {
        lock(&self.tasks).abort_all();
    }

    /// The challenge answers the connection path serves.
    pub fn challenges(&self) -> &Arc<Challenges> {
        &self.challenges
    }

    /// Whether on-demand issuance is on.
    pub fn on_demand_enabled(&self) -> bool {
        self.config.on_demand
    }

    /// The certificate served for `name`, if one was issued.
    pub fn certificate(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.issued.load().get(name).cloned()
    }

    /// Every managed name, sorted.
    pub fn statuses(&self) -> Vec<NameStatus> {
        let entries = lock(&self.entries);
        let mut out: Vec<NameStatus> = entries
            .iter()
            .map(|(name, e)| NameStatus {
                name: name.clone(),
                status: match (&e.cert, e.in_flight.is_some(), e.failures > 0) {
                    (_, false, true) => Status::Failed,
                    (Some(_), true, _) => Status::Renewing,
                    (None, _, _) => Status::Pending,
                    (Some(_), false, false) => Status::Valid,
                },
                certificate: e.cert.clone(),
                last_error: e.last_error.clone(),
                next_attempt: e.next_attempt.map(unix),
                on_demand: e.on_demand,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// `name` needs an order: no certificate, or renewal is due.
    fn due(&self, name: &str) -> bool {
        let entries = lock(&self.entries);
        let Some(e) = entries.get(name) else {
            return false;
        };
        match &e.cert {
            None => true,
            Some(c) => unix(SystemTime::now()) >= renewal::renew_at(c, self.config.renew_threshold),
        }
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.tasks);
        while tasks.try_join_next().is_some() {}
        match &self.runtime {
            Some(rt) => tasks.spawn_on(fut, rt),
            None => tasks.spawn(fut),
        };
    }

    /// Starts an order for `name` unless one is in flight; the receiver
    /// sees `Some(issued)` when it ends.
    fn request(self: &Arc<Self>, name: &str) -> watch::Receiver<Option<bool>> {
        let mut entries = lock(&self.entries);
        let e = entries.entry(name.to_owned()).or_default();
        if let Some(tx) = &e.in_flight {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        e.in_flight = Some(tx);
        drop(entries);
        let (me, name) = (self.clone(), name.to_owned());
        self.spawn(async move { me.order(name).await });
        rx
    }

    /// One order for `name`, its outcome recorded and, on failure, a retry
    /// scheduled with backoff (listed names; an on-demand name is retried
    /// by its next handshake after the backoff).
    async fn order(self: Arc<Self>, name: String) {
        let result = {
            let _permit = self.permits.acquire().await;
            tokio::time::timeout(ORDER_TIMEOUT, self.try_order(&name))
                .await
                .unwrap_or_else(|_| {
                    Err(OrderError {
                        step: "timeout",
                        message: format!("no certificate within {} s", ORDER_TIMEOUT.as_secs()),
                    })
                })
        };
        // A certificate another instance ordered is not an order here.
        if !matches!(result, Ok((_, _, Got::Loaded))) {
            self.metrics.acme_order(result.is_ok());
        }
        let mut entries = lock(&self.entries);
        let e = entries.entry(name.clone()).or_default();
        let retry = match result {
            Ok((issued, leaf, got)) => {
                let from = match got {
                    Got::Ordered => "ordered here",
                    Got::Loaded => "ordered by another instance, loaded from the store",
                };
                tracing::info!(target: "turnout::acme", name, serial = %issued.serial,
                    not_after = issued.not_after, from, "certificate in place");
                *e = Entry {
                    cert: Some(issued),
                    leaf,
                    on_demand: e.on_demand,
                    in_flight: e.in_flight.take(),
                    ..Entry::default()
                };
                None
            }
            Err(err) => {
                e.failures += 1;
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << (e.failures - 1).min(16))
                    .min(MAX_BACKOFF);
                e.last_error = Some(err.to_string());
                e.next_attempt = Some(SystemTime::now() + backoff);
                tracing::warn!(target: "turnout::acme", name, error = %err, failures = e.failures,
                    retry_in_s = backoff.as_secs(), "order failed");
                (!e.on_demand).then_some(backoff)
            }
        };
        let ok = e.failures == 0;
        if let Some(tx) = e.in_flight.take() {
            let _ = tx.send(Some(ok));
        }
        drop(entries);
        if let Some(backoff) = retry {
            let me = self.clone();
            self.spawn(async move {
                tokio::time::sleep(backoff).await;
                me.request(&name);
            });
        }
    }

    /// The account, restored or created once (bounded: the crate's HTTP
    /// client has no timeout of its own).
    async fn account(&self) -> Result<instant_acme::Account, OrderError> {
        let mut slot = self.account.lock().await;
        if let Some(a) = &*slot {
            return Ok(a.clone());
        }
        let a = tokio::time::timeout(NETWORK_TIMEOUT, order::account(&self.config, &*self.store))
            .await
            .map_err(|_| OrderError {
                step: "account",
                message: format!("no answer within {} s", NETWORK_TIMEOUT.as_secs()),
            })??;
        *slot = Some(a.clone());
        Ok(a)
    }

    /// A certificate for `name`: one another instance stored meanwhile,
    /// else ordered here once this process holds the name's claim (with a
    /// shared store, exactly one instance orders a name; the others wait
    /// for its certificate and load it).
    async fn try_order(&self, name: &str) -> Result<(Issued, Option<Leaf>, Got), OrderError> {
        let mut waiting = false;
        loop {
            if let Some((issued, leaf)) = self.stored_fresh(name).await {
                return Ok((issued, leaf, Got::Loaded));
            }
            let owned = name.to_owned();
            let claim = self
                .on_store(move |s| s.claim(&owned, ORDER_TIMEOUT))
                .await
                .unwrap_or(Claim::Ours);
            if claim == Claim::Ours {
                // Stored between the look and the claim: nothing to order.
                let result = match self.stored_fresh(name).await {
                    Some((issued, leaf)) => Ok((issued, leaf, Got::Loaded)),
                    None => self
                        .order_here(name)
                        .await
                        .map(|(issued, leaf)| (issued, leaf, Got::Ordered)),
                };
                let owned = name.to_owned();
                let _ = self.on_store(move |s| s.release(&owned)).await;
                return result;
            }
            if !waiting {
                tracing::info!(target: "turnout::acme", name,
                    "another instance is ordering this name: waiting for its certificate");
                waiting = true;
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }

    /// `f` on the store, off the event loop (a shared store waits on the
    /// network, a disk one on fsync); `None` if it panicked.
    async fn on_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> T + Send + 'static,
    ) -> Option<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&*store)).await.ok()
    }

    /// The stored certificate for `name` when it is not the one served
    /// and not due for renewal (another instance ordered it), installed.
    async fn stored_fresh(&self, name: &str) -> Option<(Issued, Option<Leaf>)> {
        let owned = name.to_owned();
        let pem = self
            .on_store(move |s| s.certificate(&owned))
            .await?
            .ok()??;
        let cert = load(name, &pem).ok()?;
        let issued = issued_of(&cert);
        let served = lock(&self.entries)
            .get(name)
            .and_then(|e| e.cert.as_ref().map(|c| c.serial.clone()));
        let due =
            unix(SystemTime::now()) >= renewal::renew_at(&issued, self.config.renew_threshold);
        if due || served.as_deref() == Some(issued.serial.as_str()) {
            return None;
        }
        self.install(name, &cert);
        Some((issued, cert.key.cert.first().cloned()))
    }

    /// One order with the ACME server, its certificate stored and served.
    async fn order_here(&self, name: &str) -> Result<(Issued, Option<Leaf>), OrderError> {
        let account = self.account().await?;
        // With renewal information, the server is told which certificate
        // this one replaces (RFC 9773 §5).
        // Not after a failed attempt: an order that was finalized before
        // it failed may already have replaced it (`alreadyReplaced`).
        let replaces = match *lock(&self.ari) {
            Some(true) => lock(&self.entries)
                .get(name)
                .filter(|e| e.failures == 0)
                .and_then(|e| e.leaf.as_ref())
                .and_then(|l| instant_acme::CertificateIdentifier::try_from(l).ok())
                .map(instant_acme::CertificateIdentifier::into_owned),
            _ => None,
        };
        let kind = self.config.challenge;
        let pem = order::issue(&account, name, kind, replaces, &self.challenges).await?;
        let cert = load(name, &pem).map_err(|e| OrderError {
            step: "certificate",
            message: e,
        })?;
        // Written off the event loop (an fsync can stall a worker's
        // connections). A certificate that cannot be stored is still
        // served and not ordered again (the CA limits duplicates); the
        // error is logged, and the next start orders it anew.
        let (store, owned_name, owned_pem) = (self.store.clone(), name.to_owned(), pem.clone());
        let stored =
            tokio::task::spawn_blocking(move || store.save_certificate(&owned_name, &owned_pem))
                .await
                .unwrap_or_else(|e| {
                    Err(StoreError {
                        path: self.store.describe(Some(name)),
                        message: e.to_string(),
                    })
                });
        if let Err(e) = stored {
            tracing::error!(target: "turnout::acme", name, error = %e,
                "the certificate is served but could not be stored: a restart will order it again");
        }
        self.install(name, &cert);
        Ok((issued_of(&cert), cert.key.cert.first().cloned()))
    }

    /// Serves `cert` for `name` from the next handshake on.
    fn install(&self, name: &str, cert: &LoadedCert) {
        let key = cert.key.clone();
        self.issued.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.insert(name.to_owned(), key.clone());
            m
        });
    }
}

/// A served leaf certificate.
type Leaf = rustls::pki_types::CertificateDer<'static>;

/// The names `auto` routes list (wildcards aside: HTTP-01 and
/// TLS-ALPN-01 cannot validate them), each once, in config order. A name
/// no ACME server could issue (an IP address, `localhost`) is left out
/// with a warning.
pub fn listed_names(tls: &crate::config::TlsConfig) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in tls.routes.iter().filter(|r| r.acme) {
        for d in &r.domains {
            if d.contains('*') || names.contains(d) {
                continue;
            }
            if is_orderable(d) {
                names.push(d.clone());
            } else {
                tracing::warn!(target: "turnout::acme", route = %r.name, name = %d,
                    "not a name an ACME server can issue a certificate for: left out");
            }
        }
    }
    names
}

/// A DNS name an ACME server can validate: no wildcard, no IP address,
/// letters, digits and hyphens in dot-separated labels.
fn is_orderable(name: &str) -> bool {
    name.len() <= 253
        && name.contains('.')
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// Parses a stored or issued key + chain, and checks it serves `name`.
fn load(name: &str, pem: &str) -> Result<LoadedCert, String> {
    let source = CertSource {
        cert: Pem::Text(pem.to_owned()),
        key: Pem::Text(pem.to_owned()),
        ca: None,
        at: format!("acme certificate for {name}"),
    };
    let cert = crate::tls::certs::load(&source, &crate::tls::provider()).map_err(|e| e.message)?;
    if !cert.covers(name) {
        return Err(format!(
            "it does not cover {name} (it covers {})",
            cert.names.join(", ")
        ));
    }
    Ok(cert)
}

fn issued_of(c: &LoadedCert) -> Issued {
    Issued {
        serial: c.serial.clone(),
        issuer: c.issuer.clone(),
        not_before: c.not_before,
        not_after: c.not_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_dns_names_are_ordered() {
        for ok in ["a.example.com", "x-1.test"] {
            assert!(is_orderable(ok), "{ok}");
        }
        for bad in [
            "*.example.com",
            "localhost",
            "127.0.0.1",
            "a..b",
            "-a.b",
            "A.example.com",
            "",
        ] {
            assert!(!is_orderable(bad), "{bad}");
        }
    }
}
