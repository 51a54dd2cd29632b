//! Listening: binding the ports the plugins declare (or adopting the
//! caller's sockets), and the accept loop each worker runs per listener.

//! Listening: binding the ports the plugins declare (or adopting the
//! caller's sockets), the set of listeners open now — which a reload
//! changes without a restart — and the accept loop each worker runs per
//! listener.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::{Proxy, conn, socket};
use crate::plugins::Chain;

/// A bound listener and whether clients on it speak TLS first.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub listener: TcpListener,
    /// Peek a ClientHello before routing.
    pub tls: bool,
}

/// What a worker gets for one listener: its own socket (a sibling or a
/// duplicate), the address's TLS flag and its off switch.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) socket: std::net::TcpListener,
    pub(super) tls: Arc<AtomicBool>,
    pub(super) open: watch::Receiver<bool>,
}

/// One open address. The TLS flag is shared with every worker's accept
/// loop so a reload that turns a plain port into a TLS one (or back) needs
/// no new socket; `open` set to `false` closes the address everywhere.
#[derive(Debug)]
struct Open {
    tls: Arc<AtomicBool>,
    open: watch::Sender<bool>,
}

/// The listeners open now, by address, and the way to the workers. Plans
/// are made and applied by one task at a time (the app's reconfigure
/// task), so a plan is never stale when it is applied.
#[derive(Debug, Default)]
pub(super) struct Registry {
    open: BTreeMap<SocketAddr, Open>,
    /// One channel per worker; empty until the workers start.
    workers: Vec<mpsc::UnboundedSender<Incoming>>,
}

/// What a reconfigure changes about listening: new addresses already bound
/// (so a port that cannot be bound refuses the whole reconfigure before
/// anything changes), addresses to close, and TLS flags to set.
#[derive(Debug, Default)]
pub struct ListenerPlan {
    bind: Vec<(SocketAddr, std::net::TcpListener, bool)>,
    close: Vec<SocketAddr>,
    tls: Vec<(SocketAddr, bool)>,
}

/// The addresses a reconfigure opened and closed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListenerChange {
    /// Newly listening.
    pub added: Vec<SocketAddr>,
    /// No longer accepting (their connections run on).
    pub removed: Vec<SocketAddr>,
}

