//! A real ACME server for the ACME tests: Debian's `pebble` (2.4.0) with
//! `pebble-challtestsrv` as its DNS server, on free loopback ports, stopped
//! when the [`Pebble`] is dropped.
//!
//! Map: [`start`] runs `pebble-challtestsrv` (DNS only: every name is
//! `127.0.0.1`, no AAAA; its own challenge servers are off so they never
//! hold the ports Turnout answers on), then `pebble` (its directory on
//! HTTPS with a certificate from a test CA, its validation authority aimed
//! at [`PebbleOptions`]' ports), and waits until the directory answers.
//! Pebble keeps its default misbehaviour (5% of good nonces rejected,
//! a random 0–1 s delay before each validation, authorisations reused
//! half the time, finalize answering `processing`) so the client under
//! test meets it. Each validation is 3 concurrent requests; HTTP-01's
//! `Host` carries the port. Pebble connects to a name's first AAAA record
//! if it has one, hence none. Both programs log to files in a temporary
//! directory; a test that panics prints their tails.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UdpSocket};

use crate::pki::{Ca, write};

/// How long `pebble` and `pebble-challtestsrv` get to come up.
const STARTUP: Duration = Duration::from_secs(20);
/// Upper bound for one request to pebble or one DNS query.
const REQUEST: Duration = Duration::from_secs(5);
/// Pebble sleeps `rand(0..n)` whole seconds before each validation: 0–1 s.
const VA_SLEEP_SECS: &str = "2";
/// Free ports are found by binding and releasing them, so another process
/// can take one before pebble binds it; then everything starts again.
const ATTEMPTS: usize = 3;
/// What both programs log when a port is taken.
const PORT_TAKEN: &str = "address already in use";
/// Lines of each log printed when a test panics.
const TAIL: usize = 40;

/// How pebble runs: where its validation authority connects (on
/// `127.0.0.1`, since every name resolves there: Turnout's listeners) and
/// how long what it issues lasts.
#[derive(Debug, Clone, Copy, Default)]
pub struct PebbleOptions {
    /// The port of HTTP-01 validations (`http://<name>:<port>/.well-known/…`).
    pub http_port: u16,
    /// The port of TLS-ALPN-01 validations (SNI: the name).
    pub tls_port: u16,
    /// The validity of issued certificates (whole seconds; pebble's
    /// `certificateValidityPeriod`), e.g. short to make renewal due;
    /// `None`: pebble's 5 years. `notBefore` is the time of issuance.
    pub cert_validity: Option<Duration>,
}

impl PebbleOptions {
    /// Validations on these ports, certificates valid for 5 years.
    pub fn new(http_port: u16, tls_port: u16) -> PebbleOptions {
        PebbleOptions {
            http_port,
            tls_port,
            cert_validity: None,
        }
    }
}

/// A running pebble and its DNS server; dropping it kills both.
pub struct Pebble {
    // Dropped before `dir`, which holds their logs.
    pebble: Proc,
    challtestsrv: Proc,
    acme: SocketAddr,
    management: SocketAddr,
    dns: SocketAddr,
    challtestsrv_management: SocketAddr,
    ca: Ca,
    ca_path: PathBuf,
    dir: tempfile::TempDir,
}

/// Starts pebble and `pebble-challtestsrv` for `opts` and waits (bounded)
/// until pebble's directory answers. Panics, with both logs, when they do
/// not come up; panics saying what to install when they are missing.
pub async fn start(opts: PebbleOptions) -> Pebble {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match try_start(opts).await {
            Ok(p) => return p,
            Err(Failure { retry: true, why }) => last = why,
            Err(Failure { why, .. }) => panic!("{why}"),
        }
    }
    panic!("pebble did not start after {ATTEMPTS} attempts; last: {last}");
}

