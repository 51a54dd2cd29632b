//! Conversions for the types 0.2 added (plugin info with its interest, the
//! HTTP hooks, `approve-certificate`) between the SDK and WIT-generated
//! bindings: the companion of `convert.rs`, expanded as `wit_http` beside
//! its `wit_conv`. The request head, the one type 0.3 changed, has a macro
//! per version (`wit_head`).

#[doc(hidden)]
#[macro_export]
macro_rules! __wit_conversions_v02 {
    ($($wit:tt)*) => {
        #[allow(dead_code, unreachable_pub)]
        pub(crate) mod wit_http {
            use $($wit)* as wit;
            use $crate::types as sdk;
            use $crate as plg;
            use super::wit_conv::target_from_wit;

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

            pub fn scheme_to_wit(s: sdk::Scheme) -> wit::Scheme {
                match s {
                    sdk::Scheme::Http => wit::Scheme::Http,
                    sdk::Scheme::Https => wit::Scheme::Https,
                }
            }

            pub fn scheme_from_wit(s: wit::Scheme) -> sdk::Scheme {
                match s {
                    wit::Scheme::Http => sdk::Scheme::Http,
                    wit::Scheme::Https => sdk::Scheme::Https,
                }
            }

            fn field_to_wit(f: sdk::Field) -> wit::Field {
                wit::Field { name: f.name, value: f.value }
            }

            fn field_from_wit(f: wit::Field) -> sdk::Field {
                sdk::Field { name: f.name, value: f.value }
            }

            pub fn edits_to_wit(edits: Vec<sdk::HeaderEdit>) -> Vec<wit::HeaderEdit> {
                // Most answers edit nothing; in a plugin (measured at
                // `opt-level = "s"`) the empty collect cost ~300 instructions
                // per list.
                if edits.is_empty() {
                    return Vec::new();
                }
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

            pub fn certificate_to_wit(d: sdk::CertificateDecision) -> wit::CertificateDecision {
                match d {
                    sdk::CertificateDecision::Pass => wit::CertificateDecision::Pass,
                    sdk::CertificateDecision::Approve => wit::CertificateDecision::Approve,
                    sdk::CertificateDecision::Refuse(r) => wit::CertificateDecision::Refuse(r),
                }
            }

            pub fn certificate_from_wit(d: wit::CertificateDecision) -> sdk::CertificateDecision {
                match d {
                    wit::CertificateDecision::Pass => sdk::CertificateDecision::Pass,
                    wit::CertificateDecision::Approve => sdk::CertificateDecision::Approve,
                    wit::CertificateDecision::Refuse(r) => sdk::CertificateDecision::Refuse(r),
                }
            }

            const HOOKS: [(plg::Hooks, wit::HookSet); 7] = [
                (plg::Hooks::ADMIT, wit::HookSet::ADMIT),
                (plg::Hooks::ROUTE, wit::HookSet::ROUTE),
                (plg::Hooks::POLICY, wit::HookSet::POLICY),
                (plg::Hooks::ON_IDLE, wit::HookSet::ON_IDLE),
                (plg::Hooks::REQUEST, wit::HookSet::REQUEST),
                (plg::Hooks::RESPONSE, wit::HookSet::RESPONSE),
                (plg::Hooks::APPROVE_CERTIFICATE, wit::HookSet::APPROVE_CERTIFICATE),
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
                                websocket: wit::WebsocketPolicy {
                                    enabled: u.websocket.enabled,
                                    ping_interval: u.websocket.ping_interval,
                                    ping_timeout: u.websocket.ping_timeout,
                                },
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
                            websocket: sdk::WebSocketPolicy {
                                enabled: u.websocket.enabled,
                                ping_interval: u.websocket.ping_interval,
                                ping_timeout: u.websocket.ping_timeout,
                            },
                        })
                        .collect(),
                };
                info
            }
        }
    };
}