impl ListenerChange {
    /// Nothing opened or closed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

impl Registry {
    /// The workers are up: hand them the first listeners.
    pub(super) fn start(
        &mut self,
        workers: Vec<mpsc::UnboundedSender<Incoming>>,
        listeners: Vec<Listener>,
    ) {
        self.workers = workers;
        for l in listeners {
            let addr = match l.listener.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "listener has no local address; it is closed");
                    continue;
                }
            };
            match l.listener.into_std() {
                Ok(socket) => self.open(addr, socket, l.tls),
                Err(e) => {
                    tracing::error!(listener = %addr, error = %e, "cannot hand a listener to the workers; it is closed");
                }
            }
        }
    }

    /// Gives every worker its own socket for `addr`.
    fn open(&mut self, addr: SocketAddr, first: std::net::TcpListener, tls: bool) {
        let tls = Arc::new(AtomicBool::new(tls));
        let (open, rx) = watch::channel(true);
        let copies = super::workers::copies(&first, self.workers.len().saturating_sub(1));
        for (tx, socket) in self
            .workers
            .iter()
            .zip(std::iter::once(first).chain(copies))
        {
            let _ = tx.send(Incoming {
                socket,
                tls: tls.clone(),
                open: rx.clone(),
            });
        }
        self.open.insert(addr, Open { tls, open });
    }

    /// Binds what listening on `ports` at `addrs` adds to what is open now;
    /// changes nothing. Binding is a plain system call: fine on a blocking
    /// thread, which is where reconfigures run.
    pub(super) fn plan(
        &self,
        addrs: &[IpAddr],
        ports: &BTreeMap<u16, bool>,
    ) -> Result<ListenerPlan, BindError> {
        let wanted: BTreeMap<SocketAddr, bool> = addrs
            .iter()
            .flat_map(|ip| {
                ports
                    .iter()
                    .map(|(&port, &tls)| (SocketAddr::new(*ip, port), tls))
            })
            .collect();
        let mut plan = ListenerPlan::default();
        for (&addr, &tls) in &wanted {
            match self.open.get(&addr) {
                Some(o) if o.tls.load(Ordering::Relaxed) != tls => plan.tls.push((addr, tls)),
                Some(_) => {}
                None => {
                    // Our own socket on this port (`0.0.0.0:P` giving way to
                    // `127.0.0.1:P`, say) would fail the plain probe bind;
                    // the overlap is ours, so join with `SO_REUSEPORT`
                    // directly (the old address closes once this applies).
                    let ours = self
                        .open
                        .keys()
                        .any(|a| a.port() == addr.port() && a.is_ipv4() == addr.is_ipv4());
                    let socket = if ours {
                        listening_socket(addr, true)
                    } else {
                        listen_std(addr)
                    }
                    .map_err(|source| BindError { addr, source })?;
                    plan.bind.push((addr, socket, tls));
                }
            }
        }
        plan.close = self
            .open
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        Ok(plan)
    }

    /// Applies `plan`: new addresses start accepting on every worker,
    /// closed ones stop (each worker first takes the connections already
    /// queued on its socket, then drops it, and with it its receiver of
    /// the switch).
    /// Returns with the change the switches of the closed addresses:
    /// each reports `closed()` once every worker has let go of its socket.
    pub(super) fn apply(
        &mut self,
        plan: ListenerPlan,
    ) -> (ListenerChange, Vec<watch::Sender<bool>>) {
        let mut change = ListenerChange::default();
        let mut closing = Vec::new();
        for (addr, tls) in plan.tls {
            if let Some(o) = self.open.get(&addr) {
                o.tls.store(tls, Ordering::Relaxed);
            }
        }
        for addr in plan.close {
            if let Some(o) = self.open.remove(&addr) {
                let _ = o.open.send(false);
                change.removed.push(addr);
                closing.push(o.open);
            }
        }
        for (addr, socket, tls) in plan.bind {
            self.open(addr, socket, tls);
            change.added.push(addr);
        }
        (change, closing)
    }

    /// The addresses open now.
    pub(super) fn addresses(&self) -> Vec<SocketAddr> {
        self.open.keys().copied().collect()
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or host is out of
    // something; accepting again at once would spin.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// One worker's accept loop on one listener, until the proxy stops
/// accepting or the address is closed.
pub(super) async fn accept_loop(
    proxy: Arc<Proxy>,
    l: Incoming,
    worker: usize,
    mut accepting: watch::Receiver<bool>,
) {
    let Incoming {
        socket,
        tls,
        mut open,
    } = l;
    // Registers with this worker's runtime: the reason the listener
    // travels as a std socket.
    let listener = match TcpListener::from_std(socket) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "a worker cannot accept on a listener");
            return;
        }
    };
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address");
            return;
        }
    };
    // The usual client-socket options, once on the listener (see
    // `socket::Inherited`); after a reload changes them, connections set
    // their own.
    let inherited = {
        let s = proxy.settings.load();
        socket::prepare_listener(
            &listener,
            socket::Inherited {
                no_delay: s.no_delay,
                keep_alive: s.default_policy.tcp_keep_alive.map(Duration::from_millis),
            },
        )
    };
    let take = |r: io::Result<(tokio::net::TcpStream, SocketAddr)>| match r {
        Ok((stream, peer)) => {
            // A listener on a specific address accepts on that address: no
            // getsockname per connection.
            let local = if local.ip().is_unspecified() {
                stream.local_addr().unwrap_or(local)
            } else {
                local
            };
            let tls_port = tls.load(Ordering::Relaxed);
            tokio::spawn(conn::handle(
                proxy.clone(),
                conn::Accepted {
                    stream,
                    peer,
                    local,
                    tls_port,
                    inherited,
                    worker,
                },
            ));
            None
        }
        Err(e) => Some(e),
    };
    loop {
        tokio::select! {
            r = listener.accept() => match take(r) {
                None => {}
                Some(e) if is_resource_exhaustion(&e) => {
                    tracing::error!(listener = %local, error = %e, "accept failed: out of resources; backing off 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Some(e) => tracing::warn!(listener = %local, error = %e, "accept failed"),
            },
            r = accepting.changed() => if r.is_err() || !*accepting.borrow() { break },
            r = open.changed() => if r.is_err() || !*open.borrow() { break },
        }
    }
    // Closing a listening socket resets the connections the kernel has
    // already completed on it; take them first (at most a full backlog).
    // A plain non-blocking `accept` until it would block: tokio's cached
    // readiness may not have seen the last arrivals.
    let Ok(socket) = listener.into_std() else {
        return;
    };
    for _ in 0..BACKLOG {
        let r = socket.accept().and_then(|(stream, peer)| {
            stream.set_nonblocking(true)?;
            Ok((tokio::net::TcpStream::from_std(stream)?, peer))
        });
        if take(r).is_some() {
            break;
        }
    }
}

/// The listen backlog of every socket Turnout binds.
const BACKLOG: u32 = 1024;

/// Every port the chain's plugins declare, and whether it is a TLS port
/// (declared in any plugin's `tls-ports` or `http-ports`).
pub fn declared_ports(chain: &Chain) -> BTreeMap<u16, bool> {
    let mut ports: BTreeMap<u16, bool> = BTreeMap::new();
    for p in chain.plugins() {
        let info = p.info();
        for r in &info.listen {
            for port in r.from..=r.to {
                // An HTTP port is read first too: a TLS record there goes
                // the TLS way (a plugin need not declare it twice).
                let tls = info.tls_ports.iter().any(|t| t.contains(port))
                    || info.http_ports.iter().any(|t| t.contains(port));
                *ports.entry(port).or_default() |= tls;
            }
        }
    }
    ports
}

/// Binds every port the chain's plugins declare on every address in
/// `addrs`.
pub async fn bind(addrs: &[IpAddr], chain: &Chain) -> Result<Vec<Listener>, BindError> {
    bind_with(addrs, chain, Vec::new()).await
}

/// [`bind`], using the caller's own listening sockets for the addresses
/// they are bound to (a test binds `127.0.0.1:0` and writes the port it got
/// into the config: no window in which another process takes the port).
/// A handed-over socket that no declared address matches is an error,
/// not silently closed.
pub async fn bind_with(
    addrs: &[IpAddr],
    chain: &Chain,
    given: Vec<std::net::TcpListener>,
) -> Result<Vec<Listener>, BindError> {
    bind_ports(addrs, &declared_ports(chain), given).await
}

/// [`bind_with`] for `ports` (port → clients speak TLS or HTTP first).
pub async fn bind_ports(
    addrs: &[IpAddr],
    ports: &BTreeMap<u16, bool>,
    mut given: Vec<std::net::TcpListener>,
) -> Result<Vec<Listener>, BindError> {
    let mut out = Vec::new();
    for ip in addrs {
        for (&port, &tls) in ports {
            let addr = SocketAddr::new(*ip, port);
            let own = given
                .iter()
                .position(|l| l.local_addr().ok() == Some(addr))
                .map(|i| given.swap_remove(i));
            let listener = match own {
                Some(l) => l
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(l)),
                None => listen(addr),
            }
            .map_err(|e| BindError { addr, source: e })?;
            out.push(Listener { listener, tls });
        }
    }
    if let Some(extra) = given.first() {
        let addr = extra
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
        return Err(BindError {
            addr,
            source: io::Error::other(
                "a listener was handed over for this address, but no route listens on it",
            ),
        });
    }
    Ok(out)
}

