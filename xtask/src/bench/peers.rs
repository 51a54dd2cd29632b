//! The peers' setup: installing HAProxy, nginx and Caddy, and the
//! proxies' equivalent configurations: SNI routing with passthrough, and
//! TLS termination to a plain backend (Caddy's, HTTP only, in `caddy.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::procs::output;
use super::{BULK, Bench, CERT_NAME, DECOYS, ECHO, NOWHERE, Proxy, WILD};
use crate::step;

/// Installs the peers in `peers` that are missing, from Debian's packages.
pub(super) fn ensure_peers(peers: &[Proxy], install: bool) -> Result<()> {
    let have = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let stream = || {
        Path::new("/usr/lib/nginx/modules/ngx_stream_module.so").is_file()
            || output(Command::new("nginx").arg("-V")).is_ok_and(|v| v.contains("--with-stream "))
    };
    let mut missing = Vec::new();
    for p in peers {
        match p {
            Proxy::Haproxy if !have("haproxy", "-v") => missing.push("haproxy"),
            Proxy::Nginx if !(have("nginx", "-v") && stream()) => {
                missing.extend(["nginx", "libnginx-mod-stream"]);
            }
            Proxy::Caddy if !have("caddy", "version") => missing.push("caddy"),
            _ => {}
        }
    }
    install_packages(&missing, install)
}

/// `apt-get install` of `packages` (none: nothing to do), refused by name
/// with `--no-install`.
pub(super) fn install_packages(packages: &[&str], install: bool) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    let list = packages.join(" ");
    if !install {
        bail!("missing: {list} (apt-get install {list})");
    }
    step(&format!("installing {list} (Debian packages)"));
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut args = vec!["install", "-y"];
    args.extend(packages);
    // A stale package index is the usual reason for a failed install.
    let installed = apt(&args) || (apt(&["update"]) && apt(&args));
    if !installed {
        bail!("apt-get install {list} failed (root needed)");
    }
    Ok(())
}

