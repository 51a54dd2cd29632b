//! `turnout run` as an operator drives it: a config file, a plugins
//! directory, SIGHUP with a broken and then a changed file, SIGTERM drain.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const STEP: Duration = Duration::from_secs(30);

/// A backend that answers every connection with `tag` and then echoes.
fn backend(tag: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.write_all(tag.as_bytes());
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(path: &Path, port: u16, backend: u16) {
    write_config_with(path, port, backend, "[]");
}

fn write_config_with(path: &Path, port: u16, backend: u16, tls_ports: &str) {
    let config = format!(
        r#"{{
  "bind": ["127.0.0.1", "::1"],
  "gracefulShutdownTimeout": 1500,
  "plugins": {{
    "dir": "plugins",
    "config": {{ "router": {{ "plainPorts": [{port}], "tlsPorts": {tls_ports},
      "routes": [{{ "name": "r", "port": {port}, "targets": [["127.0.0.1", {backend}]] }}] }} }}
  }}
}}"#
    );
    std::fs::write(path, config).unwrap();
}

/// A temp dir with the router fixture in `plugins/`.
fn with_router() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let router = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/guests/router");
    let wasm = turnout::testing::built_wasm(&router).unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::fs::copy(wasm, dir.path().join("plugins/router.wasm")).unwrap();
    dir
}

fn spawn_logged(cmd: &mut Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, lines)
}

fn greeting(port: u16) -> String {
    greeting_at("127.0.0.1", port)
}

fn greeting_at(ip: &str, port: u16) -> String {
    try_greeting(ip, port).unwrap_or_else(|e| panic!("no greeting through {ip}:{port}: {e}"))
}

fn try_greeting(ip: &str, port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect((ip, port))?;
    s.set_read_timeout(Some(STEP))?;
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn wait_for(lines: &mpsc::Receiver<String>, what: &str) -> String {
    let deadline = std::time::Instant::now() + STEP;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(what) => return line,
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    panic!("turnout never logged {what:?}");
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn run_reloads_on_sighup_keeps_serving_on_a_broken_file_and_drains_on_sigterm() {
    let dir = with_router();
    let (one, two) = (backend("one"), backend("two"));
    let port = free_port();
    let config = dir.path().join("turnout.json");
    write_config(&config, port, one);
    let (mut child, lines) = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_turnout"))
            .args(["run", "-c"])
            .arg(&config),
    );
    let listening = wait_for(&lines, "turnout listening on");
    assert!(listening.contains(&format!("[::1]:{port}")), "{listening}");
    assert_eq!(greeting(port), "one");
    assert_eq!(greeting_at("::1", port), "one", "IPv6 listener");

    // A connection that stays open across the reloads.
    let mut live = TcpStream::connect(("127.0.0.1", port)).unwrap();
    live.set_read_timeout(Some(STEP)).unwrap();
    let mut buf = [0u8; 3];
    live.read_exact(&mut buf).unwrap();

    // A broken file is refused; the running config keeps serving.
    std::fs::write(&config, r#"{ "inactivityTimout": 5 }"#).unwrap();
    signal(&child, "-HUP");
    let refused = wait_for(&lines, "refused; the running config stays");
    assert!(
        refused.contains("turnout.json") && refused.contains("inactivityTimout"),
        "{refused}"
    );
    assert_eq!(greeting(port), "one");

    // A good file takes effect for new connections.
    write_config(&config, port, two);
    signal(&child, "-HUP");
    wait_for(&lines, "configuration changed (SIGHUP)");
    assert_eq!(greeting(port), "two");
    live.write_all(b"hey").unwrap();
    live.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hey", "the live connection was not touched");

    // A reload that moves the route to another port binds it (on both
    // addresses) and closes the old one; the live connection accepted
    // there runs on.
    let moved = free_port();
    write_config(&config, moved, two);
    signal(&child, "-HUP");
    let changed = wait_for(&lines, "configuration changed (SIGHUP)");
    assert!(
        changed.contains(&format!("listeners_added=127.0.0.1:{moved},[::1]:{moved}"))
            && changed.contains(&format!("listeners_removed=127.0.0.1:{port},[::1]:{port}")),
        "{changed}"
    );
    assert_eq!(greeting(moved), "two");
    assert_eq!(greeting_at("::1", moved), "two");
    assert_eq!(
        TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| e.kind())
            .err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "the old port is closed"
    );
    live.write_all(b"hey").unwrap();
    live.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hey", "a connection on a closed port runs on");

    // SIGTERM: stop accepting, drain (the live connection holds it open
    // for the 1.5 s grace), then close it and exit cleanly.
    signal(&child, "-TERM");
    wait_for(&lines, "draining");
    let status = {
        let deadline = std::time::Instant::now() + STEP;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "turnout did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(
        live.read(&mut buf).unwrap_or(0),
        0,
        "the live connection was closed at the end of the drain"
    );
}

#[test]
fn check_lists_every_config_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.json");
    std::fs::write(
        &config,
        r#"{ "acme": { "environment": "production" }, "keepAliveInactivityMultiplier": 0, "acceptProxyProtocol": true, "routes": [] }"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_turnout"))
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "acme.environment: not supported by Turnout",
        "keepAliveInactivityMultiplier",
        "proxyIPs is empty",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn running_out_of_file_descriptors_is_logged_backed_off_and_survived() {
    let dir = with_router();
    let one = backend("one");
    let (port, tls_port) = (free_port(), free_port());
    let config = dir.path().join("turnout.json");
    write_config_with(&config, port, one, &format!("[{tls_port}]"));
    let (mut child, lines) = spawn_logged(
        Command::new("prlimit")
            .arg("--nofile=96:96")
            .arg(env!("CARGO_BIN_EXE_turnout"))
            .args(["run", "-c"])
            .arg(&config),
    );
    wait_for(&lines, "turnout listening on");
    assert_eq!(greeting(port), "one");

    // Connections on the TLS port that never send a ClientHello each hold
    // one descriptor until initialDataTimeout: enough of them exhaust 96.
    let idle: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", tls_port)).ok())
        .collect();
    wait_for(&lines, "out of resources; backing off");
    drop(idle);

    // Once the clients are gone, the proxy serves again.
    let deadline = std::time::Instant::now() + STEP;
    loop {
        if try_greeting("127.0.0.1", port).is_ok_and(|g| g == "one") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "proxy did not recover"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

/// An HTTP/1.1 backend answering `ok` to every request on a connection.
fn http_backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0
                        || s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn log_format_json_gives_one_json_access_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let (port, up) = (free_port(), http_backend());
    let config = dir.path().join("turnout.json");
    let routes = format!(
        r#"{{ "bind": ["127.0.0.1"], "routes": [{{ "name": "web", "match": {{ "ports": {port}, "domains": "web.test" }},
              "action": {{ "type": "forward", "targets": [{{ "host": "127.0.0.1", "port": {up} }}] }} }}] }}"#
    );
    std::fs::write(&config, routes).unwrap();
    let (child, lines) = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_turnout"))
            .args(["--log-format", "json", "run", "-c"])
            .arg(&config),
    );
    // A failed assertion must not leave the proxy running.
    struct Reaped(Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reaped(child);
    wait_for(&lines, "turnout listening on");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(b"GET /a?b=1 HTTP/1.1\r\nHost: web.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let line = wait_for(&lines, "\"message\":\"request\"");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let f = &v["fields"];
    assert_eq!(f["method"], "GET", "{line}");
    assert_eq!(f["host"], "web.test");
    assert_eq!(f["path"], "/a");
    assert_eq!(f["status"], 200);
    assert_eq!(f["route"], "web");
    assert_eq!(f["upstream"], format!("127.0.0.1:{up}"));
    assert_eq!(f["client"], "127.0.0.1");
    assert_eq!(f["bytes"], 2);
    signal(&child.0, "-TERM");
    assert!(child.0.wait().unwrap().success());
}

