//! A connection before its relay, as phases: each a small function over
//! [`Pending`] that reads what the earlier ones left and adds its part.
//!
//! ```text
//! proxy_header ─► admit ─► peek ─► route (limits, policy) ══► Routed
//! ```
//!
//! [`Routed`] is where a connection leaves the shared path: passthrough
//! goes to [`Pending::connect`] and the L4 relay; a terminated or HTTP
//! route is taken over by its own module at this point.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use turnout_plugin_sdk::{
    ClientHello, Connection, Forward, Peer, Policy, ProxyProtocol, Routed as RoutedInfo, TlsAlert,
};

use super::conn::Accepted;
use super::relay::Timers;
use super::{Proxy, Settings, socket};
use crate::limits::{ClientGuard, RouteGuard};
use crate::metrics::{ConnHandle, Refusal};
use crate::net::{client_hello, proxy_protocol};
use crate::plugins::{Admission, Chain, Routing};

/// Everything a connection has before its relay.
pub(crate) struct Pending {
    pub(crate) settings: Arc<Settings>,
    pub(crate) stream: TcpStream,
    /// `initialDataTimeout` from accept.
    deadline: Instant,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    via_proxy: bool,
    tls_port: bool,
    inherited: socket::Inherited,
    /// Client bytes read and not yet forwarded.
    buf: Vec<u8>,
    /// An ACME HTTP-01 validation let in before `admit`: it gets its
    /// answer and the connection closes (nothing else may follow it in).
    pub(crate) acme_only: bool,
    pub(crate) held: Held,
}

/// A connection's bookkeeping apart from its socket: what a path that
/// takes the socket over (termination) keeps until the connection ends.
pub(crate) struct Held {
    pub(crate) proxy: Arc<Proxy>,
    /// The chain the connection started with, for its whole life.
    pub(crate) chain: Arc<Chain>,
    pub(crate) id: u64,
    pub(crate) started: Instant,
    /// The client: the peer, or what a trusted PROXY header said.
    pub(crate) client: SocketAddr,
    pub(crate) sni: Option<String>,
    /// Client bytes count from here on (never a PROXY header's).
    counting: bool,
    // Dropped in this order: the metrics settle before the limit counters
    // are released.
    pub(crate) meter: ConnHandle,
    pub(crate) guard: ClientGuard,
}

impl Held {
    /// Counts and logs a refusal (`unread`: client bytes read but never
    /// forwarded, counted now); the connection closes when dropped.
    pub(crate) fn refuse(&self, refusal: &Refusal, unread: usize) {
        if self.counting {
            self.meter.traffic().count_in(unread as u64);
        }
        self.meter.refused(refusal);
        tracing::info!(
            conn = self.id, client = %self.client, sni = self.sni.as_deref().unwrap_or("-"),
            duration_ms = self.started.elapsed().as_millis(),
            reason = refusal.label(), detail = ?refusal, "refused"
        );
    }
}

/// Where the phases before the relay send a connection.
#[expect(
    clippy::large_enum_variant,
    reason = "lives only until the connection's path is chosen; boxing Routed would cost every L4 connection an allocation"
)]
pub(crate) enum Verdict {
    /// A route for the whole connection.
    Routed(Routed),
    /// Plaintext HTTP on an HTTP port: routed per request.
    Http,
    /// An ACME server validating a TLS-ALPN-01 challenge: answered with
    /// this certificate, before any plugin.
    AcmeChallenge(std::sync::Arc<rustls::sign::CertifiedKey>),
}

/// A routed connection: the verdict, the route's slot, the timers.
pub(crate) struct Routed {
    pub(crate) conn: Connection,
    pub(crate) forward: Forward,
    /// The connection's slot on the route (held until it closes).
    pub(crate) slot: RouteGuard,
    pub(crate) policy: Policy,
}

/// What the relay needs from the phases before it.
pub(crate) struct Ready {
    pub(crate) backend: TcpStream,
    pub(crate) target: SocketAddr,
    pub(crate) conn: Connection,
    pub(crate) route: String,
    pub(crate) slot: RouteGuard,
    pub(crate) timers: Timers,
}

