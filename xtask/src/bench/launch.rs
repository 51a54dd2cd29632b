//! Starting one proxy for one run: its config for the scenario's front
//! (written into the bench's temp dir), the process, and the wait until
//! it listens.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::procs::{Proc, command, free_port};
use super::scenario::Front;
use super::{Bench, Proxy};

impl Bench<'_> {
    /// Starts `proxy` on a free port: SNI routing and passthrough, TLS
    /// termination to the plain echo, HTTPS (h1, or h2 by ALPN) to the
    /// HTTP backend, or WebSockets over TLS to the WebSocket echo.
    pub(super) fn start_proxy(&self, proxy: Proxy, front: Front) -> Result<(Proc, SocketAddr)> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stem = format!("{}-{port}", proxy.name());
        let log = self.dir.join(format!("{stem}.log"));
        let nproc = std::thread::available_parallelism().map_or(2, |n| n.get());
        let p = match proxy {
            Proxy::Turnout | Proxy::TurnoutCluster | Proxy::TurnoutHook => {
                self.spawn_turnout(proxy, front, port, &stem, log)?
            }
            Proxy::Haproxy => self.spawn_haproxy(front, port, nproc, &stem, log)?,
            Proxy::Nginx => self.spawn_nginx(front, port, nproc, &stem, log)?,
            Proxy::Caddy => self.spawn_caddy(front, port, &stem, log)?,
        };
        wait_listening(p, proxy, addr)
    }

    fn spawn_turnout(
        &self,
        proxy: Proxy,
        front: Front,
        port: u16,
        stem: &str,
        log: PathBuf,
    ) -> Result<Proc> {
        let cfg = self.dir.join(format!("{stem}.json"));
        let text = match front {
            Front::Passthrough => self.turnout_config(port),
            Front::TerminateTcp => self.turnout_terminate_config(port)?,
            Front::TerminateHttp | Front::TerminateH2 => self.turnout_http_config(port)?,
            Front::TerminateWs => self.turnout_ws_config(port)?,
        };
        let text = self.hook_variant(proxy, text)?;
        std::fs::write(&cfg, self.turnout_variant(proxy, text)?)?;
        let mut cmd = command(
            &self.bin.join("turnout"),
            &["run".into(), "-c".into(), cfg.display().to_string()],
        );
        cmd.env("RUST_LOG", "warn");
        Proc::spawn("turnout", cmd, Some(log))
    }

    fn spawn_haproxy(
        &self,
        front: Front,
        port: u16,
        nproc: usize,
        stem: &str,
        log: PathBuf,
    ) -> Result<Proc> {
        let cfg = self.dir.join(format!("{stem}.cfg"));
        let text = match front {
            Front::Passthrough => self.haproxy_config(port, nproc),
            Front::TerminateTcp => self.haproxy_terminate_config(port, nproc)?,
            Front::TerminateHttp => self.haproxy_http_config(port, nproc, false)?,
            Front::TerminateH2 => self.haproxy_http_config(port, nproc, true)?,
            Front::TerminateWs => self.haproxy_ws_config(port, nproc)?,
        };
        std::fs::write(&cfg, text)?;
        let cmd = command(
            Path::new("haproxy"),
            &["-db".into(), "-f".into(), cfg.display().to_string()],
        );
        Proc::spawn("haproxy", cmd, Some(log))
    }

    fn spawn_nginx(
        &self,
        front: Front,
        port: u16,
        nproc: usize,
        stem: &str,
        log: PathBuf,
    ) -> Result<Proc> {
        let prefix = self.dir.join(stem);
        std::fs::create_dir_all(&prefix)?;
        let cfg = prefix.join("nginx.conf");
        let text = match front {
            Front::Passthrough => self.nginx_config(port, nproc, &prefix),
            Front::TerminateTcp => self.nginx_terminate_config(port, nproc, &prefix)?,
            Front::TerminateHttp => self.nginx_http_config(port, nproc, &prefix, false)?,
            Front::TerminateH2 => self.nginx_http_config(port, nproc, &prefix, true)?,
            Front::TerminateWs => self.nginx_ws_config(port, nproc, &prefix)?,
        };
        std::fs::write(&cfg, text)?;
        let cmd = command(
            Path::new("nginx"),
            &[
                "-p".into(),
                prefix.display().to_string(),
                "-c".into(),
                cfg.display().to_string(),
                "-e".into(),
                log.display().to_string(),
            ],
        );
        // Its stderr and its error log (`-e`) share the file.
        Proc::spawn("nginx", cmd, Some(log))
    }

    fn spawn_caddy(&self, front: Front, port: u16, stem: &str, log: PathBuf) -> Result<Proc> {
        let home = self.dir.join(stem);
        std::fs::create_dir_all(&home)?;
        let cfg = home.join("caddy.json");
        std::fs::write(&cfg, self.caddy_config(port, front, &home)?)?;
        let mut cmd = command(
            Path::new("caddy"),
            &["run".into(), "--config".into(), cfg.display().to_string()],
        );
        // Its data and config dirs (it writes an instance id there), not
        // the user's.
        cmd.env("HOME", &home)
            .env("XDG_DATA_HOME", &home)
            .env("XDG_CONFIG_HOME", &home);
        Proc::spawn("caddy", cmd, Some(log))
    }
}

/// Waits (at most 60 s) until `p` accepts on `addr`; its log tail when it
/// exits or never listens.
fn wait_listening(mut p: Proc, proxy: Proxy, addr: SocketAddr) -> Result<(Proc, SocketAddr)> {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!("{} exited ({status}):\n{}", proxy.name(), p.log_tail());
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            // nginx binds in the master; give the workers a moment.
            std::thread::sleep(Duration::from_millis(200));
            return Ok((p, addr));
        }
        if Instant::now() > end {
            bail!(
                "{} does not listen on {addr}:\n{}",
                proxy.name(),
                p.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
