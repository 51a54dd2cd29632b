//! Conversions between the SDK's types and WIT-generated bindings.
//!
//! wit-bindgen (guest side) and wasmtime's `bindgen!` (host side) generate
//! types with the same names and shapes from `wit/plugin.wit`, so one macro
//! serves both: `__wit_conversions!(path::to::generated::types)` expands to a
//! module `wit_conv` of `*_to_wit` / `*_from_wit` functions. Conversions
//! never panic: every WIT value maps to an SDK value.
//!
//! `__wit_conversions!` covers what 0.1 and 0.2 share (the host applies it
//! to both packages' bindings); `__wit_conversions_v02!` adds the 0.2-only
//! types (plugin info with its interest, the HTTP hooks) as `wit_http`.

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

#[doc(hidden)]
#[macro_export]
macro_rules! __wit_conversions_v02 {
    ($($wit:tt)*) => {
        #[allow(dead_code, unreachable_pub)]
        pub(crate) mod wit_http {
            use $($wit)* as wit;
            use $crate::types as sdk;
            use $crate as plg;
            use super::wit_conv::{addr_from_wit, addr_to_wit, target_from_wit, target_to_wit};

            pub fn method_to_wit(m: &sdk::Method) -> wit::Method {
                match m {
                    sdk::Method::Get => wit::Method::Get,
                    sdk::Method::Head => wit::Method::Head,
                    sdk::Method::Post => wit::Method::Post,
                    sdk::Method::Put => wit::Method::Put,
                    sdk::Method::Delete => wit::Method::Delete,
                    sdk::Method::Connect => wit::Method::Connect,
                    sdk::Method::Options => wit::Method::Options,
                    sdk::Method::Trace => wit::Method::Trace,
                    sdk::Method::Patch => wit::Method::Patch,
                    sdk::Method::Other(s) => wit::Method::Other(s.clone()),
                }
            }

            pub fn method_from_wit(m: wit::Method) -> sdk::Method {
                match m {
                    wit::Method::Get => sdk::Method::Get,
                    wit::Method::Head => sdk::Method::Head,
                    wit::Method::Post => sdk::Method::Post,
                    wit::Method::Put => sdk::Method::Put,
                    wit::Method::Delete => sdk::Method::Delete,
                    wit::Method::Connect => sdk::Method::Connect,
                    wit::Method::Options => sdk::Method::Options,
                    wit::Method::Trace => sdk::Method::Trace,
                    wit::Method::Patch => sdk::Method::Patch,
                    wit::Method::Other(s) => sdk::Method::Other(s),
                }
            }

            pub fn request_head_to_wit(r: &sdk::RequestHead) -> wit::RequestHead {
                wit::RequestHead {
                    connection_id: r.connection_id,
                    client: addr_to_wit(r.client),
                    listener_port: r.listener_port,
                    sni: r.sni.clone(),
                    method: method_to_wit(&r.method),
                    scheme: match r.scheme {
                        sdk::Scheme::Http => wit::Scheme::Http,
                        sdk::Scheme::Https => wit::Scheme::Https,
                    },
                    authority: r.authority.clone(),
                    path: r.path.clone(),
                    headers: r.headers.clone(),
                }
            }

            pub fn request_head_from_wit(r: wit::RequestHead) -> sdk::RequestHead {
                let mut out = sdk::RequestHead::new(
                    addr_from_wit(r.client),
                    r.listener_port,
                    method_from_wit(r.method),
                    r.authority,
                    r.path,
                );
                out.connection_id = r.connection_id;
                out.sni = r.sni;
                out.scheme = match r.scheme {
                    wit::Scheme::Http => sdk::Scheme::Http,
                    wit::Scheme::Https => sdk::Scheme::Https,
                };
                out.headers = r.headers;
                out
            }

            fn field_to_wit(f: sdk::Field) -> wit::Field {
                wit::Field { name: f.name, value: f.value }
            }

            fn field_from_wit(f: wit::Field) -> sdk::Field {
                sdk::Field { name: f.name, value: f.value }
            }

            pub fn edits_to_wit(edits: Vec<sdk::HeaderEdit>) -> Vec<wit::HeaderEdit> {
                edits
                    .into_iter()
                    .map(|e| match e {
                        sdk::HeaderEdit::Set(f) => wit::HeaderEdit::Set(field_to_wit(f)),
                        sdk::HeaderEdit::Append(f) => wit::HeaderEdit::Append(field_to_wit(f)),
                        sdk::HeaderEdit::Remove(n) => wit::HeaderEdit::Remove(n),
                    })
                    .collect()
            }

            pub fn edits_from_wit(edits: Vec<wit::HeaderEdit>) -> Vec<sdk::HeaderEdit> {
                edits
                    .into_iter()
                    .map(|e| match e {
                        wit::HeaderEdit::Set(f) => sdk::HeaderEdit::Set(field_from_wit(f)),
                        wit::HeaderEdit::Append(f) => sdk::HeaderEdit::Append(field_from_wit(f)),
                        wit::HeaderEdit::Remove(n) => sdk::HeaderEdit::Remove(n),
                    })
                    .collect()
            }

            pub fn request_to_wit(d: sdk::RequestDecision) -> wit::RequestDecision {
                match d {
                    sdk::RequestDecision::Pass => wit::RequestDecision::Pass,
                    sdk::RequestDecision::Forward(f) => wit::RequestDecision::Forward(wit::HttpForward {
                        upstream: f.upstream,
                        path: f.path,
                        request_edits: edits_to_wit(f.request_edits),
                        response_edits: edits_to_wit(f.response_edits),
                        context: f.context,
                    }),
                    sdk::RequestDecision::Respond(r) => wit::RequestDecision::Respond(wit::Response {
                        status: r.status,
                        headers: r.headers.into_iter().map(field_to_wit).collect(),
                        body: r.body,
                    }),
                    sdk::RequestDecision::Redirect(r) => wit::RequestDecision::Redirect(wit::Redirect {
                        status: r.status,
                        location: r.location,
                    }),
                }
            }

            pub fn request_from_wit(d: wit::RequestDecision) -> sdk::RequestDecision {
                match d {
                    wit::RequestDecision::Pass => sdk::RequestDecision::Pass,
                    wit::RequestDecision::Forward(f) => sdk::RequestDecision::Forward(sdk::HttpForward {
                        upstream: f.upstream,
                        path: f.path,
                        request_edits: edits_from_wit(f.request_edits),
                        response_edits: edits_from_wit(f.response_edits),
                        context: f.context,
                    }),
                    wit::RequestDecision::Respond(r) => sdk::RequestDecision::Respond(sdk::Response {
                        status: r.status,
                        headers: r.headers.into_iter().map(field_from_wit).collect(),
                        body: r.body,
                    }),
                    wit::RequestDecision::Redirect(r) => sdk::RequestDecision::Redirect(sdk::Redirect {
                        status: r.status,
                        location: r.location,
                    }),
                }
            }

            pub fn response_head_to_wit(r: &sdk::ResponseHead) -> wit::ResponseHead {
                wit::ResponseHead {
                    connection_id: r.connection_id,
                    context: r.context,
                    status: r.status,
                    headers: r.headers.clone(),
                }
            }

            pub fn response_head_from_wit(r: wit::ResponseHead) -> sdk::ResponseHead {
                let mut out = sdk::ResponseHead::new(r.context, r.status);
                out.connection_id = r.connection_id;
                out.headers = r.headers;
                out
            }

            pub fn response_to_wit(d: sdk::ResponseDecision) -> wit::ResponseDecision {
                match d {
                    sdk::ResponseDecision::Pass => wit::ResponseDecision::Pass,
                    sdk::ResponseDecision::Edit(e) => wit::ResponseDecision::Edit(edits_to_wit(e)),
                }
            }

            pub fn response_from_wit(d: wit::ResponseDecision) -> sdk::ResponseDecision {
                match d {
                    wit::ResponseDecision::Pass => sdk::ResponseDecision::Pass,
                    wit::ResponseDecision::Edit(e) => sdk::ResponseDecision::Edit(edits_from_wit(e)),
                }
            }

            const HOOKS: [(plg::Hooks, wit::HookSet); 6] = [
                (plg::Hooks::ADMIT, wit::HookSet::ADMIT),
                (plg::Hooks::ROUTE, wit::HookSet::ROUTE),
                (plg::Hooks::POLICY, wit::HookSet::POLICY),
                (plg::Hooks::ON_IDLE, wit::HookSet::ON_IDLE),
                (plg::Hooks::REQUEST, wit::HookSet::REQUEST),
                (plg::Hooks::RESPONSE, wit::HookSet::RESPONSE),
            ];

            fn ranges_to_wit(r: Vec<plg::PortRange>) -> Vec<wit::PortRange> {
                r.into_iter().map(|r| wit::PortRange { first: r.from, last: r.to }).collect()
            }

            fn ranges_from_wit(r: Vec<wit::PortRange>) -> Vec<plg::PortRange> {
                r.into_iter().map(|r| plg::PortRange { from: r.first, to: r.last }).collect()
            }

            fn protocol_to_wit(p: sdk::BackendProtocol) -> wit::BackendProtocol {
                match p {
                    sdk::BackendProtocol::Auto => wit::BackendProtocol::Auto,
                    sdk::BackendProtocol::Http1 => wit::BackendProtocol::Http1,
                    sdk::BackendProtocol::Http2 => wit::BackendProtocol::Http2,
                }
            }

            fn protocol_from_wit(p: wit::BackendProtocol) -> sdk::BackendProtocol {
                match p {
                    wit::BackendProtocol::Auto => sdk::BackendProtocol::Auto,
                    wit::BackendProtocol::Http1 => sdk::BackendProtocol::Http1,
                    wit::BackendProtocol::Http2 => sdk::BackendProtocol::Http2,
                }
            }

            pub fn info_to_wit(i: plg::PluginInfo) -> wit::PluginInfo {
                let mut hooks = wit::HookSet::empty();
                for (ours, theirs) in HOOKS {
                    if i.hooks.contains(ours) {
                        hooks |= theirs;
                    }
                }
                let interest = i.interest;
                wit::PluginInfo {
                    name: i.name,
                    version: i.version,
                    hooks,
                    listen: ranges_to_wit(i.listen),
                    tls_ports: ranges_to_wit(i.tls_ports),
                    http_ports: ranges_to_wit(i.http_ports),
                    interest: wit::Interest {
                        request_headers: interest.request_headers,
                        response_headers: interest.response_headers,
                        upstreams: interest
                            .upstreams
                            .into_iter()
                            .map(|u| wit::Upstream {
                                route: u.route,
                                // Moved, not copied: a plugin may declare
                                // tens of thousands.
                                targets: u
                                    .targets
                                    .into_iter()
                                    .map(|t| wit::Target { host: t.host, port: t.port })
                                    .collect(),
                                tls: u.tls,
                                protocol: protocol_to_wit(u.protocol),
                                max_requests: u.max_requests,
                                max_body: u.max_body,
                            })
                            .collect(),
                    },
                }
            }

            pub fn info_from_wit(i: wit::PluginInfo) -> plg::PluginInfo {
                let mut hooks = plg::Hooks::NONE;
                for (ours, theirs) in HOOKS {
                    if i.hooks.contains(theirs) {
                        hooks = hooks | ours;
                    }
                }
                let mut info = plg::PluginInfo::new(i.name, i.version).hooks(hooks);
                info.listen = ranges_from_wit(i.listen);
                info.tls_ports = ranges_from_wit(i.tls_ports);
                info.http_ports = ranges_from_wit(i.http_ports);
                info.interest = sdk::Interest {
                    request_headers: i.interest.request_headers,
                    response_headers: i.interest.response_headers,
                    upstreams: i
                        .interest
                        .upstreams
                        .into_iter()
                        .map(|u| sdk::Upstream {
                            route: u.route,
                            targets: u.targets.into_iter().map(target_from_wit).collect(),
                            tls: u.tls,
                            protocol: protocol_from_wit(u.protocol),
                            max_requests: u.max_requests,
                            max_body: u.max_body,
                        })
                        .collect(),
                };
                info
            }
        }
    };
}
