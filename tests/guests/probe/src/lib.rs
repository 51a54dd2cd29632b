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
            .interest(probe_interest())
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
            "/forward" => RequestDecision::Forward(
                HttpForward::to(0)
                    .path("/rewritten")
                    .edit_request(HeaderEdit::set("x-probe", head.method.as_str()))
                    .edit_response(HeaderEdit::remove("server"))
                    .context(head.connection_id),
            ),
            "/bad" => RequestDecision::Respond(Response::text(200, "x").header("x-bad", "a\r\nb")),
            _ => {
                // A declared slot, an undeclared header through the host,
                // and the names: every way a plugin sees headers.
                let declared = head.slot_str(X_TEST).unwrap_or("-");
                let other = host::header("x-other");
                let other: Vec<String> = other
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect();
                let mut names = host::header_names();
                names.sort();
                let body = format!(
                    "{} {} {} {} sni={} {} other={} names={}",
                    head.method.as_str(),
                    head.scheme.as_str(),
                    head.host(),
                    head.path,
                    head.sni.as_deref().unwrap_or("-"),
                    declared,
                    other.join("|"),
                    names.join(","),
                );
                RequestDecision::Respond(
                    Response::text(200, body).header("x-tag", self.tag.clone()),
                )
            }
        }
    }

    fn response(&self, head: &ResponseHead) -> ResponseDecision {
        let server = head
            .headers
            .first()
            .cloned()
            .flatten()
            .unwrap_or_else(|| b"-".to_vec());
        ResponseDecision::Edit(vec![HeaderEdit::set(
            "x-probe-response",
            format!(
                "{} {} {}",
                head.context,
                head.status,
                String::from_utf8_lossy(&server)
            ),
        )])
    }

    fn approve_certificate(&self, name: &str, client: std::net::SocketAddr) -> CertificateDecision {
        if name.ends_with(".probe.test") {
            CertificateDecision::Approve
        } else {
            // Both arguments back, so tests see they crossed intact.
            CertificateDecision::refuse(format!("{name} from {client}"))
        }
    }
}

/// The declared request header slot the probe reads.
const X_TEST: usize = 0;

fn probe_interest() -> Interest {
    let mut interest = Interest::default();
    interest.request_header("x-test");
    interest.response_header("server");
    interest.upstream(Upstream::new("probe-up", vec![Target::new("127.0.0.1", 9)]));
    interest
}

turnout_plugin_sdk::export_plugin!(Probe);
