//! Plain Rust mirrors of the WIT types in `wit/plugin.wit`.
//!
//! These are what a plugin's hooks receive and return. Records the host may
//! grow in a later minor version are `#[non_exhaustive]`: build them with
//! their constructors and update fields by name.

use std::net::{IpAddr, SocketAddr};

/// Who connected, before anything was read from them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peer {
    /// The client (from a trusted PROXY header when there was one).
    pub client: SocketAddr,
    /// The local port the client connected to.
    pub listener_port: u16,
    /// True when `client` came from a PROXY protocol header.
    pub via_proxy_protocol: bool,
}

impl Peer {
    /// A peer that connected directly (no PROXY header).
    pub fn new(client: SocketAddr, listener_port: u16) -> Self {
        Self {
            client: SocketAddr::new(canonical_ip(client.ip()), client.port()),
            listener_port,
            via_proxy_protocol: false,
        }
    }

    /// The same peer, marked as learnt from a PROXY header.
    pub fn via_proxy_protocol(mut self, yes: bool) -> Self {
        self.via_proxy_protocol = yes;
        self
    }

    /// The client's IP, IPv4-mapped IPv6 already folded to IPv4.
    pub fn ip(&self) -> IpAddr {
        self.client.ip()
    }
}

/// Folds `::ffff:a.b.c.d` to `a.b.c.d`, so that one client has one address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// A TLS protocol version offered in a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsVersion {
    /// SSL 3.0.
    Ssl3,
    /// TLS 1.0.
    Tls10,
    /// TLS 1.1.
    Tls11,
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// SmartProxy's spelling: `"TLSv1.2"` and so on.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Ssl3 => "SSLv3",
            TlsVersion::Tls10 => "TLSv1",
            TlsVersion::Tls11 => "TLSv1.1",
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }

    /// Parses SmartProxy's spelling (`"TLSv1.3"`; `"TLSv1.0"` is accepted too).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "SSLv3" => TlsVersion::Ssl3,
            "TLSv1" | "TLSv1.0" => TlsVersion::Tls10,
            "TLSv1.1" => TlsVersion::Tls11,
            "TLSv1.2" => TlsVersion::Tls12,
            "TLSv1.3" => TlsVersion::Tls13,
            _ => return None,
        })
    }
}

/// What the host learnt from a TLS ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClientHello {
    /// SNI, lower-cased, without a trailing dot.
    pub sni: Option<String>,
    /// ALPN protocols, in the client's order.
    pub alpn: Vec<String>,
    /// Offered versions.
    pub versions: Vec<TlsVersion>,
    /// A session ticket or PSK was offered without SNI.
    pub resumption_without_sni: bool,
}

impl ClientHello {
    /// A ClientHello with this SNI (normalised as the host does) offering TLS 1.2 and 1.3.
    pub fn with_sni(sni: &str) -> Self {
        Self {
            sni: Some(crate::matching::normalize_domain(sni).into_owned()),
            versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            ..Self::default()
        }
    }

    /// A ClientHello without SNI offering TLS 1.2 and 1.3.
    pub fn without_sni() -> Self {
        Self {
            versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            ..Self::default()
        }
    }