impl Bench<'_> {
    pub(super) fn turnout_config(&self, port: u16) -> String {
        let route = |name: &str, domain: &str, to: &str| {
            let (host, tport) = to.rsplit_once(':').unwrap_or((to, "9"));
            format!(
                r#"    {{ "name": "{name}", "match": {{ "ports": {port}, "domains": ["{domain}"] }},
      "action": {{ "type": "forward", "targets": [{{ "host": "{host}", "port": {tport} }}], "tls": {{ "mode": "passthrough" }} }} }}"#
            )
        };
        let (echo, bulk) = (self.echo.to_string(), self.bulk.to_string());
        let mut routes = vec![
            route("echo", ECHO, &echo),
            route("bulk", BULK, &bulk),
            route("wild", WILD, &echo),
        ];
        routes.extend(
            (0..DECOYS)
                .map(|i| route(&format!("decoy{i}"), &format!("svc{i}.bench.test"), NOWHERE)),
        );
        turnout_config(&routes, "")
    }

    /// A file of the certificate written for the `*-terminate` scenarios:
    /// `cert.pem`, `key.pem`, `bundle.pem` (both).
    pub(super) fn cert_file(&self, name: &str) -> Result<PathBuf> {
        let dir = self.cert.as_ref().context("no certificate was written")?;
        Ok(dir.join(name))
    }

    /// One route terminating TLS 1.2 and 1.3 for every name under
    /// `bench.test` and relaying the decrypted bytes to the plain echo.
    pub(super) fn turnout_terminate_config(&self, port: u16) -> Result<String> {
        let route = self.terminate_route(port, r#", "protocol": "tcp""#, self.plain)?;
        Ok(turnout_config(&[route], ""))
    }

    /// The route the terminating scenarios share: `*.bench.test` on `port`
    /// (with `match_extra` keys), terminated with the bench certificate, to
    /// `target`.
    pub(super) fn terminate_route(
        &self,
        port: u16,
        match_extra: &str,
        target: std::net::SocketAddr,
    ) -> Result<String> {
        let (cert, key) = (self.cert_file("cert.pem")?, self.cert_file("key.pem")?);
        Ok(format!(
            r#"    {{ "name": "t", "match": {{ "ports": {port}, "domains": ["{CERT_NAME}"]{match_extra} }},
      "action": {{ "type": "forward", "targets": [{{ "host": "{}", "port": {} }}],
        "tls": {{ "mode": "terminate", "certificate": {{ "cert": {:?}, "key": {:?} }} }} }} }}"#,
            target.ip(),
            target.port(),
            cert.display().to_string(),
            key.display().to_string(),
        ))
    }

    /// Two descriptors per connection (and per pipe, when splicing) must
    /// fit the open-file limit.
    pub(super) fn haproxy_maxconn(&self) -> usize {
        self.nofile.0.saturating_sub(100) / 2
    }

    /// `mode tcp`, `bind … ssl crt`, no tickets and no session cache, to the
    /// plain echo.
    pub(super) fn haproxy_terminate_config(&self, port: u16, nproc: usize) -> Result<String> {
        let bundle = self.cert_file("bundle.pem")?;
        let maxconn = self.haproxy_maxconn();
        Ok(format!(
            "global\n  nbthread {nproc}\n  maxconn {maxconn}\n  tune.ssl.cachesize 0\n\
             defaults\n  mode tcp\n  maxconn {maxconn}\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
             frontend tls_in\n  bind 127.0.0.1:{port} ssl crt {} no-tls-tickets ssl-min-ver TLSv1.2 ssl-max-ver TLSv1.3\n  \
             default_backend plain\n\
             backend plain\n  server s {}\n",
            bundle.display(),
            self.plain,
        ))
    }

    pub(super) fn haproxy_config(&self, port: u16, nproc: usize) -> String {
        const MAXPIPES: usize = 1024;
        let mut maxconn = self.haproxy_maxconn();
        let mut pipes = String::new();
        if self.opts.haproxy_splice {
            maxconn = maxconn.saturating_sub(MAXPIPES);
            pipes = format!("  maxpipes {MAXPIPES}\n");
        }
        let decoys: Vec<String> = (0..DECOYS).map(|i| format!("svc{i}.bench.test")).collect();
        format!(
            "global\n  nbthread {nproc}\n  maxconn {maxconn}\n{pipes}\
             defaults\n  mode tcp\n  maxconn {maxconn}\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n{splice}\
             frontend tls_in\n  bind 127.0.0.1:{port}\n  tcp-request inspect-delay 5s\n  \
             tcp-request content accept if {{ req.ssl_hello_type 1 }}\n  \
             use_backend echo if {{ req.ssl_sni -i {ECHO} }}\n  \
             use_backend bulk if {{ req.ssl_sni -i {BULK} }}\n  \
             use_backend echo if {{ req.ssl_sni -m end -i {} }}\n  \
             use_backend nowhere if {{ req.ssl_sni -i {} }}\n\
             backend echo\n  server s {}\n\
             backend bulk\n  server s {}\n\
             backend nowhere\n  server s {NOWHERE}\n",
            WILD.trim_start_matches('*'),
            decoys.join(" "),
            self.echo,
            self.bulk,
            splice = if self.opts.haproxy_splice {
                "  option splice-request\n  option splice-response\n"
            } else {
                ""
            },
        )
    }

    /// What comes before `stream`: the module, workers, limits.
    pub(super) fn nginx_main(&self, nproc: usize, prefix: &Path) -> String {
        let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
        let load = if module.is_file() {
            format!("load_module {};\n", module.display())
        } else {
            String::new()
        };
        let nofile = self.nofile.0;
        format!(
            "{load}worker_processes {nproc};\nworker_rlimit_nofile {nofile};\ndaemon off;\nmaster_process on;\n\
             pid {}/nginx.pid;\nevents {{ worker_connections {}; }}\n",
            prefix.display(),
            nofile.saturating_sub(100),
        )
    }

    /// `stream`, `listen … ssl`, TLS 1.2 and 1.3, no tickets and no session
    /// cache, to the plain echo.
    pub(super) fn nginx_terminate_config(
        &self,
        port: u16,
        nproc: usize,
        prefix: &Path,
    ) -> Result<String> {
        let (cert, key) = (self.cert_file("cert.pem")?, self.cert_file("key.pem")?);
        Ok(format!(
            "{}stream {{\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    \
             ssl_certificate {};\n    ssl_certificate_key {};\n    \
             ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_tickets off;\n    ssl_session_cache off;\n    \
             proxy_pass {};\n    proxy_connect_timeout 5s;\n    proxy_timeout 1h;\n  }}\n}}\n",
            self.nginx_main(nproc, prefix),
            cert.display(),
            key.display(),
            self.plain,
        ))
    }

    pub(super) fn nginx_config(&self, port: u16, nproc: usize, prefix: &Path) -> String {
        let decoys: String = (0..DECOYS)
            .map(|i| format!("    svc{i}.bench.test {NOWHERE};\n"))
            .collect();
        format!(
            "{}stream {{\n  map $ssl_preread_server_name $upstream {{\n    hostnames;\n    default {NOWHERE};\n    \
             {ECHO} {};\n    {BULK} {};\n    {WILD} {};\n{decoys}  }}\n  \
             server {{\n    listen 127.0.0.1:{port};\n    ssl_preread on;\n    preread_timeout 5s;\n    \
             proxy_pass $upstream;\n    proxy_connect_timeout 5s;\n    proxy_timeout 1h;\n  }}\n}}\n",
            self.nginx_main(nproc, prefix),
            self.echo,
            self.bulk,
            self.echo
        )
    }
}

/// A Turnout config with `routes`, global limits off, on 127.0.0.1, and
/// `extra` top-level keys (each line `"key": value,`).
pub(super) fn turnout_config(routes: &[String], extra: &str) -> String {
    format!(
        "{{\n  \"routes\": [\n{}\n  ],\n{extra}  \"bind\": [\"127.0.0.1\"],\n  \"maxConnectionsPerIP\": 0,\n  \"connectionRateLimitPerMinute\": 0,\n  \"maxConnections\": 0,\n  \"gracefulShutdownTimeout\": 1000\n}}\n",
        routes.join(",\n")
    )
}