/// A listening socket on `addr`, in a `SO_REUSEPORT` group so that every
/// worker can have its own (see `workers.rs`). IPv6 sockets are IPv6-only,
/// so `bind: ["0.0.0.0", "::"]` gets both families instead of the second
/// bind failing with "address in use" (Linux makes `::` dual-stack by
/// default).
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(listen_std(addr)?)
}

/// [`listen`] without a runtime: the socket is not registered yet.
fn listen_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    // `SO_REUSEPORT` would also let this bind join a group another process
    // of the same user listens on — a second proxy would quietly take half
    // the connections. A plain bind first fails with "address in use" as
    // it always did; it also resolves port 0.
    let probe = socket_for(addr, false)?;
    probe.bind(&addr.into())?;
    let addr = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP address"))?;
    drop(probe);
    listening_socket(addr, true)
}

/// A bound, listening, non-blocking socket on `addr`.
pub(crate) fn listening_socket(
    addr: SocketAddr,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let socket = socket_for(addr, reuse_port)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG as i32)?;
    Ok(socket.into())
}

fn socket_for(addr: SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Restarts must not wait for TIME_WAIT sockets of the previous run.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}{}", hint(source, addr))]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: io::Error,
}

fn hint(e: &io::Error, addr: &SocketAddr) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            format!(
                " (another process is listening there; `ss -ltnp 'sport = :{}'` shows which)",
                addr.port()
            )
        }
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE: `setcap cap_net_bind_service=+ep $(which turnout)`, or use a port >= 1024)".to_owned()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    /// `bind: ["0.0.0.0", "::"]` on one port: both bind, and an IPv6
    /// client reaches the IPv6 listener.
    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_bind_the_same_port() {
        let v4 = super::listen("0.0.0.0:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = super::listen(std::net::SocketAddr::new("::".parse().unwrap(), port))
            .expect("IPv6-only, so no clash with the IPv4 wildcard");
        let client = tokio::net::TcpStream::connect(("::1", port)).await.unwrap();
        let (_, peer) = v6.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }
}