    /// Sets the ALPN list.
    pub fn alpn<I: IntoIterator<Item = S>, S: Into<String>>(mut self, protocols: I) -> Self {
        self.alpn = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the offered versions.
    pub fn versions(mut self, versions: &[TlsVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    /// Marks the hello as a resumption attempt.
    pub fn resumption_without_sni(mut self, yes: bool) -> Self {
        self.resumption_without_sni = yes;
        self
    }
}

/// One connection, after the initial peek.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Connection {
    /// Host-assigned id, unique for the life of the process.
    pub id: u64,
    /// Who connected.
    pub peer: Peer,
    /// The ClientHello, on TLS connections.
    pub tls: Option<ClientHello>,
}

impl Connection {
    /// A plain (non-TLS) connection.
    pub fn plain(id: u64, peer: Peer) -> Self {
        Self {
            id,
            peer,
            tls: None,
        }
    }

    /// A TLS connection.
    pub fn tls(id: u64, peer: Peer, hello: ClientHello) -> Self {
        Self {
            id,
            peer,
            tls: Some(hello),
        }
    }

    /// The SNI, if this is TLS and the client sent one.
    pub fn sni(&self) -> Option<&str> {
        self.tls.as_ref().and_then(|t| t.sni.as_deref())
    }
}

/// How the host treats TLS on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Route on SNI, never decrypt.
    #[default]
    Passthrough,
    /// Decrypt; talk plain to the backend.
    Terminate,
    /// Decrypt; open TLS to the backend.
    TerminateAndReencrypt,
}

/// PROXY protocol header to send to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyProtocol {
    /// Send nothing.
    #[default]
    None,
    /// Text header.
    V1,
    /// Binary header.
    V2,
}

/// A TLS alert the host sends before closing a rejected TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAlert {
    /// `unrecognized_name` (112).
    UnrecognizedName,
    /// `handshake_failure` (40).
    HandshakeFailure,
    /// `access_denied` (49).
    AccessDenied,
    /// `internal_error` (80).
    InternalError,
}

/// A backend address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Target {
    /// A target.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

/// Limits the host enforces on one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RouteLimits {
    /// Active connections on the route; 0 is unlimited.
    pub max_connections: u32,
    /// Active connections per client IP on the route; 0 is unlimited.
    pub max_connections_per_ip: u32,
}

impl RouteLimits {
    /// No limits.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Limits with these values (0 is unlimited).
    pub fn new(max_connections: u32, max_connections_per_ip: u32) -> Self {
        Self {
            max_connections,
            max_connections_per_ip,
        }
    }
}

/// A route verdict: where to send the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Forward {
    /// Route name for logs, metrics and counters.
    pub route: String,
    /// Tried in order.
    pub targets: Vec<Target>,
    /// TLS handling.
    pub tls_mode: TlsMode,
    /// PROXY header to the backend.
    pub proxy_protocol: ProxyProtocol,
    /// Per-route limits.
    pub limits: RouteLimits,
}

impl Forward {
    /// Forward to `targets` as route `route`, passthrough, no PROXY header, no limits.
    pub fn new(route: impl Into<String>, targets: Vec<Target>) -> Self {
        Self {
            route: route.into(),
            targets,
            tls_mode: TlsMode::Passthrough,
            proxy_protocol: ProxyProtocol::None,
            limits: RouteLimits::default(),
        }
    }

    /// Sets the TLS mode.
    pub fn tls_mode(mut self, mode: TlsMode) -> Self {
        self.tls_mode = mode;
        self
    }

    /// Sets the PROXY header to send.
    pub fn proxy_protocol(mut self, pp: ProxyProtocol) -> Self {
        self.proxy_protocol = pp;
        self
    }

    /// Sets the route limits.
    pub fn limits(mut self, limits: RouteLimits) -> Self {
        self.limits = limits;
        self
    }
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Short, stable reason (a metrics label).
    pub reason: String,
    /// Alert to send on TLS connections.
    pub alert: Option<TlsAlert>,
}

/// Answer of the `admit` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmitDecision {
    /// No opinion.
    Pass,
    /// Admit and stop asking.
    Allow,
    /// Refuse with a reason.
    Deny(String),
}

/// Answer of the `route` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    /// No opinion.
    Pass,
    /// Send it here.
    Forward(Forward),
    /// Refuse it.
    Reject(Reject),
}

impl RouteDecision {
    /// A reject with this reason and alert.
    pub fn reject(reason: impl Into<String>, alert: Option<TlsAlert>) -> Self {
        RouteDecision::Reject(Reject {
            reason: reason.into(),
            alert,
        })
    }
}

