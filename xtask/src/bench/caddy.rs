//! Caddy, the fourth proxy (issue 17): Debian's `caddy` 2.6 with its
//! `reverse_proxy`, in the HTTP scenarios only — Debian's build has no
//! layer-4 proxying, so it sits out passthrough and TCP termination.
//!
//! Same certificate, same backends and the same per-request work as the
//! others: TLS 1.2 and 1.3 with session tickets off (the others serve no
//! tickets either), the backend picked by `Host` (`*.bench.test`), `Host`
//! kept, `X-Forwarded-For`/`-Proto`/`-Host` (Caddy's defaults) plus
//! `X-Forwarded-Port`, an idle upstream pool as large as the others',
//! no access log (Caddy logs none unless a server asks), admin API off.
//! ALPN: `h1` only in the HTTP/1.1 scenarios (as HAProxy's `alpn
//! http/1.1`), `h1` and `h2` in `h2`; never `h3`.

use std::path::Path;

use anyhow::Result;

use super::scenario::Front;
use super::{Bench, CERT_NAME};

/// Idle upstream connections Caddy may keep (as the others, see `http.rs`).
const POOL: usize = 128;

impl Bench<'_> {
    /// Caddy's JSON config for `front` on `port`; `home` holds its storage.
    pub(super) fn caddy_config(&self, port: u16, front: Front, home: &Path) -> Result<String> {
        let (cert, key) = (self.cert_file("cert.pem")?, self.cert_file("key.pem")?);
        let backend = if front == Front::TerminateWs {
            self.ws
        } else {
            self.http
        };
        let protocols = if front == Front::TerminateH2 {
            r#"["h1", "h2"]"#
        } else {
            r#"["h1"]"#
        };
        // As the Turnout configs quote paths: Debug's quoting is JSON's
        // for the temp-dir paths used here.
        let text = |p: &Path| format!("{:?}", p.display().to_string());
        Ok(format!(
            r#"{{
  "admin": {{ "disabled": true }},
  "logging": {{ "logs": {{ "default": {{ "level": "WARN" }} }} }},
  "storage": {{ "module": "file_system", "root": {storage} }},
  "apps": {{
    "tls": {{
      "certificates": {{ "load_files": [{{ "certificate": {cert}, "key": {key} }}] }},
      "session_tickets": {{ "disabled": true }}
    }},
    "http": {{
      "servers": {{
        "bench": {{
          "listen": ["127.0.0.1:{port}"],
          "protocols": {protocols},
          "automatic_https": {{ "disable": true }},
          "tls_connection_policies": [{{ "protocol_min": "tls1.2" }}],
          "routes": [{{
            "match": [{{ "host": ["{CERT_NAME}"] }}],
            "handle": [{{
              "handler": "reverse_proxy",
              "upstreams": [{{ "dial": "{backend}" }}],
              "headers": {{ "request": {{ "set": {{ "X-Forwarded-Port": ["{{http.request.port}}"] }} }} }},
              "transport": {{
                "protocol": "http",
                "keep_alive": {{ "max_idle_conns": {POOL}, "max_idle_conns_per_host": {POOL} }}
              }}
            }}]
          }}]
        }}
      }}
    }}
  }}
}}
"#,
            storage = text(&home.join("data")),
            cert = text(&cert),
            key = text(&key),
        ))
    }
}
