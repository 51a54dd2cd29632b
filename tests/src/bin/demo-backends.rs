//! The backends `cargo xtask demo` puts behind the proxy: a TLS HTTP
//! responder with a self-signed certificate (default `127.0.0.1:9443`, for
//! `app.localhost`) and a plain HTTP responder (default `127.0.0.1:9080`).
//! Each answers any request with one short `200 OK` naming itself, what the
//! client asked for and, on TLS, the SNI it saw — so `curl` shows the route.
//!
//! ```text
//! demo-backends [--tls ADDR] [--plain ADDR] [--name DNS-NAME]
//! ```
//!
//! Port 0 picks a free port; the chosen addresses are printed on stdout, one
//! line per backend (`… backend on ADDR …`), before anything else is served.
//! SIGINT / SIGTERM stop it (the default action: there is nothing to flush).

// Printing to stdout is what this binary is for.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A client that has not finished its request head by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request head read.
const MAX_HEAD: usize = 16 * 1024;

struct Args {
    tls: SocketAddr,
    plain: SocketAddr,
    name: String,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        tls: "127.0.0.1:9443".parse()?,
        plain: "127.0.0.1:9080".parse()?,
        name: "app.localhost".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--tls" => args.tls = value()?.parse().context("--tls: expected IP:PORT")?,
            "--plain" => args.plain = value()?.parse().context("--plain: expected IP:PORT")?,
            "--name" => args.name = value()?,
            "-h" | "--help" => {
                println!(
                    "usage: demo-backends [--tls IP:PORT] [--plain IP:PORT] [--name DNS-NAME]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!(
                " (another process is listening there; `ss -ltnp 'sport = :{}'` shows which)",
                addr.port()
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
    })
}

fn tls_acceptor(name: &str) -> Result<tokio_rustls::TlsAcceptor> {
    // The subject names the backend, so `openssl s_client` through the
    // proxy shows whose certificate arrived (passthrough: the backend's).
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned(), format!("*.{name}")])?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("{name} (Turnout demo backend)"),
    );
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Reads a request head (up to the blank line; bounded in size and time)
/// and answers it with one `200 OK` whose body is `about` plus the request
/// line, which it returns; `None` when the client sent nothing (`openssl
/// s_client </dev/null` handshakes and leaves).
async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    about: &str,
) -> Result<Option<String>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    let read_head = async {
        while !(head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n"))
        {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_HEAD {
                break;
            }
        }
        std::io::Result::Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read_head)
        .await
        .context("no request in time")??;
    if head.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&head);
    let request_line = text.lines().next().unwrap_or("").trim().to_owned();
    let body = format!("{about}; request: {request_line}\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(response.as_bytes()).await?;
    s.shutdown().await?;
    Ok(Some(request_line))
}

async fn serve_tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    while let Ok((tcp, from)) = listener.accept().await {
        let (acceptor, local) = (acceptor.clone(), local.clone());
        tokio::spawn(async move {
            let mut tls = match tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    return eprintln!(
                        "demo-backends: TLS {local}: handshake from {from} failed: {e}"
                    );
                }
                Err(_) => {
                    return eprintln!(
                        "demo-backends: TLS {local}: no handshake from {from} in time"
                    );
                }
            };
            let sni = tls.get_ref().1.server_name().unwrap_or("(none)").to_owned();
            let about = format!(
                "Hello from the TLS demo backend on {local} (SNI {sni}, connection from {from})"
            );
            match respond(&mut tls, &about).await {
                Ok(Some(line)) => eprintln!("demo-backends: TLS {local}: {from} SNI {sni}: {line}"),
                Ok(None) => {}
                Err(e) => eprintln!("demo-backends: TLS {local}: {from}: {e:#}"),
            }
        });
    }
}

async fn serve_plain(listener: TcpListener) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    while let Ok((mut tcp, from)) = listener.accept().await {
        let local = local.clone();
        tokio::spawn(async move {
            let about =
                format!("Hello from the plain demo backend on {local} (connection from {from})");
            match respond(&mut tcp, &about).await {
                Ok(Some(line)) => eprintln!("demo-backends: plain {local}: {from}: {line}"),
                Ok(None) => {}
                Err(e) => eprintln!("demo-backends: plain {local}: {from}: {e:#}"),
            }
        });
    }
}

async fn run(args: Args) -> Result<()> {
    let acceptor = tls_acceptor(&args.name)?;
    let tls = bind(args.tls).await?;
    let plain = bind(args.plain).await?;
    println!(
        "demo-backends: TLS backend on {} (self-signed certificate for {name} and *.{name})",
        tls.local_addr()?,
        name = args.name
    );
    println!("demo-backends: plain backend on {}", plain.local_addr()?);
    tokio::join!(serve_tls(tls, acceptor), serve_plain(plain));
    Ok(())
}

fn main() -> std::process::ExitCode {
    let result = parse_args().and_then(|args| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run(args))
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-backends: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
