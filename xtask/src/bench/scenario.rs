//! The benchmark's scenarios: their names on the command line, their
//! headline figure with its goal against HAProxy, the figures reported
//! beside it, and what the proxies do: route on SNI and pass TLS
//! through, terminate TLS and relay bytes, or terminate and proxy HTTP
//! (requests, or WebSocket upgrades).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scenario {
    NewTls,
    Bulk1,
    Bulk64,
    Idle,
    Latency,
    /// New TLS 1.3 connections terminated by the proxy.
    NewTlsTerminate,
    /// Idle connections terminated by the proxy.
    IdleTerminate,
    /// HTTP/1.1 requests on keep-alive TLS connections the proxy
    /// terminates, proxied to a plain HTTP/1.1 backend.
    HttpsKeepalive,
    /// 1 KiB WebSocket messages echoed over TLS connections the proxy
    /// terminates and upgrades, to a plain WebSocket backend.
    WsEcho,
    /// A new TLS connection per HTTP/1.1 request (`connection: close`),
    /// terminated by the proxy and proxied to the plain HTTP/1.1 backend.
    HttpsNew,
    /// HTTP/2 over TLS (ALPN h2), 10 connections × 10 concurrent streams
    /// (`h2load`), proxied to the plain HTTP/1.1 backend.
    H2,
}

/// What the proxies are configured to do in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Front {
    /// Route on SNI, pass the TLS stream through.
    Passthrough,
    /// Terminate TLS, relay the decrypted bytes to the plain echo.
    TerminateTcp,
    /// Terminate TLS, proxy HTTP/1.1 requests to the HTTP backend.
    TerminateHttp,
    /// Terminate TLS, proxy HTTP/1.1 WebSocket upgrades to the WebSocket
    /// backend and relay the frames.
    TerminateWs,
    /// Terminate TLS offering h2 by ALPN, proxy HTTP/2 requests to the
    /// HTTP/1.1 backend.
    TerminateH2,
}

/// A scenario's headline figure and the goal for its ratio to HAProxy.
pub(super) struct Headline {
    pub(super) key: &'static str,
    pub(super) label: &'static str,
    pub(super) goal: f64,
}

