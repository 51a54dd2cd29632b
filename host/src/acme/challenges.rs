//! Challenge answers while an order is validated: HTTP-01 tokens (served
//! by the HTTP path at `/.well-known/acme-challenge/<token>`; on
//! `acme.port` the request line is read before `admit`, so no plugin sees
//! the validation) and TLS-ALPN-01 certificates (served to a ClientHello that
//! offers only `acme-tls/1`, seen in the peek before any plugin). Each
//! answer lives as long as the [`Posted`] guard its order holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls::sign::CertifiedKey;

/// The path prefix of HTTP-01 (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The answers posted now.
#[derive(Debug, Default)]
pub struct Challenges {
    http: Mutex<HashMap<String, String>>,
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// `alpn.len()`, read on every TLS connection without the lock.
    alpn_count: AtomicUsize,
    /// `http.len()`, read on every connection to `acme.port`.
    http_count: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Challenges {
    /// The key authorization for the HTTP-01 request `path`, when it is
    /// one of ours.
    pub fn http01(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        lock(&self.http).get(token).cloned()
    }

    /// Whether any HTTP-01 answer is posted (one atomic load).
    pub fn http_pending(&self) -> bool {
        self.http_count.load(Ordering::Relaxed) > 0
    }

    /// Whether the first bytes of a plaintext connection are an HTTP-01
    /// request for a posted token (`GET <path> HTTP/1.x`).
    pub fn is_http01_request(&self, head: &[u8]) -> bool {
        let Some(line) = head.split(|&b| b == b'\r').next() else {
            return false;
        };
        let mut parts = line.split(|&b| b == b' ');
        let (Some(b"GET"), Some(path)) = (parts.next(), parts.next()) else {
            return false;
        };
        std::str::from_utf8(path).is_ok_and(|p| self.http01(p).is_some())
    }

    /// Whether any TLS-ALPN-01 answer is posted (one atomic load: the
    /// connection path asks on every TLS connection).
    pub fn alpn_pending(&self) -> bool {
        self.alpn_count.load(Ordering::Relaxed) > 0
    }

    /// The TLS-ALPN-01 certificate for `sni`, for a client that offered
    /// only `acme-tls/1`.
    pub fn tls_alpn01(&self, sni: Option<&str>, alpn: &[String]) -> Option<Arc<CertifiedKey>> {
        if !self.alpn_pending() || alpn.len() != 1 || alpn[0].as_bytes() != ACME_TLS_ALPN {
            return None;
        }
        lock(&self.alpn).get(sni?).cloned()
    }

    /// Posts the HTTP-01 answer for `token`.
    pub(crate) fn post_http01(self: &Arc<Self>, token: &str, key_authorization: &str) -> Posted {
        let mut http = lock(&self.http);
        http.insert(token.to_owned(), key_authorization.to_owned());
        self.http_count.store(http.len(), Ordering::Relaxed);
        drop(http);
        Posted {
            challenges: self.clone(),
            what: Answer::Http(token.to_owned()),
        }
    }

    /// Posts the TLS-ALPN-01 certificate for `name`.
    pub(crate) fn post_tls_alpn01(self: &Arc<Self>, name: &str, cert: Arc<CertifiedKey>) -> Posted {
        let mut alpn = lock(&self.alpn);
        alpn.insert(name.to_owned(), cert);
        self.alpn_count.store(alpn.len(), Ordering::Relaxed);
        Posted {
            challenges: self.clone(),
            what: Answer::Alpn(name.to_owned()),
        }
    }
}

#[derive(Debug)]
enum Answer {
    Http(String),
    Alpn(String),
}

/// A posted answer; withdrawn when dropped.
#[derive(Debug)]
pub(crate) struct Posted {
    challenges: Arc<Challenges>,
    what: Answer,
}

impl Drop for Posted {
    fn drop(&mut self) {
        match &self.what {
            Answer::Http(token) => {
                let mut http = lock(&self.challenges.http);
                http.remove(token);
                self.challenges
                    .http_count
                    .store(http.len(), Ordering::Relaxed);
            }
            Answer::Alpn(name) => {
                let mut alpn = lock(&self.challenges.alpn);
                alpn.remove(name);
                self.challenges
                    .alpn_count
                    .store(alpn.len(), Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_served_while_posted() {
        let c = Arc::new(Challenges::default());
        let path = format!("{HTTP01_PREFIX}tok");
        assert_eq!(c.http01(&path), None);
        let posted = c.post_http01("tok", "tok.thumb");
        assert_eq!(c.http01(&path).as_deref(), Some("tok.thumb"));
        assert_eq!(c.http01("/.well-known/other/tok"), None);
        assert!(c.http_pending());
        assert!(c.is_http01_request(format!("GET {path} HTTP/1.1\r\nHost: a\r\n").as_bytes()));
        assert!(!c.is_http01_request(format!("POST {path} HTTP/1.1\r\n").as_bytes()));
        assert!(!c.is_http01_request(b"GET /other HTTP/1.1\r\n"));
        drop(posted);
        assert_eq!(c.http01(&path), None);
        assert!(!c.http_pending());
        assert!(!c.alpn_pending());
    }
}