impl Pebble {
    /// The ACME directory, e.g. `https://127.0.0.1:<port>/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://{}/dir", self.acme)
    }

    /// A PEM file with the root that signed the certificate of pebble's
    /// HTTPS listeners (the directory and the management interface).
    pub fn directory_ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// [`Pebble::directory_ca_path`]'s contents.
    pub fn directory_ca_pem(&self) -> &str {
        &self.ca.pem
    }

    /// A rustls client trusting only [`Pebble::directory_ca_pem`].
    pub fn directory_client(&self) -> Arc<rustls::ClientConfig> {
        self.ca.client(&["http/1.1"])
    }

    /// The directory object.
    pub async fn directory(&self) -> serde_json::Value {
        let body = self.get(self.acme, "/dir").await;
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("pebble's directory: {e}"))
    }

    /// The root that signs the certificates pebble issues (made afresh by
    /// each pebble), PEM, from its management interface.
    pub async fn issuing_root_pem(&self) -> String {
        let body = self.get(self.management, "/roots/0").await;
        String::from_utf8(body.to_vec()).expect("pebble's root is PEM")
    }

    /// [`Pebble::issuing_root_pem`] written to a file (for `curl --cacert`).
    pub async fn issuing_root_path(&self) -> PathBuf {
        let pem = self.issuing_root_pem().await;
        write(self.dir.path(), "issuing-root.pem", &pem)
    }

    /// The DNS server pebble resolves names with.
    pub fn dns_server(&self) -> SocketAddr {
        self.dns
    }

    /// `pebble-challtestsrv`'s management API (plain HTTP), which changes
    /// the DNS data: `/set-txt`, `/add-a`, `/set-default-ipv4`, ….
    pub fn challtestsrv_url(&self) -> String {
        format!("http://{}", self.challtestsrv_management)
    }

    /// The addresses pebble would connect to for `name` (A and AAAA).
    pub async fn resolve(&self, name: &str) -> Vec<IpAddr> {
        let mut ips = Vec::new();
        for qtype in [QTYPE_A, QTYPE_AAAA] {
            let found = dns_query(self.dns, name, qtype)
                .await
                .unwrap_or_else(|e| panic!("DNS query for {name}: {e}"));
            ips.extend(found);
        }
        ips
    }

    /// Both programs' logs so far.
    pub fn logs(&self) -> String {
        format!(
            "{}\n{}",
            self.pebble.tail(usize::MAX),
            self.challtestsrv.tail(usize::MAX)
        )
    }

    async fn get(&self, addr: SocketAddr, path: &str) -> Bytes {
        match https_get(addr, path, self.directory_client()).await {
            Ok((200, body)) => body,
            Ok((status, body)) => panic!(
                "GET https://{addr}{path}: {status} {}",
                String::from_utf8_lossy(&body)
            ),
            Err(e) => panic!("GET https://{addr}{path}: {e}"),
        }
    }
}

/// Why a start failed; `retry` when a port was taken meanwhile.
struct Failure {
    retry: bool,
    why: String,
}

async fn try_start(opts: PebbleOptions) -> Result<Pebble, Failure> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let [acme, management, dns, challtestsrv_management] = free_ports();

    let mut challtestsrv = Command::new("pebble-challtestsrv");
    challtestsrv
        .arg("-dns01")
        .arg(dns.to_string())
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .arg("-management")
        .arg(challtestsrv_management.to_string())
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""]);
    let mut challtestsrv = Proc::spawn("pebble-challtestsrv", challtestsrv, dir.path())?;
    // Up when it answers a query the way pebble will ask it.
    let deadline = Instant::now() + STARTUP;
    loop {
        challtestsrv.alive()?;
        challtestsrv.bound()?;
        match dns_query(dns, "up.pebble.test", QTYPE_A).await {
            Ok(ips) if ips == [IpAddr::V4(Ipv4Addr::LOCALHOST)] => break,
            // Another process on the port we picked answered (seen in CI:
            // `[]` while our server's log was still empty): new ports.
            Ok(ips) => return Err(challtestsrv.failed(&format!("answered {ips:?}"), true)),
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(challtestsrv.failed(&format!("no DNS answer: {e}"), false)),
        }
    }

    let ca = Ca::new("Turnout Pebble Listener CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    let ca_path = write(dir.path(), "listener-ca.pem", &ca.pem);
    let mut config = serde_json::json!({
        "listenAddress": acme.to_string(),
        "managementListenAddress": management.to_string(),
        "certificate": write(dir.path(), "listener.pem", &leaf.cert),
        "privateKey": write(dir.path(), "listener.key", &leaf.key),
        "httpPort": opts.http_port,
        "tlsPort": opts.tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    });
    if let Some(validity) = opts.cert_validity {
        // 0 would mean pebble's default.
        config["certificateValidityPeriod"] = validity.as_secs().max(1).into();
    }
    let config = serde_json::json!({ "pebble": config });
    let config_path = write(dir.path(), "pebble-config.json", &config.to_string());
    let mut pebble = Command::new("pebble");
    pebble
        .arg("-config")
        .arg(&config_path)
        .arg("-dnsserver")
        .arg(dns.to_string());
    // Only this variable: the others would switch off what the client
    // must cope with (see the module docs), whatever the caller's shell has.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PEBBLE_") {
            pebble.env_remove(k);
        }
    }
    pebble.env("PEBBLE_VA_SLEEPTIME", VA_SLEEP_SECS);
    let mut pebble = Proc::spawn("pebble", pebble, dir.path())?;

    let client = ca.client(&["http/1.1"]);
    loop {
        pebble.alive()?;
        challtestsrv.alive()?;
        let dir_up = matches!(https_get(acme, "/dir", client.clone()).await, Ok((200, _)));
        let roots_up = dir_up
            && matches!(
                https_get(management, "/roots/0", client.clone()).await,
                Ok((200, _))
            );
        if roots_up {
            challtestsrv.bound()?;
            break;
        }
        if Instant::now() >= deadline {
            return Err(pebble.failed("the directory did not answer in time", false));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Pebble {
        pebble,
        challtestsrv,
        acme,
        management,
        dns,
        challtestsrv_management,
        ca,
        ca_path,
        dir,
    })
}