impl Scenario {
    pub(super) const ALL: [Scenario; 11] = [
        Scenario::NewTls,
        Scenario::Bulk1,
        Scenario::Bulk64,
        Scenario::Idle,
        Scenario::Latency,
        Scenario::NewTlsTerminate,
        Scenario::IdleTerminate,
        Scenario::HttpsKeepalive,
        Scenario::WsEcho,
        Scenario::HttpsNew,
        Scenario::H2,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Scenario::NewTls => "new-tls",
            Scenario::Bulk1 => "bulk-1",
            Scenario::Bulk64 => "bulk-64",
            Scenario::Idle => "idle",
            Scenario::Latency => "latency",
            Scenario::NewTlsTerminate => "new-tls-terminate",
            Scenario::IdleTerminate => "idle-terminate",
            Scenario::HttpsKeepalive => "https-keepalive",
            Scenario::WsEcho => "ws-echo",
            Scenario::HttpsNew => "https-new",
            Scenario::H2 => "h2",
        }
    }

    /// Whether the proxy terminates TLS (else it routes on SNI and passes
    /// the TLS stream through).
    pub(super) fn terminates(self) -> bool {
        self.front() != Front::Passthrough
    }

    pub(super) fn front(self) -> Front {
        match self {
            Scenario::NewTlsTerminate | Scenario::IdleTerminate => Front::TerminateTcp,
            Scenario::HttpsKeepalive | Scenario::HttpsNew => Front::TerminateHttp,
            Scenario::H2 => Front::TerminateH2,
            Scenario::WsEcho => Front::TerminateWs,
            _ => Front::Passthrough,
        }
    }

    pub(super) fn headline(self) -> Headline {
        let (key, label, goal) = match self {
            Scenario::NewTls => ("cpu_s_per_10k", "proxy CPU-s per 10 000 conns", 0.8),
            Scenario::Bulk1 | Scenario::Bulk64 => ("cpu_s_per_gb", "proxy CPU-s per GB", 0.7),
            Scenario::Idle => ("rss_kib_per_conn", "proxy RSS KiB per idle conn", 1.0),
            Scenario::Latency => ("added_p99_us", "added p99 µs per new conn", 1.0),
            Scenario::NewTlsTerminate => (
                "cpu_s_per_10k",
                "proxy CPU-s per 10 000 terminated conns",
                0.7,
            ),
            Scenario::IdleTerminate => (
                "rss_kib_per_conn",
                "proxy RSS KiB per idle terminated conn",
                1.0,
            ),
            Scenario::HttpsKeepalive => (
                "cpu_s_per_100k",
                "proxy CPU-s per 100 000 keep-alive HTTPS requests",
                0.8,
            ),
            // Issue 17's goals.
            Scenario::HttpsNew => (
                "cpu_s_per_10k",
                "proxy CPU-s per 10 000 new HTTPS connections, one request each",
                0.7,
            ),
            Scenario::H2 => (
                "cpu_s_per_100k",
                "proxy CPU-s per 100 000 HTTP/2 requests (10 conns × 10 streams)",
                0.8,
            ),
            // Issue 15's goal.
            Scenario::WsEcho => (
                "cpu_s_per_100k",
                "proxy CPU-s per 100 000 echoed 1 KiB WebSocket messages (TLS terminated)",
                0.8,
            ),
        };
        Headline { key, label, goal }
    }

    /// Figures reported beside the headline, (key, label): the
    /// scenario's own, then Turnout's plugin figures for the HTTP runs
    /// that read them (`Bench::measured_http`).
    pub(super) fn beside(self) -> impl Iterator<Item = &'static (&'static str, &'static str)> {
        let plugins: &[_] = match self {
            Scenario::HttpsKeepalive | Scenario::H2 | Scenario::WsEcho => PLUGIN_FIGURES,
            _ => &[],
        };
        self.side().iter().chain(plugins)
    }

    /// The scenario's own figures beside the headline.
    fn side(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Scenario::NewTls => &[
                ("conns_per_s", "conns/s"),
                ("p50_us", "p50 µs connect→echo"),
                ("p99_us", "p99 µs connect→echo"),
            ],
            Scenario::NewTlsTerminate => &[
                ("conns_per_s", "conns/s"),
                ("p50_us", "p50 µs connect→echo"),
                ("p99_us", "p99 µs connect→echo"),
                ("full_pct", "% full handshakes (client's view)"),
                ("resumed", "resumed handshakes"),
                (
                    "tickets_per_conn",
                    "TLS 1.3 tickets sent per conn (client drops them)",
                ),
            ],
            Scenario::Bulk1 | Scenario::Bulk64 => &[("gb_per_s", "GB/s")],
            Scenario::Idle | Scenario::IdleTerminate => &[
                ("rss_mib_with", "proxy RSS MiB with all open"),
                (
                    "retained_kib_per_conn",
                    "RSS KiB per conn still held 1 s after close",
                ),
                ("idle_cpu_ms_per_s", "proxy CPU ms/s while they idle"),
                ("empty_cpu_ms_per_s", "proxy CPU ms/s with no connections"),
                ("open_secs", "seconds to open them"),
            ],
            Scenario::HttpsKeepalive => &[
                ("req_per_s", "requests/s"),
                ("p50_us", "p50 µs request→response"),
                ("p99_us", "p99 µs request→response"),
                ("client_cores", "client CPU, cores (of 2)"),
                ("backend_conns", "backend connections opened (measured run)"),
                ("client_conns", "client connections opened"),
            ],
            Scenario::WsEcho => &[
                ("msg_per_s", "messages echoed/s"),
                ("p50_us", "p50 µs message→echo"),
                ("p99_us", "p99 µs message→echo"),
                ("client_cores", "client CPU, cores (of 2)"),
                ("backend_conns", "backend connections opened (measured run)"),
                ("client_conns", "client WebSockets opened"),
                ("lost", "messages lost with a failed connection"),
            ],
            Scenario::HttpsNew => &[
                ("conns_per_s", "connections (= requests)/s"),
                ("p50_us", "p50 µs request→response (after the handshake)"),
                ("p99_us", "p99 µs request→response (after the handshake)"),
                ("client_cores", "client CPU, cores (of 2)"),
                ("resumed", "resumed handshakes"),
            ],
            Scenario::H2 => &[
                ("req_per_s", "requests/s"),
                ("mean_us", "mean µs per request (h2load)"),
                ("backend_conns", "backend connections opened (measured run)"),
            ],
            Scenario::Latency => &[
                ("added_p50_us", "added p50 µs"),
                ("p50_us", "p50 µs through proxy"),
                ("p99_us", "p99 µs through proxy"),
                ("direct_p50_us", "p50 µs direct"),
                ("direct_p99_us", "p99 µs direct"),
            ],
        }
    }
}

/// Turnout's plugin figures from `/metrics` around a measured HTTP run.
const PLUGIN_FIGURES: &[(&str, &str)] = &[
    ("hook_pct", "routes plugin's share of proxy CPU (turnout)"),
    (
        "hook_us_per_call",
        "µs per routes-plugin call (turnout, /metrics)",
    ),
    (
        "hdr_us_per_call",
        "µs per hdr call (turnout-hook, /metrics)",
    ),
    (
        "hdr_calls_per_routes_call",
        "hdr calls per routes call (turnout-hook: 1 = every request)",
    ),
];
