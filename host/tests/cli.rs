//! The `turnout` binary as an operator runs it.

use std::process::Command;

fn turnout() -> Command {
    Command::new(env!("CARGO_BIN_EXE_turnout"))
}

#[test]
fn plugins_lists_the_embedded_defaults() {
    let out = turnout().arg("plugins").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("keepalive") && l.ends_with("from embedded")),
        "{stdout}"
    );
}

#[test]
fn plugins_reports_every_broken_file_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("one.wasm"), b"junk").unwrap();
    std::fs::write(dir.path().join("two.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    let out = turnout()
        .arg("plugins")
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: plugin \"one\" is not WebAssembly"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: plugin \"two\" is a core WebAssembly module, not a component; build it with `--target wasm32-wasip2`"),
        "{stderr}"
    );
    assert!(stderr.contains("error: 2 plugin problem(s)"), "{stderr}");
    assert!(!stderr.contains("Stack backtrace"), "{stderr}");
}

#[test]
fn a_missing_plugins_dir_is_named() {
    let out = turnout()
        .args(["plugins", "--dir", "/definitely/not/here"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("plugins directory /definitely/not/here does not exist"),
        "{stderr}"
    );
}

/// `turnout check` reads every certificate of a terminated route and
/// names the key path and the file of each one that is broken.
#[test]
fn check_validates_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let (pem, good_key, bad_key) = (
        write("app.pem", &cert.pem()),
        write("app.key", &key.serialize_pem()),
        write("other.key", &other.serialize_pem()),
    );
    let config = |key: &str| {
        let text = serde_json::json!({ "routes": [
            { "match": { "ports": 18443, "domains": "app.test", "protocol": "tcp" },
              "action": { "type": "forward", "targets": [{ "host": "127.0.0.1", "port": 1 }],
                          "tls": { "mode": "terminate", "certificate": { "cert": pem, "key": key } } } }
        ]})
        .to_string();
        write("turnout.json", &text)
    };
    let out = turnout()
        .args(["check", "-c", &config(&good_key)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("1 certificates"), "{stdout}");

    let out = turnout()
        .args(["check", "-c", &config(&bad_key)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("routes[0].action.tls.certificate.key:")
            && stderr.contains("other.key does not match the certificate in")
            && stderr.contains("app.pem"),
        "{stderr}"
    );
}