/// Distinct loopback ports free a moment ago.
fn free_ports<const N: usize>() -> [SocketAddr; N] {
    // All held at once, so they differ.
    let held: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap())
}

/// A child process logging to a file; killed and reaped on drop.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command, dir: &Path) -> Result<Proc, Failure> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = match cmd
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Failure {
                    retry: false,
                    why: format!(
                        "`{name}` is not installed: the ACME tests need Debian's `pebble` \
                         package (`apt-get install pebble`; `.ci/run` installs it)"
                    ),
                });
            }
            Err(e) => {
                return Err(Failure {
                    retry: false,
                    why: format!("running {name}: {e}"),
                });
            }
        };
        Ok(Proc { name, child, log })
    }

    /// `Err` when it has exited (a taken port is worth another attempt).
    fn alive(&mut self) -> Result<(), Failure> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            status => {
                let status = format!("exited ({status:?})");
                let taken = self.tail(usize::MAX).contains(PORT_TAKEN);
                Err(self.failed(&status, taken))
            }
        }
    }

    /// `Err` when it logged a port it could not bind: `pebble-challtestsrv`
    /// carries on without that server.
    fn bound(&self) -> Result<(), Failure> {
        if self.tail(usize::MAX).contains(PORT_TAKEN) {
            return Err(self.failed("could not bind a port", true));
        }
        Ok(())
    }

    fn failed(&self, what: &str, retry: bool) -> Failure {
        Failure {
            retry,
            why: format!("{} {what}; its log:\n{}", self.name, self.tail(TAIL)),
        }
    }

    /// The last `lines` lines of its log.
    fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!("--- {} ---\n{}", self.name, all[from..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.tail(TAIL));
        }
    }
}

/// GET `https://<addr><path>` over HTTP/1.1 trusting `client`'s roots.
async fn https_get(
    addr: SocketAddr,
    path: &str,
    client: Arc<rustls::ClientConfig>,
) -> Result<(u16, Bytes), String> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::from(addr.ip());
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(REQUEST, exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}

const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;

/// The A or AAAA records `server` gives for `name`, over UDP.
async fn dns_query(server: SocketAddr, name: &str, qtype: u16) -> Result<Vec<IpAddr>, String> {
    let id: u16 = rand_id();
    // Header: id, flags (recursion desired), 1 question, no other records.
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    let question_end = q.len();

    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    sock.send_to(&q, server).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf))
        .await
        .map_err(|_| "no answer".to_owned())?
        .map_err(|e| e.to_string())?;
    let r = &buf[..n];
    if n < question_end || r[..2] != id.to_be_bytes() {
        return Err("malformed answer".into());
    }
    if r[3] & 0x0f != 0 {
        return Err(format!("rcode {}", r[3] & 0x0f));
    }
    let answers = u16::from_be_bytes([r[6], r[7]]);
    // Answers follow the echoed question.
    let mut at = question_end;
    let mut ips = Vec::new();
    for _ in 0..answers {
        // The owner name: a compression pointer or labels.
        loop {
            let len = *r.get(at).ok_or("truncated")? as usize;
            if len & 0xc0 == 0xc0 {
                at += 2;
                break;
            }
            at += 1 + len;
            if len == 0 {
                break;
            }
        }
        let fixed = r.get(at..at + 10).ok_or("truncated")?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        at += 10;
        let rdata = r.get(at..at + rdlen).ok_or("truncated")?;
        at += rdlen;
        match (rtype, rdata.len()) {
            (QTYPE_A, 4) => ips.push(IpAddr::from(<[u8; 4]>::try_from(rdata).unwrap())),
            (QTYPE_AAAA, 16) => ips.push(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(rdata).unwrap(),
            ))),
            _ => {}
        }
    }
    Ok(ips)
}

/// A query id; clashes are harmless (one socket per query).
fn rand_id() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id()) as u16
}
