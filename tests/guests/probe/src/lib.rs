//! Exercises every hook and host import, so tests can see that values
//! cross the boundary intact in both directions.

use turnout_plugin_sdk::prelude::*;

/// See the crate docs.
pub struct Probe {
    tag: String,
}

impl Plugin for Probe {
    fn init(config: &str) -> Result<Self, InitError> {
        if config.contains("fail-init") {
            return Err(InitError::new("probe was told to fail"));
        }
        host::log(LogLevel::Info, &format!("probe init with {config}"));
        Ok(Probe {
            tag: config.trim().to_owned(),
        })
    }

    fn info(&self) -> PluginInfo {
        PluginInfo::new("probe", env!("CARGO_PKG_VERSION"))
            .listen([PortRange {
                from: 8000,
                to: 8010,
            }])
            .listen_tls([PortRange::single(9443)])
    }

    fn admit(&self, peer: &Peer) -> AdmitDecision {
        let ip = peer.ip();
        let active = host::active_connections_for_ip(ip);
        let recent = host::recent_connections_for_ip(ip);
        if active >= 3 || recent >= 10 {
            return AdmitDecision::Deny(format!("busy {ip} active={active} recent={recent}"));
        }
        if peer.listener_port == 1 {
            return AdmitDecision::Allow;
        }
        AdmitDecision::Pass
    }

    fn route(&self, conn: &Connection) -> RouteDecision {
        let hits = host::kv_increment("hits", 1, None).unwrap_or(-1);
        let total = host::active_connections_total();
        let sni = conn.sni().unwrap_or("-");
        let alpn = conn
            .tls
            .as_ref()
            .map(|t| t.alpn.join(","))
            .unwrap_or_default();
        let route = format!(
            "{sni}|{alpn}|hits={hits}|total={total}|{}",
            conn.peer.client
        );
        RouteDecision::Forward(
            Forward::new(
                route,
                vec![
                    Target::new("backend.test", 443),
                    Target::new("10.0.0.2", 8443),
                ],
            )
            .tls_mode(TlsMode::TerminateAndReencrypt)
            .proxy_protocol(ProxyProtocol::V2)
            .limits(RouteLimits::new(100, 5)),
        )
    }

    fn policy(&self, _conn: &Connection, route: &Routed, defaults: &Policy) -> PolicyDecision {
        let mut p = defaults.clone();
        p.keep_alive_treatment = KeepAliveTreatment::Immortal;
        p.inactivity_timeout = None;
        p.max_lifetime = Some(host::wall_now() % 1_000_000);
        p.stuck_timeout = Some(host::monotonic_now() / 1_000_000);
        p.half_open_grace = u64::from(route.target.port);
        PolicyDecision::Set(p)
    }

    fn on_idle(&self, _conn: &Connection, stats: &IdleStats) -> IdleDecision {
        if stats.bytes_in + stats.bytes_out == 0 {
            IdleDecision::Close
        } else {
            IdleDecision::Extend(stats.idle * 2)
        }
    }

    fn request(&self, head: &RequestHead) -> RequestDecision {
        match head.path.as_str() {
            "/redirect" => RequestDecision::Redirect(Redirect {
                location: format!("https://{}/", head.authority),
                status: 308,
            }),
            "/pass" => RequestDecision::Pass,
            _ => RequestDecision::Respond(Response {
                status: 200,
                headers: vec![Header::new("x-tag", self.tag.clone())],
                body: format!(
                    "{} {} {}",
                    head.method,
                    head.path,
                    head.header("x-test").unwrap_or("")
                )
                .into_bytes(),
            }),
        }
    }
}

turnout_plugin_sdk::export_plugin!(Probe);
