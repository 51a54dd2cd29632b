//! The soak's setup: the certificate and plugin it replaces every minute,
//! its config, and a plain GET on the admin API (the abuse run uses the
//! same).

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{ECHO, WEB, WS};
use crate::bench::peers::turnout_config;
use crate::bench::procs::command;
use crate::root;

/// A fresh certificate for `*.bench.test` over the files the config names.
pub(crate) fn rotate_cert(bin: &Path, dir: &Path) -> Result<()> {
    let out = dir.join("cert");
    let status = command(
        &bin.join("turnout-loadgen"),
        &[
            "cert".into(),
            "--out".into(),
            out.display().to_string(),
            "--name".into(),
            "*.bench.test".into(),
        ],
    )
    .stdout(Stdio::null())
    .status()?;
    if !status.success() {
        bail!("turnout-loadgen cert failed");
    }
    Ok(())
}

/// `maintenance.wasm` copied into the plugins directory under a dot-name,
/// then renamed: a new version every time.
pub(super) fn install_plugin(dir: &Path) -> Result<()> {
    let wasm = root().join("target/wasm/wasm32-wasip2/plugin/example_maintenance.wasm");
    let tmp = dir.join("plugins/.maintenance.wasm");
    std::fs::copy(&wasm, &tmp)
        .with_context(|| format!("{} (cargo xtask build-plugins)", wasm.display()))?;
    std::fs::rename(&tmp, dir.join("plugins/maintenance.wasm"))?;
    Ok(())
}

pub(super) fn config(
    dir: &Path,
    [pass, term, h2, plain]: [u16; 4],
    admin: SocketAddr,
    [tls_echo, http, ws, reset, stall]: [SocketAddr; 5],
) -> String {
    let (cert, key) = (
        dir.join("cert/cert.pem").display().to_string(),
        dir.join("cert/key.pem").display().to_string(),
    );
    let target = |a: SocketAddr| format!(r#"[{{ "host": "{}", "port": {} }}]"#, a.ip(), a.port());
    let tls = format!(
        r#"{{ "mode": "terminate", "certificate": {{ "cert": {cert:?}, "key": {key:?} }} }}"#
    );
    let routes = [
        format!(
            r#"{{ "name": "pass", "match": {{ "ports": {pass}, "domains": ["{ECHO}"] }}, "action": {{ "type": "forward", "targets": {}, "tls": {{ "mode": "passthrough" }} }} }}"#,
            target(tls_echo)
        ),
        format!(
            r#"{{ "name": "ws", "match": {{ "ports": {term}, "domains": ["{WS}"] }}, "action": {{ "type": "forward", "targets": {}, "tls": {tls} }} }}"#,
            target(ws)
        ),
        format!(
            r#"{{ "name": "web", "match": {{ "ports": {term}, "domains": ["{WEB}"] }}, "action": {{ "type": "forward", "targets": {}, "tls": {tls} }} }}"#,
            target(http)
        ),
        format!(
            r#"{{ "name": "h2", "match": {{ "ports": {h2} }}, "action": {{ "type": "forward", "targets": {}, "tls": {tls} }} }}"#,
            target(http)
        ),
        format!(
            r#"{{ "name": "reset", "match": {{ "ports": {plain}, "domains": ["reset.test"] }}, "action": {{ "type": "forward", "targets": {} }} }}"#,
            target(reset)
        ),
        format!(
            r#"{{ "name": "stall", "match": {{ "ports": {plain}, "domains": ["stall.test"] }}, "action": {{ "type": "forward", "targets": {} }} }}"#,
            target(stall)
        ),
        format!(
            r#"{{ "name": "plain", "match": {{ "ports": {plain}, "domains": ["web.test"] }}, "action": {{ "type": "forward", "targets": {} }} }}"#,
            target(http)
        ),
    ];
    let extra = format!(
        r#"  "admin": {{ "listen": "{admin}" }},
  "http": {{ "responseTimeout": 1000, "headerTimeout": 2000 }},
  "plugins": {{ "dir": "plugins", "order": ["guard", "maintenance", "routes", "keepalive"], "config": {{ "maintenance": {{ "windows": [] }} }} }},
"#
    );
    turnout_config(&routes, &extra)
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => bail!("GET {path}: {}", text.lines().next().unwrap_or("")),
    }
}
