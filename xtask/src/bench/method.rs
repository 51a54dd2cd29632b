//! The report's method section: how each scenario and each optional
//! proxy was run, in words (`report.rs` picks the parts a run used).

pub(super) const METHOD: &str = "\
* Passthrough scenarios (new-tls, bulk-*, idle, latency): all three \
proxies route TLS on SNI to the same loopback backends \
(`turnout-loadgen backend`: a rustls echo server, and a bulk server that \
reads the ClientHello record and then moves raw bytes), with the same \
routes: `echo.`, `bulk.`, `*.wild.` and 8 decoys under `bench.test`. \
Turnout: `turnout run` with those routes and the embedded default plugins \
(guard → routes → keepalive), global limits off; HAProxy: `mode tcp`, \
`tcp-request inspect-delay` + `req.ssl_sni` ACLs; nginx: `stream`, \
`ssl_preread`, `map $ssl_preread_server_name` with `hostnames`.
* Threads: each proxy gets one thread or worker process per core \
(Turnout's `workers` default, HAProxy `nbthread`, nginx `worker_processes`). \
The load generator and backends run on the same cores; that is why the \
headline is CPU time per unit of work, read from the proxy's \
`/proc/PID/stat` (utime + stime, 10 ms ticks; nginx: master + workers), \
not throughput.
* Every run starts the proxy fresh, warms it up with a few hundred TLS \
connections, then measures. CPU is read before the load and 0.5 s after \
it ends (connections finish closing).
* new-tls: each connection is a full TLS 1.3 handshake (no resumption) \
through the proxy to the backend, a 64-byte request echoed back, then \
close_notify and FIN both ways. Latency there is connect → echo at \
concurrency.
* bulk: one stream, or 64 in parallel, each opened with a real \
ClientHello (so it is routed like TLS) and then carrying unencrypted \
bytes client → backend, so that neither end pays for encryption on the \
two shared cores.
* idle: RSS (VmRSS; nginx: master + workers) with all connections open \
minus RSS before opening them, divided by the connections; each was \
opened with a full TLS handshake and one echo, so it is routed and \
connected to a backend. The count is capped by the open-file limit \
(a proxy holds two descriptors per connection).
* latency: one connection at a time, alternating direct-to-backend and \
through-the-proxy; added = the proxy's percentile minus the direct one.
";

pub(super) const METHOD_TERMINATE: &str = "\
* Terminating scenarios (new-tls-terminate, idle-terminate): each proxy \
terminates TLS 1.2/1.3 on one listener with the same certificate — one \
self-signed ECDSA P-256 certificate for `*.bench.test`, written once per \
run by `turnout-loadgen cert` (rcgen) — and relays the decrypted bytes to \
the same plain TCP echo (`turnout-loadgen backend`, no TLS). Turnout: one \
route `{ match: { ports, domains: [\"*.bench.test\"], protocol: \"tcp\" }, \
action: { type: forward, targets: [plain echo], tls: { mode: terminate, \
certificate: { cert, key } } } }`, rustls with aws-lc-rs, default \
plugins, global limits off; Turnout has no setting for session tickets or \
its session cache, so it runs with its defaults (tickets on: a client \
offering one would resume). HAProxy: \
`mode tcp`, `bind … ssl crt <cert+key PEM> no-tls-tickets ssl-min-ver \
TLSv1.2 ssl-max-ver TLSv1.3`, `tune.ssl.cachesize 0`, `nbthread` = cores, \
no ALPN. nginx: `stream { server { listen … ssl; ssl_certificate; \
ssl_certificate_key; ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets \
off; ssl_session_cache off; proxy_pass <plain echo>; } }`, \
`worker_processes` = cores, no ALPN. With these settings OpenSSL 3.0 \
(HAProxy, nginx) still sends two TLS 1.3 tickets per handshake, as rustls \
(Turnout) does — the table above counts them — but `openssl s_client \
-sess_out`/`-sess_in` gets \"New\" from HAProxy and nginx (they cannot \
resume) and \"Reused\" from Turnout. Cipher suites and groups: each \
peer's defaults; the client (rustls, aws-lc-rs, default order without \
post-quantum preference) offers a single X25519 key share, so no peer \
needs a HelloRetryRequest — what was negotiated is in the table above.
* The client never resumes: its rustls session store keeps nothing, so \
it offers no PSK and no TLS 1.2 session; every handshake is checked \
(`handshake_kind`) and counted as full, full after a HelloRetryRequest, \
or resumed. It skips certificate verification (the signature is still \
made by the server) to keep client CPU low on the shared cores.
* new-tls-terminate: per connection a full TLS 1.3 handshake with the \
proxy, the proxy's TCP connection to the plain echo, a 64-byte request \
echoed back, then close_notify and FIN. Headline: proxy CPU-s per 10 000 \
such connections; goal ≤ 0.7× HAProxy's.
* idle-terminate: as idle, but each connection is terminated by the \
proxy (TLS state held by the proxy) and relayed in plaintext to the \
echo; RSS with all open minus before, per connection. Goal ≤ HAProxy's.
";

pub(super) const METHOD_HTTP: &str = "\
* https-keepalive: each proxy terminates TLS as above (same certificate, \
tickets and session cache off where there is a setting, ALPN \
`http/1.1`) and proxies HTTP/1.1 to the same plain HTTP/1.1 backend \
(`turnout-loadgen backend`: a minimal keep-alive server answering every \
`GET` with a 128-byte `Content-Length` body). The client \
(`turnout-loadgen https-keepalive`) opens the keep-alive connections \
(`--conns`) and sends one `GET /` at a time on each — no pipelining — \
until the total is reached; responses are read by `Content-Length`. Each \
proxy picks the backend by `Host` (`*.bench.test`), keeps `Host` and \
sets `X-Forwarded-For`, `-Proto`, `-Host`, `-Port` (Turnout by default; \
HAProxy `option forwardfor` + `http-request set-header`; nginx \
`proxy_set_header`), and logs nothing (HAProxy no `log`, nginx \
`access_log off`, Turnout `RUST_LOG=warn`). Backend keep-alive: Turnout \
`http.upstreamMaxIdle` 128, HAProxy `http-reuse always` (idle pool \
unbounded), nginx `upstream { keepalive 128; }` with `proxy_http_version \
1.1` and `Connection \"\"`; `keepalive_requests` raised on both nginx \
sides (default 1000). \"backend connections opened\" counts the \
backend's accepts during the measured run: near zero means the pool \
held. Turnout runs its default chain (guard → routes → keepalive); the \
routes plugin's `request` hook decides every request. Headline: proxy \
CPU-s per 100 000 requests (the measured run opens its client \
connections anew: one full handshake per connection, a rounding error \
at 2 000 requests per connection); goal ≤ 0.8× HAProxy's.
* The request hook's share (Turnout): the routes plugin's \
`turnout_plugin_call_duration_seconds` sum and count from `/metrics`, \
read before and after the measured run (outside its CPU window); the \
sum is the time spent in plugin calls — the request hook once per \
request, plus a connection-level `route` call per new connection — \
divided by the proxy's CPU time in that run. A call is synchronous on \
a worker thread, so its wall time is CPU time unless the thread was \
preempted.
";

pub(super) const METHOD_WS: &str = "\
* ws-echo: each proxy terminates TLS as in https-keepalive (same \
certificate, tickets and session cache off where there is a setting, ALPN \
`http/1.1`, the same `X-Forwarded-*` headers on the upgrade request, no \
logging) and passes the HTTP/1.1 `Upgrade: websocket` request to the same \
plain WebSocket echo (`turnout-loadgen backend`: a minimal RFC 6455 \
server that answers the handshake, then echoes every frame unmasked, as it \
came). After the backend's 101 each proxy relays the bytes both ways; \
HAProxy and nginx without reading frames, Turnout following frame \
headers (not payloads) for its heartbeat, which is on with its defaults \
(a ping every 30 s: none falls inside a run). Turnout: the same terminate \
route as https-keepalive (protocol http), to the WebSocket backend; it \
relays upgrades on every HTTP route. HAProxy: the https-keepalive config \
(`mode http`, `bind … ssl crt … alpn http/1.1`) plus `timeout tunnel 1h`; \
it handles the upgrade natively. nginx: the https-keepalive `http` config \
with `proxy_http_version 1.1`, `proxy_set_header Upgrade $http_upgrade; \
proxy_set_header Connection \"upgrade\";`, `proxy_read_timeout`/\
`proxy_send_timeout 1h`, no upstream keep-alive pool (an upgraded \
connection is never reused). The client (`turnout-loadgen ws-echo`) opens \
the WebSockets (one full TLS 1.3 handshake and one upgrade each, checking \
`Sec-WebSocket-Accept`), then on each sends masked 1 KiB binary messages \
— its sequence number, then a fixed pattern — with at most the window \
(`--ws-window`, default 1: each waits for its echo) awaiting their echo, \
until the total is reached; every echo is checked byte for byte and in \
order, then each WebSocket is closed (close 1000 both ways, close_notify, \
FIN). Headline: proxy CPU-s per 100 000 echoed messages (each crosses the \
proxy twice: 1 KiB decrypted client → backend and 1 KiB encrypted back); \
goal ≤ 0.8× HAProxy's (issue 15). \"backend \
connections opened\" should equal the client's WebSockets.
";

pub(super) const METHOD_HTTPS_NEW: &str = "\
* https-new: the https-keepalive setup (same configs, same backend), but \
the client (`turnout-loadgen https-keepalive --close`) sends every \
request with `connection: close` on a new TLS connection — a full \
handshake (never resumed), one `GET /`, the response, the proxy's close \
— with as many connections at a time as https-keepalive keeps open. \
Headline: proxy CPU-s per 10 000 such connections; goal ≤ 0.7× HAProxy's \
(issue 17). Latencies are request → response after the handshake.
";

pub(super) const METHOD_H2: &str = "\
* h2: the https-keepalive setup (same backend, same `Host` routing and \
`X-Forwarded-*` headers, same upstream pools) with h2 offered by ALPN: \
Turnout's terminate route as it is (h2 and http/1.1 by ALPN is its \
default), HAProxy `alpn h2,http/1.1`, nginx `listen … ssl http2` (1.22's \
form; `keepalive_requests` raised, which bounds h2 requests per \
connection too), Caddy `protocols [h1, h2]`. The client is `h2load` \
(nghttp2-client): `-t 1 -c 10 -m 10 -n N --connect-to=127.0.0.1:PORT \
https://echo.bench.test:PORT/`, so 10 connections with up to 10 \
concurrent streams each, SNI and `:authority` `echo.bench.test`; a run \
that negotiates anything but h2 is an error. Every proxy speaks HTTP/1.1 \
to the backend. Headline: proxy CPU-s per 100 000 requests; goal ≤ 0.8× \
HAProxy's (issue 17). \"mean µs per request\" is h2load's.
";

pub(super) const METHOD_CADDY: &str = "\
* Caddy (Debian's 2.6 package, the Go proxy): in the HTTP scenarios \
only (https-keepalive, https-new, h2, ws-echo) — Debian's build has no \
layer-4 proxying, so it has no passthrough or TCP-termination column. A \
JSON config (`caddy run --config`): admin API off, log level WARN and no \
access log, the same certificate loaded from files, `session_tickets \
disabled`, `protocol_min tls1.2`, `automatic_https disable`, protocols \
`h1` (`h1`, `h2` in h2; never h3), one route matching `Host` \
`*.bench.test` to `reverse_proxy` with the backend as upstream, an idle \
pool of 128 (`keep_alive max_idle_conns[_per_host]`), its default \
`X-Forwarded-For`/`-Proto`/`-Host` plus `X-Forwarded-Port` set. \
WebSocket upgrades are handled by `reverse_proxy` natively. Go's \
`GOMAXPROCS` defaults to the cores, as the others' thread counts.
";

pub(super) const METHOD_HOOK: &str = "\
* `--hook` (issue 17's request-hook scenario): `turnout-hook` is \
`turnout` plus a plugins directory holding `hdr.wasm` — the embedded \
`routes` plugin written out by `turnout-loadgen plugin` — placed first by \
`plugins.order`, configured with one plaintext HTTP route on another \
port that declares one request header (`match.headers` \
`x-bench-variant`). Each request on the bench's port thus gets one more \
`request` call, handed that header in its slot, that passes (wrong port) \
before `routes` forwards. The section above gives turnout-hook's CPU per \
request minus turnout's, per repeat.
";

pub(super) const METHOD_CLUSTER: &str = "\
* `--cluster` (issue 18): a `redis-server` started by the bench on a free \
loopback port (`--bind 127.0.0.1 --save \"\" --appendonly no`, in the \
temp dir, stopped at the end) serves every run of the proxy \
`turnout-cluster`: Turnout with exactly `turnout`'s config plus \
`\"cluster\": { \"redis\": \"redis://127.0.0.1:PORT/0\", \"prefix\": \
\"turnout:\", \"instance\": \"bench-1\" }` (the store's defaults otherwise: \
25 ms call timeout, 2 s heartbeat). A cluster store alone puts nothing on \
a connection's path; a connection rate limit does, so with `--cluster` \
both Turnouts run with `connectionRateLimitPerMinute` 100000000, far \
above any load here, and no connection is ever refused for it: \
`turnout` counts each new connection in its local window, \
`turnout-cluster` awaits one Lua script in Redis (the client IP's \
sliding 60 s window, `{prefix}rate:{ip}`) after accepting the connection \
and before the plugins' `admit`. That round trip is the only difference \
between the two. All connections come from 127.0.0.1, so every script \
updates the same key (at most ~60 per-second fields). Redis runs on the \
same two cores as everything else; its CPU is not in the proxy's CPU \
column, the time the connection waits for it is in the latencies. The \
two Turnouts run side by side in every repeat, in the rotated order.
";
