//! The L4 path end to end on loopback: real TLS clients (rustls and the
//! `openssl` CLI), real backends, and the counters back to zero after each.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnout::proxy::Settings;
use turnout_tests::l4::*;

fn route(
    name: &str,
    port: u16,
    sni: Option<&str>,
    targets: &[std::net::SocketAddr],
    pp: Option<&str>,
) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|t| format!("[\"{}\", {}]", t.ip(), t.port()))
        .collect();
    format!(
        r#"{{"name": "{name}", "port": {port}, "sni": {}, "targets": [{}], "proxyProtocol": {}}}"#,
        sni.map_or("null".to_owned(), |s| format!("\"{s}\"")),
        targets.join(","),
        pp.map_or("null".to_owned(), |s| format!("\"{s}\"")),
    )
}

fn router(tls: u16, plain: u16, routes: &[String], policy: &str) -> String {
    format!(
        r#"{{"tlsPorts": [{tls}], "plainPorts": [{plain}], "routes": [{}]{policy}}}"#,
        routes.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_routing_with_rustls_and_openssl_clients() {
    let a = tls_backend("a.test", "backend A").await;
    let b = tls_backend("b.test", "backend B").await;
    let p = start_proxy(Settings::default(), |tls, plain| {
        router(
            tls,
            plain,
            &[
                route("a", tls, Some("a.test"), &[a], None),
                route("b", tls, Some("b.test"), &[b], None),
            ],
            "",
        )
    })
    .await;

    assert_eq!(tls_greeting(p.tls, "a.test").await.unwrap(), "backend A");
    assert_eq!(
        tls_greeting(p.tls, "B.TEST").await.unwrap(),
        "backend B",
        "SNI is case-insensitive"
    );

    // The openssl CLI as the client: read its output until the greeting,
    // then end it (with -quiet it waits for the server to close).
    let port = p.tls.port();
    let mut child = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "b.test",
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl runs");
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(STEP, async {
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("backend B") {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "openssl exited early: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "openssl never printed the greeting: {:?}",
            String::from_utf8_lossy(&seen)
        )
    });
    child.kill().await.unwrap();

    p.settled().await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_sent_one_byte_at_a_time_reaches_the_backend_untouched() {
    let (echo, mut first) = echo_backend().await;
    let p = start_proxy(Settings::default(), |tls, plain| {
        router(
            tls,
            plain,
            &[route("e", tls, Some("slow.test"), &[echo], None)],
            "",
        )
    })
    .await;
    let hello = client_hello_bytes(Some("slow.test"));
    assert!(hello.len() > 100);
    let mut s = TcpStream::connect(p.tls).await.unwrap();
    s.set_nodelay(true).unwrap();
    for byte in &hello {
        s.write_all(std::slice::from_ref(byte)).await.unwrap();
        s.flush().await.unwrap();
    }
    // The backend echoes: everything the proxy peeked must come back intact.
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(STEP, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, hello);
    let seen = tokio::time::timeout(STEP, first.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, hello[..seen.len()], "no PROXY header, no rewriting");
    drop(s);
    p.settled().await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_sni_unknown_sni_and_slow_hellos_are_refused_cleanly() {
    let a = tls_backend("a.test", "backend A").await;
    let settings = Settings {
        initial_data_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let p = start_proxy(settings, |tls, plain| {
        router(
            tls,
            plain,
            &[route("a", tls, Some("a.test"), &[a], None)],
            "",
        )
    })
    .await;
    let alert = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112];

    for sni in [None, Some("unknown.test")] {
        let mut s = TcpStream::connect(p.tls).await.unwrap();
        s.write_all(&client_hello_bytes(sni)).await.unwrap();
        assert_eq!(
            read_to_end(&mut s).await,
            alert,
            "fatal unrecognized_name for {sni:?}"
        );
    }

    // Half a ClientHello, then nothing: closed after initialDataTimeout.
    let hello = client_hello_bytes(Some("a.test"));
    let mut s = TcpStream::connect(p.tls).await.unwrap();
    s.write_all(&hello[..hello.len() / 2]).await.unwrap();
    assert_eq!(read_to_end(&mut s).await, b"");

    // Garbage that claims to be a handshake.
    let mut s = TcpStream::connect(p.tls).await.unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x02, 0, 0, 1, 0])
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut s).await, b"");

    p.settled().await;
    let refusals = p.proxy.metrics().refusals();
    let count = |label: &str| p.proxy.metrics().refusal_count(label);
    assert_eq!(count("no-route"), 2, "{refusals:?}");
    assert_eq!(count("timeout"), 1, "{refusals:?}");
    assert_eq!(count("bad-client-hello"), 1, "{refusals:?}");
    p.stop().await;
}