impl Pending {
    pub(crate) fn new(proxy: Arc<Proxy>, accepted: Accepted) -> Self {
        let started = Instant::now();
        let id = proxy.ids.fetch_add(1, Ordering::Relaxed);
        let settings = proxy.settings.load_full();
        let chain = proxy.plugins.chain();
        let Accepted {
            stream,
            peer,
            local,
            tls_port,
            inherited,
            worker,
        } = accepted;
        let guard = proxy.tracker.accept(peer.ip());
        let meter = proxy.metrics.open(id, peer);
        meter.worker(worker);
        Self {
            deadline: started + settings.initial_data_timeout,
            settings,
            stream,
            peer,
            local,
            via_proxy: false,
            tls_port,
            inherited,
            buf: Vec::new(),
            acme_only: false,
            held: Held {
                proxy,
                chain,
                id,
                started,
                client: peer,
                sni: None,
                counting: false,
                meter,
                guard,
            },
        }
    }

    /// The client bytes read so far and not forwarded, handed to the path
    /// that forwards them (counted there).
    pub(crate) fn take_peeked(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// The socket, the unforwarded bytes and the bookkeeping, for a path
    /// that takes the socket over.
    pub(crate) fn split(self) -> (TcpStream, Vec<u8>, Held) {
        (self.stream, self.buf, self.held)
    }

    /// The phases up to the routing verdict. A plaintext client on a
    /// declared HTTP port is HTTP: its requests are routed one by one.
    pub(crate) async fn route_phases(&mut self) -> Result<Verdict, Refusal> {
        self.proxy_header().await?;
        self.count_shared().await;
        // While a TLS-ALPN-01 answer is posted, the ClientHello is read
        // before `admit`: the ACME server's validation comes before any
        // plugin. Otherwise `admit` comes before anything is read.
        if self.acme_http01().await? {
            self.acme_only = true;
            return Ok(Verdict::Http);
        }
        let acme = (self.tls_port)
            .then(|| self.held.proxy.acme())
            .flatten()
            .filter(|a| a.challenges().alpn_pending())
            .cloned();
        let (peer, hello) = match acme {
            Some(acme) => {
                let hello = self.peek().await?;
                let challenge = hello
                    .as_ref()
                    .and_then(|h| acme.challenges().tls_alpn01(h.sni.as_deref(), &h.alpn));
                if let Some(cert) = challenge {
                    return Ok(Verdict::AcmeChallenge(cert));
                }
                (self.admit()?, hello)
            }
            None => {
                let peer = self.admit()?;
                (peer, self.peek().await?)
            }
        };
        let port = self.local.port();
        let http_port =
            self.held.chain.is_http_port(port) || self.settings.acme_http_port == Some(port);
        if hello.is_none() && self.tls_port && http_port {
            return Ok(Verdict::Http);
        }
        self.route(peer, hello).await.map(Verdict::Routed)
    }

    /// On `acme.port`, while an HTTP-01 answer is posted: whether this is
    /// the ACME server's validation request, read before `admit` so that
    /// no plugin (IP lists, rate limits) stands between it and its answer.
    async fn acme_http01(&mut self) -> Result<bool, Refusal> {
        // Every connection asks: the port first, one compare.
        if self.settings.acme_http_port != Some(self.local.port()) {
            return Ok(false);
        }
        let Some(acme) = self.held.proxy.acme().cloned() else {
            return Ok(false);
        };
        if !acme.challenges().http_pending() {
            return Ok(false);
        }
        // The request line: `GET /.well-known/acme-challenge/<token> …`.
        while !self.buf.contains(&b'\n') && self.buf.len() < 512 {
            if self.buf.first().is_some_and(|&b| b != b'G') {
                return Ok(false);
            }
            self.read_more("no complete request line within initialDataTimeout")
                .await?;
        }
        Ok(acme
            .challenges()
            .is_http01_request_anywhere(&self.buf)
            .await)
    }

    /// Reads more client bytes into the buffer before the deadline;
    /// `waiting_for` says what for, when the deadline passes.
    async fn read_more(&mut self, waiting_for: &'static str) -> Result<(), Refusal> {
        let limit = self.settings.max_pending_data;
        if self.buf.len() >= limit {
            return Err(Refusal::TooMuchPending);
        }
        // Straight into the Vec (no chunk array living in the connection's
        // future while it waits), never past `limit`.
        let room = (limit - self.buf.len()).min(4096);
        self.buf.reserve(room);
        let mut limited = (&mut self.stream).take(room as u64);
        match tokio::time::timeout_at(self.deadline, limited.read_buf(&mut self.buf)).await {
            Err(_) => Err(Refusal::Timeout(waiting_for)),
            Ok(Ok(0) | Err(_)) => Err(Refusal::ClientGone),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// A PROXY header, only from trusted sources; from anyone else its
    /// signature is a protocol error (see [`Pending::peek`]).
    async fn proxy_header(&mut self) -> Result<(), Refusal> {
        let s = &self.settings;
        if s.accept_proxy_protocol && s.trusted_proxies.matches(self.peer.ip()) {
            loop {
                match proxy_protocol::parse(&self.buf) {
                    Ok(proxy_protocol::ProxyParse::Incomplete) => {
                        self.read_more("no complete PROXY header within initialDataTimeout")
                            .await?;
                    }
                    Ok(proxy_protocol::ProxyParse::Header { header, len }) => {
                        self.buf.drain(..len);
                        if let Some(src) = header.source {
                            self.held.client = src;
                            self.via_proxy = true;
                            self.held.guard.rebind(src.ip());
                        }
                        break;
                    }
                    Err(e) => return Err(Refusal::ProxyHeader(e.to_string())),
                }
            }
        }
        self.held.counting = true;
        self.held.meter.client(self.held.client);
        Ok(())
    }

    /// With a cluster store and a connection rate limit: counts this
    /// connection in the client's cluster-wide window, so the plugins
    /// asking for its recent connections see every instance's (awaited on
    /// this task; a store that is down answers at once, and the local
    /// count stands).
    async fn count_shared(&mut self) {
        if !self.settings.shared_connection_rate {
            return;
        }
        let Some(cluster) = self.held.proxy.cluster().cloned() else {
            return;
        };
        let ip = self.held.client.ip();
        if let Ok(n) = cluster.count_connection(ip).await {
            self.held.proxy.tracker.note_shared_recent(ip, n);
        }
    }

    /// The plugins' `admit`.
    fn admit(&mut self) -> Result<Peer, Refusal> {
        let peer =
            Peer::new(self.held.client, self.local.port()).via_proxy_protocol(self.via_proxy);
        match self.held.chain.admit(&peer) {
            Admission::Admit => Ok(peer),
            Admission::Deny { plugin, reason } => Err(Refusal::Denied { plugin, reason }),
            Admission::Failed { plugin } => Err(Refusal::PluginFailure { plugin }),
        }
    }

    /// On TLS ports, the ClientHello (`None`: the client does not speak
    /// TLS). On every port, a PROXY signature from an untrusted peer is
    /// refused — on TLS ports even when its first segment holds only a
    /// prefix of it.
    async fn peek(&mut self) -> Result<Option<ClientHello>, Refusal> {
        let mut hello = None;
        if self.tls_port {
            hello = loop {
                match client_hello::parse(&self.buf) {
                    Ok(client_hello::Parsed::Incomplete { .. }) => {
                        self.read_more("no complete ClientHello within initialDataTimeout")
                            .await?;
                    }
                    Ok(client_hello::Parsed::NotTls) => break None,
                    Ok(client_hello::Parsed::Hello(info)) => break Some(self.hello(info)),
                    Err(e) => return Err(Refusal::Hello(e.to_string())),
                }
            };
            // A first segment of `P` is not TLS, and not yet a PROXY
            // signature either: deciding now would pass the rest of a
            // spoofed header to the backend as data.
            while !self.via_proxy && proxy_protocol::is_signature_prefix(&self.buf) {
                self.read_more("no complete first bytes within initialDataTimeout")
                    .await?;
            }
        }
        if !self.via_proxy && proxy_protocol::looks_like_header(&self.buf) {
            return Err(Refusal::ProxyHeader(format!(
                "PROXY header from untrusted peer {}",
                self.peer.ip()
            )));
        }
        Ok(hello)
    }

    fn hello(&mut self, info: client_hello::HelloInfo) -> ClientHello {
        let mut h = ClientHello::without_sni()
            .alpn(info.alpn)
            .versions(&info.versions)
            .resumption_without_sni(info.resumption_without_sni);
        if let Some(name) = &info.sni {
            self.held.meter.sni(name);
        }
        self.held.sni.clone_from(&info.sni);
        h.sni = info.sni;
        h
    }

    /// The plugins' `route`, the route's limits, then `policy`.
    async fn route(&mut self, peer: Peer, hello: Option<ClientHello>) -> Result<Routed, Refusal> {
        let is_tls = hello.is_some();
        let conn = match hello {
            Some(h) => Connection::tls(self.held.id, peer, h),
            None => Connection::plain(self.held.id, peer),
        };
        let forward = match self.held.chain.route(&conn) {
            Routing::Forward { forward, .. } => forward,
            Routing::NoRoute => {
                self.alert(is_tls.then_some(TlsAlert::UnrecognizedName))
                    .await;
                return Err(Refusal::NoRoute);
            }
            Routing::Reject { plugin, reject } => {
                self.alert(reject.alert.filter(|_| is_tls)).await;
                return Err(Refusal::Rejected {
                    plugin,
                    reason: reject.reason,
                });
            }
            Routing::Failed { plugin } => {
                self.alert(is_tls.then_some(TlsAlert::InternalError)).await;
                return Err(Refusal::PluginFailure { plugin });
            }
        };
        let limits = &forward.limits;
        let slot = self
            .held
            .guard
            .enter_route(
                &forward.route,
                limits.max_connections,
                limits.max_connections_per_ip,
            )
            .map_err(|hit| Refusal::RouteLimit(format!("{hit:?}")))?;
        self.held.meter.routed(&forward.route);
        let first = forward
            .targets
            .first()
            .cloned()
            .unwrap_or_else(|| turnout_plugin_sdk::Target::new("", 0));
        let policy = self.held.chain.policy(
            &conn,
            &RoutedInfo::new(forward.route.clone(), first, forward.tls_mode),
            &self.settings.policy_for(is_tls),
        );
        Ok(Routed {
            conn,
            forward,
            slot,
            policy,
        })
    }

    /// Writes a fatal TLS alert, if any (best effort: a client already
    /// gone cannot take it).
    pub(crate) async fn alert(&mut self, alert: Option<TlsAlert>) {
        let Some(alert) = alert else { return };
        let record = alert_record(alert);
        if self.stream.write_all(&record).await.is_ok() {
            self.held.meter.traffic().count_out(record.len() as u64);
        }
    }

    /// Passthrough: connects a target, sets both sockets' options from the
    /// policy, sends the PROXY header and the peeked bytes.
    pub(crate) async fn connect(&mut self, routed: Routed) -> Result<Ready, Refusal> {
        let Routed {
            conn,
            forward,
            slot,
            policy,
        } = routed;
        let (mut backend, target) =
            super::connect::connect_any(&forward.targets, self.settings.connect_timeout)
                .await
                .map_err(|e| Refusal::Backend(e.to_string()))?;
        self.held.meter.relaying(target);
        self.client_socket_policy(&policy);
        backend_socket_policy(&backend, &policy);
        let mut first_bytes = match forward.proxy_protocol {
            ProxyProtocol::None => Vec::new(),
            ProxyProtocol::V1 => proxy_protocol::encode_v1(self.held.client, self.local),
            ProxyProtocol::V2 => proxy_protocol::encode_v2(self.held.client, self.local),
        };
        // The peeked bytes crossed the client socket: they count as "in",
        // now, once. Neither buffer is needed again: an idle relay should
        // hold none.
        let peeked = self.take_peeked();
        self.held.meter.traffic().count_in(peeked.len() as u64);
        first_bytes.extend_from_slice(&peeked);
        drop(peeked);
        if !first_bytes.is_empty() {
            backend
                .write_all(&first_bytes)
                .await
                .map_err(|e| Refusal::Backend(format!("{target}: {e}")))?;
        }
        let timers = Timers::from_policy(&policy);
        Ok(Ready {
            backend,
            target,
            conn,
            route: forward.route,
            slot,
            timers,
        })
    }

    /// The policy's socket options on the client socket (the WIT says
    /// the policy decides both sockets'; until here the client socket has
    /// what its listener gave it).
    pub(crate) fn client_socket_policy(&self, policy: &Policy) {
        let wanted = socket::Inherited {
            no_delay: policy.no_delay,
            keep_alive: policy.tcp_keep_alive.map(Duration::from_millis),
        };
        socket::apply(&self.stream, self.inherited, wanted);
    }

    /// Counts and logs a refusal; the connection closes when `self` drops.
    pub(crate) fn refuse(&self, refusal: &Refusal) {
        self.held.refuse(refusal, self.buf.len());
    }
}

/// The policy's socket options on a backend socket.
pub(crate) fn backend_socket_policy(backend: &TcpStream, policy: &Policy) {
    let _ = backend.set_nodelay(policy.no_delay);
    if let Some(ms) = policy.tcp_keep_alive {
        socket::keepalive(backend, Duration::from_millis(ms));
    }
}

/// A fatal TLS alert record (TLS 1.2 record version, as servers send to
/// clients that may speak either).
fn alert_record(alert: TlsAlert) -> [u8; 7] {
    let code = match alert {
        TlsAlert::UnrecognizedName => 112,
        TlsAlert::HandshakeFailure => 40,
        TlsAlert::AccessDenied => 49,
        TlsAlert::InternalError => 80,
    };
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, code]
}