fn route(name: &str, port: u16, backend: u16) -> String {
    format!(
        r#"{{ "name": "{name}", "match": {{ "ports": {port} }}, "action": {{ "type": "forward", "targets": [{{ "host": "127.0.0.1", "port": {backend} }}] }} }}"#
    )
}

fn routes_apply(admin: u16, file: &Path, token: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_turnout"))
        .args(["routes", "apply", "-f"])
        .arg(file)
        .args(["--admin", &format!("http://127.0.0.1:{admin}")])
        .args(token)
        .env_remove("TURNOUT_ADMIN_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn routes_apply_replaces_the_routes_of_a_running_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (backend("one"), backend("two"));
    let (port, added, admin) = (free_port(), free_port(), free_port());
    std::fs::write(dir.path().join("token"), "a-token-for-the-test-1234\n").unwrap();
    let config = dir.path().join("turnout.json");
    std::fs::write(
        &config,
        format!(
            r#"{{ "bind": ["127.0.0.1"], "gracefulShutdownTimeout": 500,
                  "admin": {{ "listen": "127.0.0.1:{admin}", "tokenFile": "token" }},
                  "routes": [{}] }}"#,
            route("a", port, one)
        ),
    )
    .unwrap();
    let (mut child, lines) = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_turnout"))
            .args(["run", "-c"])
            .arg(&config),
    );
    wait_for(&lines, "turnout listening on");
    assert_eq!(greeting(port), "one");

    let routes = dir.path().join("routes.json");
    std::fs::write(
        &routes,
        format!("[{}, {}]", route("a", port, two), route("b", added, one)),
    )
    .unwrap();
    let token_file = dir.path().join("token");
    let token = ["--token-file", token_file.to_str().unwrap()];
    let out = routes_apply(admin, &routes, &token);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("added: b")
            && stdout.contains("changed: a")
            && stdout.contains(&format!("listening on: 127.0.0.1:{added}")),
        "{stdout}"
    );
    let logged = wait_for(&lines, "configuration changed (admin API)");
    assert!(
        logged.contains("routes_added=b") && logged.contains("routes_changed=a"),
        "{logged}"
    );
    assert_eq!(greeting(port), "two");
    assert_eq!(greeting(added), "one");

    // Refused: a wrong token, then a route list with two problems — each
    // listed with its key path, and nothing changed.
    let out = routes_apply(admin, &routes, &["--token", "wrong"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("answered 401"),
        "{stderr}"
    );
    std::fs::write(
        &routes,
        r#"{ "routes": [
            { "name": "x", "match": { "ports": 0 }, "action": { "type": "forward", "targets": [{ "host": "h", "port": 1 }] } },
            { "name": "y", "match": { "ports": 1 }, "action": { "type": "teleport" } }
        ] }"#,
    )
    .unwrap();
    let out = routes_apply(admin, &routes, &token);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("answered 400"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routes[0].match.ports") && stderr.contains("routes[1].action.type"),
        "{stderr}"
    );
    assert_eq!(greeting(port), "two");
    assert_eq!(greeting(added), "one");

    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}