/// A ClientHello trickled as one-byte TLS records, one record per TCP
/// segment, used to cost the worker O(n²) (the parser re-walks every record
/// on each read). With one worker, the trickler and everyone else share a
/// thread: the trickler must be refused once it passes the record cap, long
/// before it has sent its hello, and other clients are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_trickled_in_one_byte_records_is_refused_and_others_are_served() {
    let a = tls_backend("a.test", "backend A").await;
    let settings = Settings {
        workers: 1,
        ..Settings::default()
    };
    let p = start_proxy(settings, |tls, plain| {
        router(
            tls,
            plain,
            &[route("a", tls, Some("a.test"), &[a], None)],
            "",
        )
    })
    .await;
    let hello = client_hello_bytes(Some("a.test"));
    // The handshake message without its record header, re-framed as
    // one-byte records.
    let message = &hello[5..];
    let records: Vec<[u8; 6]> = message
        .iter()
        .map(|&b| [0x16, 0x03, 0x01, 0x00, 0x01, b])
        .collect();
    assert!(records.len() > 200, "{} records", records.len());

    let addr = p.tls;
    let trickler = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut sent = 0usize;
        for record in &records {
            if s.write_all(record).await.is_err() {
                break;
            }
            sent += 1;
            // One record per segment, as the attack paces it; stop as
            // soon as the proxy has closed the connection.
            let mut probe = [0u8; 1];
            let probed = tokio::time::timeout(Duration::from_millis(2), s.read(&mut probe)).await;
            if probed.is_ok() {
                break;
            }
        }
        sent
    });
    // Meanwhile other clients on the same worker get through.
    let mut served = 0;
    loop {
        assert_eq!(tls_greeting(p.tls, "a.test").await.unwrap(), "backend A");
        served += 1;
        if trickler.is_finished() || served == 50 {
            break;
        }
    }
    let sent = tokio::time::timeout(STEP, trickler).await.unwrap().unwrap();
    eprintln!("trickler refused after {sent} records; {served} other clients served meanwhile");
    assert!(
        sent < 200,
        "the trickler sent {sent} records before the proxy refused it"
    );
    p.settled().await;
    let refusals = p.proxy.metrics().refusals();
    assert_eq!(
        p.proxy.metrics().refusal_count("bad-client-hello"),
        1,
        "{refusals:?}"
    );
    p.stop().await;
}

