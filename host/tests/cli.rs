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
