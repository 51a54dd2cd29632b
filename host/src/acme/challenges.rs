//! Challenge answers while an order is validated: HTTP-01 tokens (served
//! by the HTTP path at `/.well-known/acme-challenge/<token>`; on
//! `acme.port` the request line is read before `admit`, so no plugin sees
//! the validation) and TLS-ALPN-01 certificates (served to a ClientHello that
//! offers only `acme-tls/1`, seen in the peek before any plugin). Each
//! answer lives as long as the [`Posted`] guard its order holds.
//!
//! With a cluster store ([`SharedChallenges`]) HTTP-01 answers are also
//! published there, so whichever instance the validation reaches answers
//! it. TLS-ALPN-01 answers stay with the instance that ordered.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::sign::CertifiedKey;

/// The path prefix of HTTP-01 (RFC 8555 §8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// A boxed future, for the object-safe [`SharedChallenges`].
pub type ChallengeFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// HTTP-01 answers shared by every instance (`cluster`). Failures are the
/// implementation's to log: an answer that could not be published is
/// still served by the instance that posted it.
pub trait SharedChallenges: Send + Sync + std::fmt::Debug {
    /// Publishes `token`'s answer; resolves once stored (or failed).
    fn post<'a>(&'a self, token: &'a str, key_authorization: &'a str) -> ChallengeFuture<'a, ()>;
    /// Withdraws `token`'s answer, in the background.
    fn withdraw(&self, token: &str);
    /// The answer another instance published for `token`.
    fn lookup<'a>(&'a self, token: &'a str) -> ChallengeFuture<'a, Option<String>>;
}

/// The answers posted now.
#[derive(Debug, Default)]
pub struct Challenges {
    /// Where HTTP-01 answers are shared, with a cluster store.
    shared: OnceLock<Arc<dyn SharedChallenges>>,
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
        // Every HTTP request asks: one atomic load when nothing is posted.
        if self.http_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        lock(&self.http).get(token).cloned()
    }

    /// Whether an HTTP-01 answer may be asked for (one atomic load): one
    /// is posted here, or instances share them (any may be posted).
    pub fn http_pending(&self) -> bool {
        self.http_count.load(Ordering::Relaxed) > 0 || self.shared.get().is_some()
    }

    /// Shares HTTP-01 answers through `shared` from now on.
    pub fn set_shared(&self, shared: Arc<dyn SharedChallenges>) {
        let _ = self.shared.set(shared);
    }

    /// [`Challenges::http01`], else the answer another instance published.
    pub async fn http01_anywhere(&self, path: &str) -> Option<String> {
        if let Some(answer) = self.http01(path) {
            return Some(answer);
        }
        let token = path.strip_prefix(HTTP01_PREFIX)?;
        let shared = self.shared.get()?;
        if !is_token(token) {
            return None;
        }
        shared.lookup(token).await
    }

    /// [`Challenges::is_http01_request`] for answers posted here or by
    /// another instance.
    pub async fn is_http01_request_anywhere(&self, head: &[u8]) -> bool {
        match request_path(head) {
            Some(path) => self.http01_anywhere(path).await.is_some(),
            None => false,
        }
    }

    /// Publishes a posted HTTP-01 answer to the other instances; resolves
    /// once it is stored there (before the order says the challenge is
    /// ready), at once without a cluster store.
    pub(crate) async fn share_http01(&self, token: &str, key_authorization: &str) {
        if let Some(shared) = self.shared.get() {
            shared.post(token, key_authorization).await;
        }
    }

    /// Whether the first bytes of a plaintext connection are an HTTP-01
    /// request for a posted token (`GET <path> HTTP/1.x`).
    pub fn is_http01_request(&self, head: &[u8]) -> bool {
        request_path(head).is_some_and(|p| self.http01(p).is_some())
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

/// The path of a `GET <path> HTTP/1.x` request line.
fn request_path(head: &[u8]) -> Option<&str> {
    let line = head.split(|&b| b == b'\r').next()?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(b"GET"), Some(path)) = (parts.next(), parts.next()) else {
        return None;
    };
    std::str::from_utf8(path).ok()
}

/// An ACME token: base64url, as RFC 8555 §8.1 makes them (so a lookup
/// never carries a client's arbitrary bytes into a store key).
fn is_token(token: &str) -> bool {
    (1..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
                drop(http);
                if let Some(shared) = self.challenges.shared.get() {
                    shared.withdraw(token);
                }
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