/// A policy's `noDelay` applies to both sockets (the WIT says so); the
/// client socket used to keep the listener's setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_sets_no_delay_on_the_client_socket_too() {
    for (listener, policy) in [(true, false), (false, true)] {
        let (echo, _) = echo_backend().await;
        let settings = Settings {
            no_delay: listener,
            ..Settings::default()
        };
        let p = start_proxy(settings, |tls, plain| {
            router(
                tls,
                plain,
                &[route("e", plain, None, &[echo], None)],
                &format!(r#", "policy": {{"noDelay": {policy}}}"#),
            )
        })
        .await;
        let mut s = TcpStream::connect(p.plain).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tokio::time::timeout(STEP, s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        let fd = proxy_side_socket(p.plain, s.local_addr().unwrap())
            .expect("the proxy's end of the connection");
        assert_eq!(
            rustix::net::sockopt::tcp_nodelay(&fd).unwrap(),
            policy,
            "client socket TCP_NODELAY with listener {listener}, policy {policy}"
        );
        drop((fd, s));
        p.settled().await;
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_passes_the_fin_and_the_other_direction_keeps_flowing() {
    let (echo, _) = echo_backend().await;
    let p = start_proxy(Settings::default(), |tls, plain| {
        router(
            tls,
            plain,
            &[route("plain", plain, None, &[echo], None)],
            "",
        )
    })
    .await;
    let mut s = TcpStream::connect(p.plain).await.unwrap();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&payload).await.unwrap();
    s.shutdown().await.unwrap(); // FIN: the backend sees EOF, then finishes echoing
    assert_eq!(read_to_end(&mut s).await, payload);
    p.settled().await;
    p.stop().await;
}

fn checksum(data: &[u8], mut acc: u64) -> u64 {
    for chunk in data.chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        acc = acc.rotate_left(5) ^ u64::from_le_bytes(b);
    }
    acc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_transfer_each_way_arrives_intact() {
    let (echo, _) = echo_backend().await;
    let p = start_proxy(Settings::default(), |tls, plain| {
        router(tls, plain, &[route("bulk", plain, None, &[echo], None)], "")
    })
    .await;
    const TOTAL: usize = 256 << 20;
    let spliced = turnout::proxy::relay::spliced_bytes();
    let s = TcpStream::connect(p.plain).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut chunk = vec![0u8; 1 << 20];
        let mut sum = 0;
        for i in 0..TOTAL / chunk.len() {
            for (j, b) in chunk.iter_mut().enumerate() {
                *b = (i * 31 + j * 7) as u8;
            }
            sum = checksum(&chunk, sum);
            w.write_all(&chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
        sum
    });
    let mut got = 0usize;
    let mut sum = 0;
    let mut buf = vec![0u8; 1 << 20];
    let mut pending = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got += n;
            pending.extend_from_slice(&buf[..n]);
            let whole = pending.len() / 8 * 8;
            sum = checksum(&pending[..whole], sum);
            pending.drain(..whole);
        }
    })
    .await
    .expect("transfer completes");
    let sum = checksum(&pending, sum);
    assert_eq!(got, TOTAL);
    assert_eq!(sum, writer.await.unwrap(), "checksums match");
    p.settled().await;
    // Bulk in both directions takes the splice(2) path, and every byte
    // is still counted once.
    let moved = turnout::proxy::relay::spliced_bytes() - spliced;
    assert!(
        moved >= TOTAL as u64,
        "only {moved} bytes went through splice"
    );
    assert_eq!(
        p.proxy.metrics().bytes(),
        (TOTAL as u64, TOTAL as u64),
        "bytes in/out as counted by the proxy"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_resetting_backends_fail_over_or_close_and_leave_no_count() {
    let (echo, _) = echo_backend().await;
    let dead = closed_port().await;
    // A backend that accepts, reads a little, then resets.
    let resetter = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let reset_addr = resetter.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = resetter.accept().await {
            let mut b = [0u8; 4];
            let _ = s.read_exact(&mut b).await;
            // SO_LINGER 0 makes the close a reset, which is the point here.
            #[allow(deprecated)]
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s);
        }
    });
    let p = start_proxy(Settings::default(), |tls, plain| {
        let routes = [
            route("failover", plain, None, &[dead, echo], None),
            route("dead", tls, None, &[dead], None),
        ];
        router(tls, plain, &routes, "")
    })
    .await;

    let mut s = TcpStream::connect(p.plain).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(STEP, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"ping", "second target used after the first refused");
    drop(s);

    // Plain bytes on the TLS listener route on port alone: to a dead target.
    for _ in 0..20 {
        let mut s = TcpStream::connect(p.tls).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        assert_eq!(read_to_end(&mut s).await, b"");
    }
    p.settled().await;
    assert_eq!(p.proxy.metrics().refusal_count("backend-unreachable"), 20);
    p.stop().await;

    let p = start_proxy(Settings::default(), |tls, plain| {
        router(
            tls,
            plain,
            &[route("reset", plain, None, &[reset_addr], None)],
            "",
        )
    })
    .await;
    let mut s = TcpStream::connect(p.plain).await.unwrap();
    s.write_all(b"abcdefgh").await.unwrap();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut Vec::new()))
        .await
        .expect("closed after the reset");
    p.settled().await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_close_idle_stuck_and_half_open_connections() {
    // A backend that accepts and never reads or writes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let policy = r#", "policy": {"inactivityMs": 400, "stuckMs": 300, "halfOpenMs": 300}"#;
    let p = start_proxy(Settings::default(), |tls, plain| {
        router(
            tls,
            plain,
            &[route("silent", plain, None, &[silent_addr], None)],
            policy,
        )
    })
    .await;

    // Idle: no bytes either way -> closed by inactivity.
    let started = std::time::Instant::now();
    let mut idle = TcpStream::connect(p.plain).await.unwrap();
    assert_eq!(read_to_end(&mut idle).await, b"");
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "not before the timeout"
    );

    // Stuck: the client sends, nothing comes back.
    let mut stuck = TcpStream::connect(p.plain).await.unwrap();
    stuck.write_all(b"anyone there?").await.unwrap();
    assert_eq!(read_to_end(&mut stuck).await, b"");

    // Half-open: the client closes its side; the backend never does.
    let mut half = TcpStream::connect(p.plain).await.unwrap();
    half.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut half).await, b"");

    p.settled().await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_in_from_trusted_peers_only_and_out_to_the_backend() {
    use turnout::net::proxy_protocol::{ProxyParse, encode_v1, encode_v2, parse};
    use turnout_plugin_sdk::matching::IpList;

    let (echo, mut first) = echo_backend().await;
    let trusted = Settings {
        accept_proxy_protocol: true,
        trusted_proxies: IpList::parse(&["127.0.0.0/8"]).unwrap().into(),
        ..Settings::default()
    };
    let p = start_proxy(trusted, |tls, plain| {
        let routes = [
            route("v2out", plain, None, &[echo], Some("v2")),
            route("v1out", tls, None, &[echo], Some("v1")),
        ];
        router(tls, plain, &routes, "")
    })
    .await;
    let real: std::net::SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let dst: std::net::SocketAddr = "198.51.100.1:443".parse().unwrap();

    // v1 in on the plain port (route sends v2 out), v2 in on the TLS port
    // (plain bytes after it; route sends v1 out).
    for (header_in, listener, v1_out) in [
        (encode_v1(real, dst), p.plain, false),
        (encode_v2(real, dst), p.tls, true),
    ] {
        let expected_out = if v1_out {
            encode_v1(real, listener)
        } else {
            encode_v2(real, listener)
        };
        let mut s = TcpStream::connect(listener).await.unwrap();
        let mut msg = header_in.clone();
        msg.extend_from_slice(b"payload");
        s.write_all(&msg).await.unwrap();
        // The echo backend returns what it received: the proxy's header
        // (carrying the real client), then the payload — and not the
        // client's own header, which the proxy consumed.
        let mut back = vec![0u8; expected_out.len() + 7];
        tokio::time::timeout(STEP, s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, [expected_out.as_slice(), b"payload"].concat());
        let seen = tokio::time::timeout(STEP, first.recv())
            .await
            .unwrap()
            .unwrap();
        let Ok(ProxyParse::Header { header: out, .. }) = parse(&seen) else {
            panic!("backend did not get a PROXY header: {seen:?}")
        };
        assert_eq!(out.source, Some(real));
        drop(s);
    }
    p.settled().await;
    p.stop().await;

    // acceptProxyProtocol on, but loopback is not a trusted source: a
    // PROXY header from it is a protocol error — closed, counted.
    let (echo, _) = echo_backend().await;
    let untrusted = Settings {
        accept_proxy_protocol: true,
        trusted_proxies: IpList::parse(&["10.0.0.0/8"]).unwrap().into(),
        ..Settings::default()
    };
    let p = start_proxy(untrusted, |tls, plain| {
        router(tls, plain, &[route("any", tls, None, &[echo], None)], "")
    })
    .await;
    for header in [encode_v1(real, dst), encode_v2(real, dst)] {
        let mut s = TcpStream::connect(p.tls).await.unwrap();
        s.write_all(&header).await.unwrap();
        s.write_all(b"payload").await.unwrap();
        assert_eq!(read_to_end(&mut s).await, b"");
    }
    // The same headers with only their first byte in the first segment:
    // neither TLS nor yet a signature, so the proxy must wait for more
    // rather than route the rest of a spoofed header as data.
    for header in [encode_v1(real, dst), encode_v2(real, dst)] {
        let mut s = TcpStream::connect(p.tls).await.unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(&header[..1]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&header[1..]).await.unwrap();
        s.write_all(b"payload").await.unwrap();
        assert_eq!(read_to_end(&mut s).await, b"", "split {:?}", &header[..1]);
    }
    // A malformed header from a trusted peer is refused too.
    p.proxy.reload(Settings {
        accept_proxy_protocol: true,
        trusted_proxies: IpList::parse(&["127.0.0.1"]).unwrap().into(),
        ..Settings::default()
    });
    let mut s = TcpStream::connect(p.tls).await.unwrap();
    s.write_all(b"PROXY TCP4 1.2.3.4 nonsense\r\n")
        .await
        .unwrap();
    assert_eq!(read_to_end(&mut s).await, b"");
    p.settled().await;
    assert_eq!(
        p.proxy.metrics().refusal_count("bad-proxy-header"),
        5,
        "{:?}",
        p.proxy.metrics().refusals()
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_the_handshake_times_out_and_fails_over() {
    // A listener whose accept queue is full and never drained: further
    // SYNs go unanswered, as with a black-holed host.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(1).unwrap();
    let blackhole = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let attempt = std::net::TcpStream::connect_timeout(&blackhole, Duration::from_millis(200));
        match attempt {
            Ok(s) => fillers.push(s),
            Err(_) => break, // the queue is full: connects now hang
        }
    }
    let (echo, _) = echo_backend().await;
    let settings = Settings {
        connect_timeout: Duration::from_millis(300),
        ..Settings::default()
    };
    let p = start_proxy(settings, |tls, plain| {
        let routes = [
            route("hole", plain, None, &[blackhole], None),
            route("failover", tls, None, &[blackhole, echo], None),
        ];
        router(tls, plain, &routes, "")
    })
    .await;

    let started = std::time::Instant::now();
    let mut s = TcpStream::connect(p.plain).await.unwrap();
    assert_eq!(read_to_end(&mut s).await, b"");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "closed only after the connect timeout: {took:?}"
    );

    let mut s = TcpStream::connect(p.tls).await.unwrap();
    s.write_all(b"not tls").await.unwrap();
    let mut back = [0u8; 7];
    tokio::time::timeout(STEP, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"not tls", "the next target after the timeout");
    drop(s);
    p.settled().await;
    assert_eq!(p.proxy.metrics().refusal_count("backend-unreachable"), 1);
    p.stop().await;
    drop((full, fillers));
}
