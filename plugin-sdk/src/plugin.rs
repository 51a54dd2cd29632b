//! The [`Plugin`] trait: one method per hook, each with a "no opinion" default.

use std::net::SocketAddr;

use crate::http::Interest;
use crate::types::{
    AdmitDecision, CertificateDecision, Connection, IdleDecision, IdleStats, Peer, Policy,
    PolicyDecision, RequestDecision, RequestHead, ResponseDecision, ResponseHead, RouteDecision,
    Routed,
};

/// Which hooks a plugin implements. The host only calls these, so declaring
/// fewer hooks makes every connection cheaper; [`Hooks::ALL`] is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hooks(u8);

impl Hooks {
    /// No hooks.
    pub const NONE: Hooks = Hooks(0);
    /// `admit`.
    pub const ADMIT: Hooks = Hooks(1);
    /// `route`.
    pub const ROUTE: Hooks = Hooks(1 << 1);
    /// `policy`.
    pub const POLICY: Hooks = Hooks(1 << 2);
    /// `on-idle`.
    pub const ON_IDLE: Hooks = Hooks(1 << 3);
    /// `request`.
    pub const REQUEST: Hooks = Hooks(1 << 4);
    /// `response`.
    pub const RESPONSE: Hooks = Hooks(1 << 5);
    /// `approve-certificate`.
    pub const APPROVE_CERTIFICATE: Hooks = Hooks(1 << 6);
    /// Every hook.
    pub const ALL: Hooks = Hooks(0b111_1111);

    /// Whether every hook in `other` is in `self`.
    pub const fn contains(self, other: Hooks) -> bool {
        self.0 & other.0 == other.0
    }

    /// The raw bits (bit 0 = admit … bit 5 = response, bit 6 =
    /// approve-certificate).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// From raw bits; unknown bits are dropped.
    pub const fn from_bits_truncate(bits: u8) -> Hooks {
        Hooks(bits & Self::ALL.0)
    }
}

impl std::ops::BitOr for Hooks {
    type Output = Hooks;
    fn bitor(self, rhs: Hooks) -> Hooks {
        Hooks(self.0 | rhs.0)
    }
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub from: u16,
    /// Last port (inclusive).
    pub to: u16,
}

impl PortRange {
    /// One port.
    pub fn single(port: u16) -> Self {
        Self {
            from: port,
            to: port,
        }
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.from <= port && port <= self.to
    }
}

/// What a plugin tells the host about itself from `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PluginInfo {
    /// Name (conventionally the crate name).
    pub name: String,
    /// Version (conventionally the crate version).
    pub version: String,
    /// Hooks the host should call.
    pub hooks: Hooks,
    /// Ports the plugin wants the host to listen on.
    pub listen: Vec<PortRange>,
    /// Of those, ports where the client speaks TLS first; the host peeks
    /// the ClientHello there before `route`, and nowhere else.
    pub tls_ports: Vec<PortRange>,
    /// Of those, ports carrying plaintext HTTP routes: non-TLS clients there
    /// are served as HTTP, every request going to `request`.
    pub http_ports: Vec<PortRange>,
    /// Header slots and upstreams for the HTTP hooks.
    pub interest: Interest,
}

impl PluginInfo {
    /// Info declaring every hook and no ports.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            hooks: Hooks::ALL,
            listen: Vec::new(),
            tls_ports: Vec::new(),
            http_ports: Vec::new(),
            interest: Interest::default(),
        }
    }

    /// Declares exactly these hooks.
    pub fn hooks(mut self, hooks: Hooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// Declares plain ports to listen on (`route` runs right after accept).
    pub fn listen(mut self, ports: impl IntoIterator<Item = PortRange>) -> Self {
        self.listen.extend(ports);
        self
    }

    /// Declares TLS ports to listen on (`route` runs after the ClientHello).
    pub fn listen_tls(mut self, ports: impl IntoIterator<Item = PortRange>) -> Self {
        let ports: Vec<PortRange> = ports.into_iter().collect();
        self.listen.extend(ports.iter().copied());
        self.tls_ports.extend(ports);
        self
    }

    /// Declares plaintext HTTP ports to listen on (TLS clients there still
    /// go the TLS way, so these are TLS ports too).
    pub fn listen_http(mut self, ports: impl IntoIterator<Item = PortRange>) -> Self {
        let ports: Vec<PortRange> = ports.into_iter().collect();
        self.listen.extend(ports.iter().copied());
        self.tls_ports.extend(ports.iter().copied());
        self.http_ports.extend(ports);
        self
    }

    /// Declares what the HTTP hooks need.
    pub fn interest(mut self, interest: Interest) -> Self {
        self.interest = interest;
        self
    }
}

