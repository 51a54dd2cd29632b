//! A component built against the 0.1 contract (`wit/v0.1`), as plugins
//! built before 0.2 were: the host must keep loading it and calling its
//! connection hooks, and never hand it an HTTP request (it exports 0.1's
//! `request`, which answers a 418 so a test would see the host call it).

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "plugin", path: "../../../wit/v0.1" });

    use exports::turnout::plugin::hooks::Guest;
    use turnout::plugin::types::*;

    struct Legacy;

    impl Guest for Legacy {
        fn init(_config: String) -> Result<PluginInfo, String> {
            turnout::plugin::host::log(LogLevel::Info, "legacy 0.1 plugin up");
            Ok(PluginInfo {
                name: "legacy".into(),
                version: "0.1.0".into(),
                hooks: HookSet::ROUTE | HookSet::REQUEST,
                listen: vec![PortRange {
                    first: 7000,
                    last: 7000,
                }],
                tls_ports: vec![],
            })
        }

        fn admit(_peer: Peer) -> AdmitDecision {
            AdmitDecision::Pass
        }

        fn route(conn: Connection) -> RouteDecision {
            RouteDecision::Forward(Forward {
                route: format!("legacy-{}", conn.peer.listener_port),
                targets: vec![Target {
                    host: "127.0.0.1".into(),
                    port: 9,
                }],
                tls_mode: TlsMode::Passthrough,
                proxy_protocol: ProxyProtocol::None,
                limits: RouteLimits {
                    max_connections: 0,
                    max_connections_per_ip: 0,
                },
            })
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

        fn request(_head: RequestHead) -> RequestDecision {
            RequestDecision::Respond(Response {
                status: 418,
                headers: vec![],
                body: vec![],
            })
        }
    }

    export!(Legacy);
}
