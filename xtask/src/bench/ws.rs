//! The WebSocket scenario, `ws-echo`: each proxy terminates TLS as in
//! `https-keepalive`, passes the HTTP/1.1 `Upgrade: websocket` request to
//! the same plain WebSocket echo backend and, after its 101, relays the
//! frames both ways; the load is `turnout-loadgen ws-echo`. Headline: the
//! proxy's CPU per 100 000 echoed messages (1 KiB each, both ways through
//! the proxy). Besides it reads the backend's connection count (one per
//! WebSocket: upgraded connections are never pooled).
//!
//! The configs are the HTTP scenario's ([`super::http`]) with what a
//! WebSocket needs: HAProxy `timeout tunnel` (it upgrades natively in
//! `mode http`); nginx `Upgrade`/`Connection: upgrade` passed on and its
//! read/send timeouts raised, no upstream keep-alive pool; Turnout the same
//! terminate route, to the WebSocket backend (it relays upgrades on every
//! HTTP route).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;

use super::procs::Proc;
use super::{Bench, ECHO, Figures, Proxy, num};

impl Bench<'_> {
    /// The terminate route (protocol http, the default) for `*.bench.test`
    /// to the WebSocket backend; the admin API on for `/metrics`.
    pub(super) fn turnout_ws_config(&self, port: u16) -> Result<String> {
        let route = self.terminate_route(port, "", self.ws)?;
        Ok(super::peers::turnout_config(
            &[route],
            &self.turnout_admin()?,
        ))
    }

    /// HAProxy's HTTP config to the WebSocket backend, with `timeout
    /// tunnel` (what applies once a connection is upgraded).
    pub(super) fn haproxy_ws_config(&self, port: u16, nproc: usize) -> Result<String> {
        self.haproxy_http(
            port,
            nproc,
            "http/1.1",
            self.ws,
            "  timeout tunnel 1h\n",
            "",
        )
    }

    /// nginx's HTTP config to the WebSocket backend, with the upgrade
    /// headers passed on (nginx drops hop-by-hop headers otherwise) and the
    /// upgraded connection's read/send timeouts (default 60 s) raised.
    pub(super) fn nginx_ws_config(&self, port: u16, nproc: usize, prefix: &Path) -> Result<String> {
        self.nginx_http(
            port,
            nproc,
            prefix,
            &super::http::NginxSite {
                listen_extra: "",
                backend: self.ws,
                upstream_extra: "",
                location_extra: "      proxy_set_header Upgrade $http_upgrade;\n      \
                    proxy_set_header Connection \"upgrade\";\n      \
                    proxy_read_timeout 1h;\n      proxy_send_timeout 1h;\n",
            },
        )
    }

    /// `messages` echoed messages over the scenario's WebSockets.
    pub(super) fn ws_messages(
        &self,
        to: SocketAddr,
        messages: usize,
    ) -> Result<BTreeMap<String, String>> {
        let mut args = vec!["ws-echo".to_owned()];
        args.extend(Self::target(to, ECHO));
        args.extend([
            "--conns".into(),
            self.load.ws_conns.to_string(),
            "--messages".into(),
            messages.to_string(),
            "--message-bytes".into(),
            self.load.ws_message_bytes.to_string(),
            "--window".into(),
            self.load.ws_window.to_string(),
            "--max-secs".into(),
            "600".into(),
        ]);
        self.loadgen(&args)
    }

    /// The measured run: proxy CPU per 100 000 echoed messages, the
    /// backend connections it opened, and for Turnout its plugins' share
    /// (only connection-level calls here: an upgrade is one request).
    pub(super) fn ws_echo(
        &self,
        proxy: Proxy,
        p: &Proc,
        addr: SocketAddr,
        f: &mut Figures,
    ) -> Result<BTreeMap<String, String>> {
        let r = self.measured_http(proxy, p, self.ws, f, || {
            self.ws_messages(addr, self.load.ws_messages)
        })?;
        f.insert("client_conns".into(), num(&r, "conns_opened"));
        for k in [
            "msg_per_s",
            "mib_per_s",
            "p50_us",
            "p99_us",
            "client_cores",
            "lost",
            "resumed",
            "tickets_per_conn",
        ] {
            f.insert(k.into(), num(&r, k));
        }
        Ok(r)
    }
}
