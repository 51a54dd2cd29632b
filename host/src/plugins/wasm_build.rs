// Builds a plugin crate for `wasm32-wasip2` with a nested `cargo build`.
//
// Shared, through `include!`, by `host/build.rs` (which embeds the default
// plugins) and by `turnout::testing` (which builds the plugin under test),
// so it uses `std` only.

/// Finds cargo's target directory at or above `start` (it holds `CACHEDIR.TAG`).
#[allow(dead_code)]
fn find_target_dir(start: &std::path::Path) -> Option<std::path::PathBuf> {
    start
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(std::path::Path::to_path_buf)
}

/// The target directory plugin builds share: `$TURNOUT_WASM_TARGET_DIR`, else
/// `<target dir>/wasm` of the cargo build containing `start`.
#[allow(dead_code)]
fn wasm_target_dir(start: &std::path::Path) -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("TURNOUT_WASM_TARGET_DIR") {
        return std::path::PathBuf::from(dir);
    }
    find_target_dir(start)
        .unwrap_or_else(|| std::env::temp_dir().join("turnout-target"))
        .join("wasm")
}

/// Runs `cargo build --target wasm32-wasip2 --profile plugin` on the crate in
/// `manifest_dir` and returns the path of the `.wasm` it produced.
#[allow(dead_code)]
fn cargo_build_wasm(
    manifest_dir: &std::path::Path,
    target_dir: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    use std::process::Command;

    let manifest = manifest_dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(format!("no Cargo.toml in {}", manifest_dir.display()));
    }
    // Cargo reports canonical paths; match against the same form.
    let manifest = std::fs::canonicalize(&manifest).unwrap_or(manifest);
    if let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        && out.status.success()
        && !String::from_utf8_lossy(&out.stdout).contains("wasm32-wasip2")
    {
        return Err(
            "the wasm32-wasip2 target is not installed: run `rustup target add wasm32-wasip2` \
             (`cargo xtask demo` and `cargo xtask test` do it for you)"
                .to_owned(),
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--target", "wasm32-wasip2", "--profile", "plugin", "--lib"])
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit());
    // What the outer cargo (clippy, coverage, a cross target) set for its own
    // build must not leak into the plugin build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CLIPPY_ARGS",
        "__CARGO_FIX_PLZ",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build {}: {e}", manifest.display()))?;
    if !out.status.success() {
        return Err(format!(
            "building {} for wasm32-wasip2 failed (cargo's messages are above)",
            manifest.display()
        ));
    }
    let manifest_str = manifest.display().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"") || !line.contains(&manifest_str) {
            continue;
        }
        if let Some(end) = line.find(".wasm\"")
            && let Some(start) = line[..end].rfind('"')
        {
            return Ok(std::path::PathBuf::from(&line[start + 1..end + 5]));
        }
    }
    Err(format!(
        "cargo built {} but produced no .wasm: is it `crate-type = [\"cdylib\", \"rlib\"]`?",
        manifest.display()
    ))
}
