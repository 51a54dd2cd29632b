//! A component built against the 0.2 contract (`wit/v0.2`), as plugins
//! built before 0.3 are: the host must keep loading it and hand it every
//! request field the 0.2 way (a record of strings and lists). Its `request`
//! answers with what it was given, so a test sees each field arrive.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "plugin", path: "../../../wit/v0.2" });

    use exports::turnout::plugin::hooks::Guest;
    use turnout::plugin::types::*;

    struct Legacy;

    impl Guest for Legacy {
        fn init(_config: String) -> Result<PluginInfo, String> {
            Ok(PluginInfo {
                name: "legacy-v02".into(),
                version: "0.2.0".into(),
                hooks: HookSet::REQUEST,
                listen: vec![],
                tls_ports: vec![],
                http_ports: vec![],
                interest: Interest {
                    request_headers: vec!["x-test".into()],
                    response_headers: vec![],
                    upstreams: vec![],
                },
            })
        }

        fn admit(_peer: Peer) -> AdmitDecision {
            AdmitDecision::Pass
        }

        fn route(_conn: Connection) -> RouteDecision {
            RouteDecision::Pass
        }

        fn policy(
            _conn: Connection,
            _route: Routed,
            _defaults: ConnectionPolicy,
        ) -> PolicyDecision {
            PolicyDecision::Pass
        }

        fn on_idle(_conn: Connection, _stats: IdleStats) -> IdleDecision {
            IdleDecision::Pass
        }

        fn request(head: RequestHead) -> RequestDecision {
            let method = match head.method {
                Method::Get => "GET".to_owned(),
                Method::Other(m) => m,
                _ => "other".to_owned(),
            };
            let client = match head.client.ip {
                IpAddress::V4((a, b, c, d)) => format!("{a}.{b}.{c}.{d}"),
                IpAddress::V6(_) => "v6".to_owned(),
            };
            let slot = match head.headers.first() {
                Some(Some(v)) => String::from_utf8_lossy(v).into_owned(),
                _ => "-".to_owned(),
            };
            let other = turnout::plugin::host::header("x-other");
            let body = format!(
                "{method} {} {} {} sni={} {slot} client={client}:{} port={} conn={} other={}",
                match head.scheme {
                    Scheme::Http => "http",
                    Scheme::Https => "https",
                },
                head.authority,
                head.path,
                head.sni.as_deref().unwrap_or("-"),
                head.client.port,
                head.listener_port,
                head.connection_id,
                other.len(),
            );
            RequestDecision::Respond(Response {
                status: 200,
                headers: vec![],
                body: body.into_bytes(),
            })
        }

        fn response(_head: ResponseHead) -> ResponseDecision {
            ResponseDecision::Pass
        }

        fn approve_certificate(_name: String, _client: SocketAddress) -> CertificateDecision {
            CertificateDecision::Pass
        }
    }

    export!(Legacy);
}