/// The 0.2 `request-head` (a record of strings and lists) to and from the
/// SDK's, as `wit_head` beside `wit_http`: the host's side of 0.2 components.
#[doc(hidden)]
#[macro_export]
macro_rules! __wit_request_head_v02 {
    ($($wit:tt)*) => {
        #[allow(dead_code, unreachable_pub)]
        pub(crate) mod wit_head {
            use $($wit)* as wit;
            use $crate::types as sdk;
            use super::wit_http::{method_from_wit, method_to_wit, scheme_from_wit, scheme_to_wit};

            pub fn request_head_to_wit(r: &sdk::RequestHead) -> wit::RequestHead {
                wit::RequestHead {
                    connection_id: r.connection_id,
                    client: super::wit_conv::addr_to_wit(r.client),
                    listener_port: r.listener_port,
                    sni: r.sni.clone(),
                    method: method_to_wit(&r.method),
                    scheme: scheme_to_wit(r.scheme),
                    authority: r.authority.clone(),
                    path: r.path.clone(),
                    headers: r.headers.clone(),
                }
            }

            /// The head as a WIT record for one call, its strings and slots
            /// moved rather than copied: [`request_head_restore`] moves them
            /// back. (Per request, the copies were five allocations.)
            pub fn request_head_lend(r: &mut sdk::RequestHead) -> wit::RequestHead {
                wit::RequestHead {
                    connection_id: r.connection_id,
                    client: super::wit_conv::addr_to_wit(r.client),
                    listener_port: r.listener_port,
                    sni: r.sni.take(),
                    method: method_to_wit(&r.method),
                    scheme: scheme_to_wit(r.scheme),
                    authority: std::mem::take(&mut r.authority),
                    path: std::mem::take(&mut r.path),
                    headers: std::mem::take(&mut r.headers),
                }
            }

            /// Gives back what [`request_head_lend`] moved out of `r`.
            pub fn request_head_restore(r: &mut sdk::RequestHead, lent: wit::RequestHead) {
                r.sni = lent.sni;
                r.authority = lent.authority;
                r.path = lent.path;
                r.headers = lent.headers;
            }

            pub fn request_head_from_wit(r: wit::RequestHead) -> sdk::RequestHead {
                let mut out = sdk::RequestHead::new(
                    super::wit_conv::addr_from_wit(r.client),
                    r.listener_port,
                    method_from_wit(r.method),
                    r.authority,
                    r.path,
                );
                out.connection_id = r.connection_id;
                out.sni = r.sni;
                out.scheme = scheme_from_wit(r.scheme);
                out.headers = r.headers;
                out
            }
        }
    };
}

/// The 0.3 `request-head` (flat fields and one packed buffer, see
/// [`crate::packed`]) to and from the SDK's, as `wit_head` beside
/// `wit_http`: the host packs, the SDK's export glue unpacks.
#[doc(hidden)]
#[macro_export]
macro_rules! __wit_request_head_v03 {
    ($($wit:tt)*) => {
        #[allow(dead_code, unreachable_pub)]
        pub(crate) mod wit_head {
            use $($wit)* as wit;
            use $crate::types as sdk;
            use super::wit_http::{method_from_wit, method_to_wit, scheme_from_wit, scheme_to_wit};

            /// The head as a 0.3 record, its packed part written into `buf`
            /// (the caller's, handed back with the record and reused).
            pub fn request_head_to_wit(r: &sdk::RequestHead, mut buf: Vec<u8>) -> wit::RequestHead {
                $crate::packed::pack(r, &mut buf);
                wit::RequestHead {
                    connection_id: r.connection_id,
                    listener_port: r.listener_port,
                    method: method_to_wit(&r.method),
                    scheme: scheme_to_wit(r.scheme),
                    packed: buf,
                }
            }

            /// Reads a 0.3 record into `out`, reusing the allocations `out`
            /// holds.
            pub fn request_head_into(
                h: wit::RequestHead,
                out: &mut sdk::RequestHead,
            ) -> Result<(), $crate::packed::Malformed> {
                out.connection_id = h.connection_id;
                out.listener_port = h.listener_port;
                out.method = method_from_wit(h.method);
                out.scheme = scheme_from_wit(h.scheme);
                $crate::packed::unpack_into(&h.packed, out)
            }
        }
    };
}
