//! Conversions between the SDK's types and WIT-generated bindings.
//!
//! wit-bindgen (guest side) and wasmtime's `bindgen!` (host side) generate
//! types with the same names and shapes from `wit/plugin.wit`, so one macro
//! serves both: `__wit_conversions!(path::to::generated::types)` expands to a
//! module `wit_conv` of `*_to_wit` / `*_from_wit` functions. Conversions
//! never panic: every WIT value maps to an SDK value.
//!
//! `__wit_conversions!` covers what 0.1, 0.2 and 0.3 share (the host applies
//! it to every package's bindings); `__wit_conversions_v02!` adds the types
//! 0.2 added and 0.3 kept (plugin info with its interest, the HTTP hooks,
//! `approve-certificate`) as `wit_http`; `__wit_request_head_v02!` and
//! `__wit_request_head_v03!` the request head of each as `wit_head`.

#[doc(hidden)]
#[macro_export]
macro_rules! __wit_conversions {
    ($($wit:tt)*) => {
        #[allow(dead_code, unreachable_pub)]
        pub(crate) mod wit_conv {
            use $($wit)* as wit;
            use $crate::types as sdk;
            use ::std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

            pub fn ip_to_wit(ip: IpAddr) -> wit::IpAddress {
                match $crate::types::canonical_ip(ip) {
                    IpAddr::V4(v4) => {
                        let [a, b, c, d] = v4.octets();
                        wit::IpAddress::V4((a, b, c, d))
                    }
                    IpAddr::V6(v6) => {
                        let s = v6.segments();
                        wit::IpAddress::V6((s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
                    }
                }
            }

            pub fn ip_from_wit(ip: wit::IpAddress) -> IpAddr {
                match ip {
                    wit::IpAddress::V4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
                    wit::IpAddress::V6((a, b, c, d, e, f, g, h)) => {
                        $crate::types::canonical_ip(IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)))
                    }
                }
            }

            pub fn addr_to_wit(a: SocketAddr) -> wit::SocketAddress {
                wit::SocketAddress { ip: ip_to_wit(a.ip()), port: a.port() }
            }

            pub fn addr_from_wit(a: wit::SocketAddress) -> SocketAddr {
                SocketAddr::new(ip_from_wit(a.ip), a.port)
            }

            pub fn peer_to_wit(p: &sdk::Peer) -> wit::Peer {
                wit::Peer {
                    client: addr_to_wit(p.client),
                    listener_port: p.listener_port,
                    via_proxy_protocol: p.via_proxy_protocol,
                }
            }

            pub fn peer_from_wit(p: wit::Peer) -> sdk::Peer {
                sdk::Peer::new(addr_from_wit(p.client), p.listener_port)
                    .via_proxy_protocol(p.via_proxy_protocol)
            }

            pub fn tls_version_to_wit(v: sdk::TlsVersion) -> wit::TlsVersion {
                match v {
                    sdk::TlsVersion::Ssl3 => wit::TlsVersion::Ssl3,
                    sdk::TlsVersion::Tls10 => wit::TlsVersion::Tls10,
                    sdk::TlsVersion::Tls11 => wit::TlsVersion::Tls11,
                    sdk::TlsVersion::Tls12 => wit::TlsVersion::Tls12,
                    sdk::TlsVersion::Tls13 => wit::TlsVersion::Tls13,
                }
            }

            pub fn tls_version_from_wit(v: wit::TlsVersion) -> sdk::TlsVersion {
                match v {
                    wit::TlsVersion::Ssl3 => sdk::TlsVersion::Ssl3,
                    wit::TlsVersion::Tls10 => sdk::TlsVersion::Tls10,
                    wit::TlsVersion::Tls11 => sdk::TlsVersion::Tls11,
                    wit::TlsVersion::Tls12 => sdk::TlsVersion::Tls12,
                    wit::TlsVersion::Tls13 => sdk::TlsVersion::Tls13,
                }
            }

            pub fn hello_to_wit(h: &sdk::ClientHello) -> wit::ClientHello {
                wit::ClientHello {
                    sni: h.sni.clone(),
                    alpn: h.alpn.clone(),
                    versions: h.versions.iter().copied().map(tls_version_to_wit).collect(),
                    resumption_without_sni: h.resumption_without_sni,
                }
            }

            pub fn hello_from_wit(h: wit::ClientHello) -> sdk::ClientHello {
                let mut out = sdk::ClientHello::without_sni()
                    .alpn(h.alpn)
                    .resumption_without_sni(h.resumption_without_sni);
                out.sni = h.sni;
                out.versions = h.versions.into_iter().map(tls_version_from_wit).collect();
                out
            }

            pub fn connection_to_wit(c: &sdk::Connection) -> wit::Connection {
                wit::Connection {
                    id: c.id,
                    peer: peer_to_wit(&c.peer),
                    tls: c.tls.as_ref().map(hello_to_wit),
                }
            }

            pub fn connection_from_wit(c: wit::Connection) -> sdk::Connection {
                let peer = peer_from_wit(c.peer);
                match c.tls {
                    Some(h) => sdk::Connection::tls(c.id, peer, hello_from_wit(h)),
                    None => sdk::Connection::plain(c.id, peer),
                }
            }

            pub fn tls_mode_to_wit(m: sdk::TlsMode) -> wit::TlsMode {
                match m {
                    sdk::TlsMode::Passthrough => wit::TlsMode::Passthrough,
                    sdk::TlsMode::Terminate => wit::TlsMode::Terminate,
                    sdk::TlsMode::TerminateAndReencrypt => wit::TlsMode::TerminateAndReencrypt,
                }
            }

            pub fn tls_mode_from_wit(m: wit::TlsMode) -> sdk::TlsMode {
                match m {
                    wit::TlsMode::Passthrough => sdk::TlsMode::Passthrough,
                    wit::TlsMode::Terminate => sdk::TlsMode::Terminate,
                    wit::TlsMode::TerminateAndReencrypt => sdk::TlsMode::TerminateAndReencrypt,
                }
            }

            pub fn target_to_wit(t: &sdk::Target) -> wit::Target {
                wit::Target { host: t.host.clone(), port: t.port }
            }

            pub fn target_from_wit(t: wit::Target) -> sdk::Target {
                sdk::Target { host: t.host, port: t.port }
            }

            fn alert_to_wit(a: sdk::TlsAlert) -> wit::TlsAlert {
                match a {
                    sdk::TlsAlert::UnrecognizedName => wit::TlsAlert::UnrecognizedName,
                    sdk::TlsAlert::HandshakeFailure => wit::TlsAlert::HandshakeFailure,
                    sdk::TlsAlert::AccessDenied => wit::TlsAlert::AccessDenied,
                    sdk::TlsAlert::InternalError => wit::TlsAlert::InternalError,
                }
            }

            fn alert_from_wit(a: wit::TlsAlert) -> sdk::TlsAlert {
                match a {
                    wit::TlsAlert::UnrecognizedName => sdk::TlsAlert::UnrecognizedName,
                    wit::TlsAlert::HandshakeFailure => sdk::TlsAlert::HandshakeFailure,
                    wit::TlsAlert::AccessDenied => sdk::TlsAlert::AccessDenied,
                    wit::TlsAlert::InternalError => sdk::TlsAlert::InternalError,
                }
            }

            pub fn admit_to_wit(d: sdk::AdmitDecision) -> wit::AdmitDecision {
                match d {
                    sdk::AdmitDecision::Pass => wit::AdmitDecision::Pass,
                    sdk::AdmitDecision::Allow => wit::AdmitDecision::Allow,
                    sdk::AdmitDecision::Deny(r) => wit::AdmitDecision::Deny(r),
                }
            }

            pub fn admit_from_wit(d: wit::AdmitDecision) -> sdk::AdmitDecision {
                match d {
                    wit::AdmitDecision::Pass => sdk::AdmitDecision::Pass,
                    wit::AdmitDecision::Allow => sdk::AdmitDecision::Allow,
                    wit::AdmitDecision::Deny(r) => sdk::AdmitDecision::Deny(r),
                }
            }

            pub fn route_to_wit(d: sdk::RouteDecision) -> wit::RouteDecision {
                match d {
                    sdk::RouteDecision::Pass => wit::RouteDecision::Pass,
                    sdk::RouteDecision::Forward(f) => wit::RouteDecision::Forward(wit::Forward {
                        route: f.route,
                        targets: f.targets.iter().map(target_to_wit).collect(),
                        tls_mode: tls_mode_to_wit(f.tls_mode),
                        proxy_protocol: match f.proxy_protocol {
                            sdk::ProxyProtocol::None => wit::ProxyProtocol::None,
                            sdk::ProxyProtocol::V1 => wit::ProxyProtocol::V1,
                            sdk::ProxyProtocol::V2 => wit::ProxyProtocol::V2,
                        },
                        limits: wit::RouteLimits {
                            max_connections: f.limits.max_connections,
                            max_connections_per_ip: f.limits.max_connections_per_ip,
                        },
                    }),
                    sdk::RouteDecision::Reject(r) => wit::RouteDecision::Reject(wit::Reject {
                        reason: r.reason,
                        alert: r.alert.map(alert_to_wit),
                    }),
                }
            }

            pub fn route_from_wit(d: wit::RouteDecision) -> sdk::RouteDecision {
                match d {
                    wit::RouteDecision::Pass => sdk::RouteDecision::Pass,
                    wit::RouteDecision::Forward(f) => sdk::RouteDecision::Forward(
                        sdk::Forward::new(f.route, f.targets.into_iter().map(target_from_wit).collect())
                            .tls_mode(tls_mode_from_wit(f.tls_mode))
                            .proxy_protocol(match f.proxy_protocol {
                                wit::ProxyProtocol::None => sdk::ProxyProtocol::None,
                                wit::ProxyProtocol::V1 => sdk::ProxyProtocol::V1,
                                wit::ProxyProtocol::V2 => sdk::ProxyProtocol::V2,
                            })
                            .limits(sdk::RouteLimits::new(
                                f.limits.max_connections,
                                f.limits.max_connections_per_ip,
                            )),
                    ),
                    wit::RouteDecision::Reject(r) => sdk::RouteDecision::Reject(sdk::Reject {
                        reason: r.reason,
                        alert: r.alert.map(alert_from_wit),
                    }),
                }
            }

            pub fn routed_to_wit(r: &sdk::Routed) -> wit::Routed {
                wit::Routed {
                    route: r.route.clone(),
                    target: target_to_wit(&r.target),
                    tls_mode: tls_mode_to_wit(r.tls_mode),
                }
            }

            pub fn routed_from_wit(r: wit::Routed) -> sdk::Routed {
                sdk::Routed::new(r.route, target_from_wit(r.target), tls_mode_from_wit(r.tls_mode))
            }

            pub fn policy_to_wit(p: &sdk::Policy) -> wit::ConnectionPolicy {
                wit::ConnectionPolicy {
                    keep_alive_treatment: match p.keep_alive_treatment {
                        sdk::KeepAliveTreatment::Standard => wit::KeepAliveTreatment::Standard,
                        sdk::KeepAliveTreatment::Extended => wit::KeepAliveTreatment::Extended,
                        sdk::KeepAliveTreatment::Immortal => wit::KeepAliveTreatment::Immortal,
                    },
                    inactivity_timeout: p.inactivity_timeout,
                    max_lifetime: p.max_lifetime,
                    half_open_grace: p.half_open_grace,
                    stuck_timeout: p.stuck_timeout,
                    tcp_keep_alive: p.tcp_keep_alive,
                    no_delay: p.no_delay,
                }
            }

            pub fn policy_from_wit(p: wit::ConnectionPolicy) -> sdk::Policy {
                let mut out = sdk::Policy::new(p.inactivity_timeout);
                out.keep_alive_treatment = match p.keep_alive_treatment {
                    wit::KeepAliveTreatment::Standard => sdk::KeepAliveTreatment::Standard,
                    wit::KeepAliveTreatment::Extended => sdk::KeepAliveTreatment::Extended,
                    wit::KeepAliveTreatment::Immortal => sdk::KeepAliveTreatment::Immortal,
                };
                out.max_lifetime = p.max_lifetime;
                out.half_open_grace = p.half_open_grace;
                out.stuck_timeout = p.stuck_timeout;
                out.tcp_keep_alive = p.tcp_keep_alive;
                out.no_delay = p.no_delay;
                out
            }

            pub fn policy_decision_to_wit(d: sdk::PolicyDecision) -> wit::PolicyDecision {
                match d {
                    sdk::PolicyDecision::Pass => wit::PolicyDecision::Pass,
                    sdk::PolicyDecision::Set(p) => wit::PolicyDecision::Set(policy_to_wit(&p)),
                }
            }

            pub fn policy_decision_from_wit(d: wit::PolicyDecision) -> sdk::PolicyDecision {
                match d {
                    wit::PolicyDecision::Pass => sdk::PolicyDecision::Pass,
                    wit::PolicyDecision::Set(p) => sdk::PolicyDecision::Set(policy_from_wit(p)),
                }
            }

            pub fn idle_stats_to_wit(s: &sdk::IdleStats) -> wit::IdleStats {
                wit::IdleStats {
                    route: s.route.clone(),
                    age: s.age,
                    idle: s.idle,
                    bytes_in: s.bytes_in,
                    bytes_out: s.bytes_out,
                }
            }

            pub fn idle_stats_from_wit(s: wit::IdleStats) -> sdk::IdleStats {
                sdk::IdleStats::new(s.route, s.age, s.idle, s.bytes_in, s.bytes_out)
            }

            pub fn idle_to_wit(d: sdk::IdleDecision) -> wit::IdleDecision {
                match d {
                    sdk::IdleDecision::Pass => wit::IdleDecision::Pass,
                    sdk::IdleDecision::Close => wit::IdleDecision::Close,
                    sdk::IdleDecision::Extend(ms) => wit::IdleDecision::Extend(ms),
                }
            }

            pub fn idle_from_wit(d: wit::IdleDecision) -> sdk::IdleDecision {
                match d {
                    wit::IdleDecision::Pass => sdk::IdleDecision::Pass,
                    wit::IdleDecision::Close => sdk::IdleDecision::Close,
                    wit::IdleDecision::Extend(ms) => sdk::IdleDecision::Extend(ms),
                }
            }

            pub fn log_level_to_wit(l: sdk::LogLevel) -> wit::LogLevel {
                match l {
                    sdk::LogLevel::Trace => wit::LogLevel::Trace,
                    sdk::LogLevel::Debug => wit::LogLevel::Debug,
                    sdk::LogLevel::Info => wit::LogLevel::Info,
                    sdk::LogLevel::Warn => wit::LogLevel::Warn,
                    sdk::LogLevel::Error => wit::LogLevel::Error,
                }
            }

            pub fn log_level_from_wit(l: wit::LogLevel) -> sdk::LogLevel {
                match l {
                    wit::LogLevel::Trace => sdk::LogLevel::Trace,
                    wit::LogLevel::Debug => sdk::LogLevel::Debug,
                    wit::LogLevel::Info => sdk::LogLevel::Info,
                    wit::LogLevel::Warn => sdk::LogLevel::Warn,
                    wit::LogLevel::Error => sdk::LogLevel::Error,
                }
            }

            pub fn kv_error_to_wit(e: sdk::KvError) -> wit::KvError {
                match e {
                    sdk::KvError::KeyTooLong(n) => wit::KvError::KeyTooLong(n),
                    sdk::KvError::ValueTooLong(n) => wit::KvError::ValueTooLong(n),
                    sdk::KvError::NotACounter => wit::KvError::NotACounter,
                }
            }

            pub fn kv_error_from_wit(e: wit::KvError) -> sdk::KvError {
                match e {
                    wit::KvError::KeyTooLong(n) => sdk::KvError::KeyTooLong(n),
                    wit::KvError::ValueTooLong(n) => sdk::KvError::ValueTooLong(n),
                    wit::KvError::NotACounter => sdk::KvError::NotACounter,
                }
            }
        }
    };
}