/// The route a connection was given, as `policy` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Routed {
    /// Route name.
    pub route: String,
    /// The target chosen (the first one tried).
    pub target: Target,
    /// TLS mode.
    pub tls_mode: TlsMode,
}

impl Routed {
    /// A routed record.
    pub fn new(route: impl Into<String>, target: Target, tls_mode: TlsMode) -> Self {
        Self {
            route: route.into(),
            target,
            tls_mode,
        }
    }
}

/// SmartProxy's keep-alive treatment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepAliveTreatment {
    /// The plain inactivity timeout.
    Standard,
    /// Inactivity × multiplier, extended lifetime.
    #[default]
    Extended,
    /// No inactivity or lifetime close.
    Immortal,
}

/// Every timer the host enforces on one connection, in milliseconds.
/// `None` means never.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// The treatment these values came from (for logs).
    pub keep_alive_treatment: KeepAliveTreatment,
    /// Close after this long with no bytes either way.
    pub inactivity_timeout: Option<u64>,
    /// Hard cap on age.
    pub max_lifetime: Option<u64>,
    /// Grace after one side closed.
    pub half_open_grace: u64,
    /// Client sent, nothing came back for this long: close.
    pub stuck_timeout: Option<u64>,
    /// OS TCP keep-alive idle time.
    pub tcp_keep_alive: Option<u64>,
    /// TCP_NODELAY.
    pub no_delay: bool,
}

impl Policy {
    /// A policy: standard treatment with this inactivity timeout, no lifetime
    /// cap, 30 s half-open grace, no stuck detection, TCP keep-alive after 10 s.
    pub fn new(inactivity_timeout: Option<u64>) -> Self {
        Self {
            keep_alive_treatment: KeepAliveTreatment::Standard,
            inactivity_timeout,
            max_lifetime: None,
            half_open_grace: 30_000,
            stuck_timeout: None,
            tcp_keep_alive: Some(10_000),
            no_delay: true,
        }
    }
}

/// Answer of the `policy` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDecision {
    /// No opinion: the next plugin, or the host's defaults.
    Pass,
    /// Use this policy.
    Set(Policy),
}

/// What `on-idle` is told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdleStats {
    /// Route name.
    pub route: String,
    /// Milliseconds since accept.
    pub age: u64,
    /// Milliseconds since the last byte either way.
    pub idle: u64,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
}

impl IdleStats {
    /// Idle stats.
    pub fn new(
        route: impl Into<String>,
        age: u64,
        idle: u64,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Self {
        Self {
            route: route.into(),
            age,
            idle,
            bytes_in,
            bytes_out,
        }
    }
}

/// Answer of the `on-idle` hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleDecision {
    /// No opinion (when everyone passes, the host closes).
    Pass,
    /// Close now.
    Close,
    /// Keep it; ask again after this many milliseconds.
    Extend(u64),
}

/// Answer of the `approve-certificate` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateDecision {
    /// No opinion: the next plugin decides (everyone passing is a refusal).
    Pass,
    /// The host may order a certificate for the name; stop asking.
    Approve,
    /// Do not order one, with a short, stable reason (logged); stop asking.
    Refuse(String),
}

impl CertificateDecision {
    /// A refusal with this reason.
    pub fn refuse(reason: impl Into<String>) -> Self {
        CertificateDecision::Refuse(reason.into())
    }
}

pub use crate::http::*;

/// Log levels for [`crate::host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// Why a key-value operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvError {
    /// The key is longer than this many bytes.
    KeyTooLong(u32),
    /// The value is longer than this many bytes.
    ValueTooLong(u32),
    /// `increment` on a value that is not an 8-byte little-endian i64.
    NotACounter,
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::KeyTooLong(max) => write!(f, "key longer than {max} bytes"),
            KvError::ValueTooLong(max) => write!(f, "value longer than {max} bytes"),
            KvError::NotACounter => f.write_str("value is not an i64 counter"),
        }
    }
}

impl std::error::Error for KvError {}