/// A configuration error from [`Plugin::init`]; the host logs it with the
/// plugin's name and refuses to load that plugin version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitError(pub String);

impl InitError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        InitError(message.into())
    }
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InitError {}

impl From<String> for InitError {
    fn from(s: String) -> Self {
        InitError(s)
    }
}

impl From<&str> for InitError {
    fn from(s: &str) -> Self {
        InitError(s.to_owned())
    }
}

/// A Turnout plugin.
///
/// The host calls the hooks in this order for every connection:
///
/// ```text
/// accept ─► admit ─► (peek ClientHello) ─► route ─► policy ─► connect, splice
///                                                    │
///                                 inactivity timer ─►┴─► on_idle (close / extend)
/// HTTP (terminated TLS routes, plaintext HTTP ports):
///   every request ─► request ─► upstream ─► response (when asked for)
/// TLS handshake for a name without a certificate, on-demand ACME enabled:
///   approve_certificate (approve: the host orders one)
/// ```
///
/// Every hook has a default that answers "no opinion", so a plugin only
/// writes the ones it cares about. Instances are pooled and reused across
/// connections and recycled at any time, so a hook must not rely on state
/// kept in `self` between calls; state shared across connections belongs in
/// the host key-value store ([`crate::host::kv_increment`] and friends).
pub trait Plugin: Sized + 'static {
    /// Builds an instance from the plugin's configuration (JSON text; `{}`
    /// when the operator gave none). Called once per instance.
    fn init(config: &str) -> Result<Self, InitError>;

    /// Name, version, hooks implemented and ports wanted.
    fn info(&self) -> PluginInfo;

    /// Right after accept.
    fn admit(&self, _peer: &Peer) -> AdmitDecision {
        AdmitDecision::Pass
    }

    /// After the peek.
    fn route(&self, _conn: &Connection) -> RouteDecision {
        RouteDecision::Pass
    }

    /// Once, after routing; `defaults` is what the host would apply.
    fn policy(&self, _conn: &Connection, _route: &Routed, _defaults: &Policy) -> PolicyDecision {
        PolicyDecision::Pass
    }

    /// When the inactivity timer fires.
    fn on_idle(&self, _conn: &Connection, _stats: &IdleStats) -> IdleDecision {
        IdleDecision::Pass
    }

    /// Per HTTP request (terminated TLS routes, plaintext HTTP ports).
    fn request(&self, _head: &RequestHead) -> RequestDecision {
        RequestDecision::Pass
    }

    /// Per upstream response to a request forwarded with a `context`.
    fn response(&self, _head: &ResponseHead) -> ResponseDecision {
        ResponseDecision::Pass
    }

    /// Whether the host may order a certificate on demand (ACME) for
    /// `name` — lower-case, without a trailing dot — which a TLS client
    /// (`client`) asked for and the host has no certificate for. The first
    /// answer in the chain that is not `Pass` decides; everyone passing
    /// refuses.
    fn approve_certificate(&self, _name: &str, _client: SocketAddr) -> CertificateDecision {
        CertificateDecision::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approve_certificate_is_bit_6_and_part_of_all() {
        assert_eq!(Hooks::APPROVE_CERTIFICATE.bits(), 1 << 6);
        assert!(Hooks::ALL.contains(Hooks::APPROVE_CERTIFICATE));
        assert!(Hooks::ALL.contains(Hooks::RESPONSE | Hooks::ADMIT));
        assert!(!(Hooks::ROUTE | Hooks::REQUEST).contains(Hooks::APPROVE_CERTIFICATE));
        assert_eq!(Hooks::from_bits_truncate(u8::MAX), Hooks::ALL);
        assert_eq!(
            PluginInfo::new("p", "1").hooks,
            Hooks::ALL,
            "the default declares every hook, this one included"
        );
    }
}
