//! Every certificate the terminated routes serve, indexed for the lookup
//! each handshake makes: exact names in one map, wildcards in another keyed
//! by the part after `*.`, so resolution is two hash lookups whatever the
//! number of certificates.
//!
//! Choice for a name (lower-case): an exact name, else a wildcard one label
//! deep (`*.example.com` serves `a.example.com`, never `a.b.example.com`,
//! RFC 6125 — even though route matching's `*` spans dots), else none: a
//! certificate that does not name the server is never served. With no SNI:
//! the port's only certificate, else `defaultCertificate`, else none. No
//! certificate: the client gets `unrecognized_name`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;

use super::certs::{self, CertError, LoadedCert, wildcard_parent};
use crate::config::TlsConfig;

/// One certificate and the routes that use it.
#[derive(Debug)]
pub struct StoredCert {
    /// The certificate.
    pub cert: LoadedCert,
    /// The routes whose `certificate` it is (empty: `defaultCertificate`).
    pub routes: Vec<String>,
    /// Ports those routes listen on.
    pub ports: Vec<(u16, u16)>,
}

/// The loaded certificates and their index. Immutable: a reload builds a
/// new one and swaps it in.
#[derive(Debug, Default)]
pub struct CertStore {
    certs: Vec<Arc<StoredCert>>,
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    default: Option<usize>,
}

/// What loading found besides errors: things to log, not to refuse.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Certificates that could not be loaded.
    pub errors: Vec<CertError>,
    /// Expired certificates, uncovered domains.
    pub warnings: Vec<String>,
}

impl CertStore {
    /// Loads every certificate `config` names. A certificate that fails is
    /// reported and left out; its routes then get no certificate.
    pub fn load(config: &TlsConfig, provider: &CryptoProvider) -> (CertStore, LoadReport) {
        let mut store = CertStore::default();
        let mut report = LoadReport::default();
        let now = SystemTime::now();
        // The same source given by several routes is loaded once.
        let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
        for route in &config.routes {
            let Some(source) = &route.certificate else {
                continue;
            };
            let key = (
                source.cert.describe(),
                source.key.describe(),
                source.ca.as_ref().map(|c| c.describe()).unwrap_or_default(),
            );
            // Inline PEM has no name to compare by: never shared.
            let inline = [Some(&source.cert), Some(&source.key), source.ca.as_ref()]
                .into_iter()
                .flatten()
                .any(|p| matches!(p, crate::config::tls::Pem::Text(_)));
            let index = match seen.get(&key) {
                Some(&i) if !inline => i,
                _ => match certs::load(source, provider) {
                    Ok(cert) => {
                        if cert.days_left(now) < 0 {
                            report.warnings.push(format!(
                                "{}: the certificate in {} expired (notAfter {}); serving it anyway",
                                source.at, cert.source, cert.not_after
                            ));
                        }
                        store.certs.push(Arc::new(StoredCert {
                            cert,
                            routes: Vec::new(),
                            ports: Vec::new(),
                        }));
                        let i = store.certs.len() - 1;
                        seen.insert(key, i);
                        i
                    }
                    Err(e) => {
                        report.errors.push(e);
                        continue;
                    }
                },
            };
            if let Some(stored) = Arc::get_mut(&mut store.certs[index]) {
                stored.routes.push(route.name.clone());
                stored.ports.extend(&route.ports);
            }
            let cert = &store.certs[index].cert;
            for domain in &route.domains {
                if !domain.contains('*') && !cert.covers(domain) {
                    report.warnings.push(format!(
                        "{}: route {:?} lists {domain:?}, which the certificate in {} does not cover (it covers {})",
                        source.at,
                        route.name,
                        cert.source,
                        cert.names.join(", ")
                    ));
                }
            }
        }
        if let Some(source) = &config.default_certificate {
            match certs::load(source, provider) {
                Ok(cert) => {
                    store.certs.push(Arc::new(StoredCert {
                        cert,
                        routes: Vec::new(),
                        ports: Vec::new(),
                    }));
                    store.default = Some(store.certs.len() - 1);
                }
                Err(e) => report.errors.push(e),
            }
        }
        // Earlier routes' certificates win a name two certificates share.
        for (i, stored) in store.certs.iter().enumerate() {
            for name in &stored.cert.names {
                match name.strip_prefix("*.") {
                    Some(parent) => store.wildcard.entry(parent.to_owned()).or_insert(i),
                    None => store.exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        (store, report)
    }

    /// Every certificate, in load order.
    pub fn certs(&self) -> &[Arc<StoredCert>] {
        &self.certs
    }

    /// The certificate for a handshake on `port` with `sni` (lower-case),
    /// by the rules in the module docs.
    pub fn resolve(&self, sni: Option<&str>, port: u16) -> Option<Arc<CertifiedKey>> {
        let index = match sni {
            Some(name) => self
                .exact
                .get(name)
                .or_else(|| wildcard_parent(name).and_then(|p| self.wildcard.get(p)))
                .copied(),
            None => self.only_on(port).or(self.default),
        };
        index.map(|i| self.certs[i].cert.key.clone())
    }

    /// The port's certificate when exactly one serves it.
    fn only_on(&self, port: u16) -> Option<usize> {
        let mut found = None;
        for (i, c) in self.certs.iter().enumerate() {
            if c.ports.iter().any(|&(a, b)| (a..=b).contains(&port)) {
                if found.is_some() {
                    return None;
                }
                found = Some(i);
            }
        }
        found
    }
}
