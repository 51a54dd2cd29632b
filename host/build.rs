//! Builds the default plugins under `plugins/` for `wasm32-wasip2` and
//! generates the table that embeds them in the binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

include!("src/plugins/wasm_build.rs");

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("host/ is inside the workspace")
        .to_path_buf();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    for watched in [
        "plugins",
        "plugin-sdk/src",
        "plugin-sdk/Cargo.toml",
        "wit",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=TURNOUT_WASM_TARGET_DIR");

    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("plugins"))
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join("Cargo.toml").is_file())
                .collect()
        })
        .unwrap_or_default();
    crates.sort();

    let target_dir = wasm_target_dir(&out_dir);
    let mut table = String::from("static EMBEDDED: &[EmbeddedPlugin] = &[\n");
    for krate in &crates {
        let name = krate
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 plugin dir name");
        let wasm = match cargo_build_wasm(krate, &target_dir) {
            Ok(w) => w,
            Err(e) => {
                // One `error: turnout@…: …` line that says what to do, rather
                // than a panic and its backtrace.
                println!("cargo::error=cannot build the default plugin {name:?}: {e}");
                return;
            }
        };
        let dest = out_dir.join(format!("{name}.wasm"));
        copy(&wasm, &dest);
        writeln!(
            table,
            "    EmbeddedPlugin {{ name: {name:?}, bytes: include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.wasm\")) }},"
        )
        .expect("write to String");
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("embedded.rs"), table).expect("write embedded.rs");
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = std::fs::copy(from, to) {
        panic!("cannot copy {} to {}: {e}", from.display(), to.display());
    }
}
