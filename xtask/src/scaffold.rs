//! `cargo xtask new-plugin NAME [--dir PATH]` writes a plugin crate;
//! `cargo xtask build-plugin PATH` builds one for `wasm32-wasip2` and says
//! how to deploy it; [`check`] proves a fresh scaffold builds and passes
//! its tests (`cargo xtask test` runs it).
//!
//! Without `--dir` the crate goes to `examples/plugins/NAME`, a member of
//! this workspace (package `example-NAME`). Any other directory inside a
//! member glob of the root `Cargo.toml` is a member too; anywhere else the
//! crate is standalone: its own `[workspace]`, this checkout's profiles and
//! `Cargo.lock`, and path dependencies on this checkout's `plugin-sdk/` and
//! `host/` (nothing is on crates.io).

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, ensure_wasm_target, root, run, step};

// `cargo_build_wasm`: the same nested build `host/build.rs` and the test
// harness run, so the three agree on flags and output.
include!("../../host/src/plugins/wasm_build.rs");

const LIB_RS: &str = include_str!("../templates/lib.rs");
const HARNESS_RS: &str = include_str!("../templates/harness.rs");

/// A crate `new-plugin` wrote.
struct Scaffold {
    dir: PathBuf,
    package: String,
    member: bool,
}

pub(crate) fn new_plugin(args: &[String]) -> Result<()> {
    let (mut name, mut dir) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = Some(it.next().context("--dir needs a path")?),
            flag if flag.starts_with('-') => {
                bail!("new-plugin: unknown option {flag:?} (usage: new-plugin NAME [--dir PATH])")
            }
            n if name.is_none() => name = Some(n.to_owned()),
            extra => bail!("new-plugin: unexpected argument {extra:?}"),
        }
    }
    let name = name.context("usage: cargo xtask new-plugin NAME [--dir PATH]")?;
    validate_name(&name)?;
    let dir = match dir {
        Some(d) => normalize(&std::env::current_dir()?.join(d)),
        None => root().join("examples/plugins").join(&name),
    };
    let s = scaffold(&name, &dir)?;
    let shown = shown(&s.dir);
    let mut out = format!("created plugin `{name}` in {shown} ");
    if s.member {
        let _ = writeln!(out, "(package {}, a workspace member)", s.package);
    } else {
        let _ = writeln!(
            out,
            "(a standalone crate using this checkout's SDK at {})",
            root().join("plugin-sdk").display()
        );
    }
    let _ = write!(
        out,
        "  src/lib.rs        routes TLS connections for {name}.localhost on port 8443 to 127.0.0.1:9443,\n\
         \x20                   and answers HTTP requests for it that carry an `x-{name}` header\n\
         \x20 tests/harness.rs  the same cases natively and against the built .wasm\n\n\
         next steps:\n"
    );
    if s.member {
        let _ = writeln!(
            out,
            "  cargo test -p {}   # the cases natively and as .wasm",
            s.package
        );
    } else {
        let _ = writeln!(
            out,
            "  (cd {shown} && cargo test)   # the cases natively and as .wasm; the first run\n\
             \x20   # compiles the host (minutes); CARGO_TARGET_DIR={} reuses this checkout's build",
            root().join("target").display()
        );
    }
    let _ = write!(
        out,
        "  cargo xtask build-plugin {shown}   # builds the .wasm, prints how to deploy it\n\
         \x20 # then, with `cargo xtask demo` running and the .wasm deployed:\n\
         \x20 curl -sS -k --resolve {name}.localhost:8443:127.0.0.1 https://{name}.localhost:8443/\n"
    );
    if s.package.starts_with("turnout-plugin-") {
        let _ = writeln!(
            out,
            "note: crates under plugins/ are embedded in the turnout binary as default plugins"
        );
    }
    if ["guard", "routes", "keepalive"].contains(&name.as_str()) {
        let _ = writeln!(
            out,
            "note: deployed as {name}.wasm it replaces the embedded default plugin `{name}`"
        );
    }
    eprint!("{out}");
    Ok(())
}

pub(crate) fn build_plugin(args: &[String]) -> Result<()> {
    let [path] = args else {
        bail!("usage: cargo xtask build-plugin PATH (a plugin crate's directory)");
    };
    let dir = normalize(&std::env::current_dir()?.join(path));
    if !dir.join("Cargo.toml").is_file() {
        bail!(
            "{} has no Cargo.toml: PATH is a plugin crate's directory",
            dir.display()
        );
    }
    ensure_wasm_target()?;
    let wasm = build_wasm(&dir)?;
    let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
    let name = plugin_name(&dir, &wasm);
    let wasm = wasm.display();
    let demo = shown(&crate::demo::plugins_dir());
    eprintln!(
        "\nbuilt {wasm} ({} KiB)\n\n\
         Deploy it as {name}.wasm: copy it in under a dot-name, then rename, so the proxy\n\
         never reads half a file (it ignores dot-files). Into `cargo xtask demo`'s plugins directory:\n\n\
         \x20 cp {wasm} {demo}/.{name}.wasm && mv {demo}/.{name}.wasm {demo}/{name}.wasm\n\n\
         (for another proxy: its `plugins.dir`, or the directory given with --plugins)",
        size.div_ceil(1024)
    );
    Ok(())
}

/// Scaffolds a plugin outside the workspace, runs its tests and builds it,
/// sharing the workspace's target directory so nothing already built is
/// built again.
pub(crate) fn check() -> Result<()> {
    step("a scaffolded plugin builds and passes its tests (new-plugin outside the workspace)");
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("turnout-new-plugin-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = check_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    eprintln!("    took {:.0?}", started.elapsed());
    Ok(())
}

fn check_in(dir: &Path) -> Result<()> {
    scaffold("scaffold-check", dir)?;
    let target = target_dir_of(&root())?;
    run(cargo()
        .args(["test", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target))?;
    // Only the scaffold is linted: it is a workspace of its own.
    run(cargo()
        .args(["clippy", "--quiet", "--all-targets", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .args(["--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", &target))?;
    let wasm = cargo_build_wasm(dir, &target.join("wasm")).map_err(anyhow::Error::msg)?;
    eprintln!("    built {}", wasm.display());
    Ok(())
}

fn validate_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "invalid plugin name {name:?}: use lowercase letters, digits and single dashes, \
             starting with a letter (e.g. `sni-canary`); it names the crate and the .wasm"
        );
    }
    if [
        "test",
        "std",
        "core",
        "alloc",
        "proc-macro",
        "turnout",
        "xtask",
    ]
    .contains(&name)
    {
        bail!("{name:?} is taken by a crate the plugin builds with; pick another name");
    }
    Ok(())
}

fn scaffold(name: &str, dir: &Path) -> Result<Scaffold> {
    if dir.exists() && std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_some()) {
        bail!(
            "{} already exists and is not empty; nothing was written (choose another --dir)",
            dir.display()
        );
    }
    let member = member_dir(dir)?;
    let package = match member.as_deref() {
        Some("plugins") => format!("turnout-plugin-{name}"),
        Some("tests/guests") => format!("guest-{name}"),
        Some("examples/plugins") => format!("example-{name}"),
        _ => name.to_owned(),
    };
    let ty = type_name(name);
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{Type}}", &ty)
            .replace("{{crate}}", &package.replace('-', "_"))
    };
    let manifest = if member.is_some() {
        member_manifest(name, &package)
    } else {
        standalone_manifest(name)?
    };
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("tests"))?;
    write(&dir.join("Cargo.toml"), &manifest)?;
    write(&dir.join("src/lib.rs"), &fill(LIB_RS))?;
    write(&dir.join("tests/harness.rs"), &fill(HARNESS_RS))?;
    // The templates are formatted for a name of one length; reformat for
    // this one (best effort: rustfmt comes with rustup's default profile).
    let _ = Command::new("rustfmt")
        .args(["--edition", "2024"])
        .arg(dir.join("src/lib.rs"))
        .arg(dir.join("tests/harness.rs"))
        .status();
    if member.is_none() {
        write(&dir.join(".gitignore"), "/target\n")?;
        // The versions this checkout is tested with (and already built).
        std::fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock"))
            .context("cannot copy Cargo.lock")?;
    }
    Ok(Scaffold {
        dir: dir.to_path_buf(),
        package,
        member: member.is_some(),
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// `sni-canary` → `SniCanary`, with `Plugin` appended unless the name ends
/// in it, so that it never clashes with the SDK prelude (`Target`, …).
fn type_name(name: &str) -> String {
    let mut ty: String = name
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    if !ty.ends_with("Plugin") || ty == "Plugin" {
        ty.push_str("Plugin");
    }
    ty
}

fn member_manifest(name: &str, package: &str) -> String {
    format!(
        r#"[package]
name = "{package}"
description = "Turnout plugin `{name}`: routes TLS connections by SNI, answers HTTP requests carrying x-{name}"
version.workspace = true
edition.workspace = true
publish = false

[package.metadata.turnout]
# Deploy the .wasm as {name}.wasm (`cargo xtask build-plugin` says how).
plugin = "{name}"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
turnout-plugin-sdk.workspace = true
serde_json.workspace = true

[dev-dependencies]
# `turnout::testing`: the harness cases against the built .wasm.
turnout = {{ workspace = true, features = ["testing"] }}

[lints]
workspace = true
"#
    )
}

fn standalone_manifest(name: &str) -> Result<String> {
    let quote = |p: PathBuf| format!("{:?}", p.display().to_string());
    let root_manifest = std::fs::read_to_string(root().join("Cargo.toml"))?;
    Ok(format!(
        r#"[package]
name = "{name}"
description = "Turnout plugin `{name}`: routes TLS connections by SNI, answers HTTP requests carrying x-{name}"
version = "0.1.0"
edition = "2024"
publish = false

[package.metadata.turnout]
# Deploy the .wasm as {name}.wasm (`cargo xtask build-plugin` says how).
plugin = "{name}"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
# Turnout is not on crates.io: the SDK and the host come from this checkout.
turnout-plugin-sdk = {{ path = {sdk} }}
serde_json = "1"

[dev-dependencies]
# The host library runs the harness cases against the built .wasm
# (`turnout::testing`, behind the `testing` feature).
turnout = {{ path = {host}, default-features = false, features = ["testing"] }}

# A workspace of its own, not a member of Turnout's.
[workspace]

# The profiles below are Turnout's (its root Cargo.toml): the `plugin`
# profile builds the .wasm, and the dev settings keep wasmtime fast in tests.
{profiles}"#,
        sdk = quote(root().join("plugin-sdk")),
        host = quote(root().join("host")),
        profiles = profile_sections(&root_manifest),
    ))
}

/// Every `[profile…]` table of a manifest, with the comment lines just
/// above each.
fn profile_sections(manifest: &str) -> String {
    let (mut out, mut comments, mut in_profile) = (String::new(), String::new(), false);
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('#') {
            comments.push_str(line);
            comments.push('\n');
            continue;
        }
        if t.starts_with('[') {
            in_profile = t.starts_with("[profile.");
            if in_profile {
                out.push_str(&comments);
            }
        }
        comments.clear();
        if in_profile {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The member glob's parent (`plugins`, `examples/plugins`, …) when `dir`
/// would be a member of this workspace; `None` outside it.
fn member_dir(dir: &Path) -> Result<Option<String>> {
    let Ok(rel) = dir.strip_prefix(root()) else {
        return Ok(None);
    };
    let rel = rel.to_string_lossy().replace('\\', "/");
    let manifest = std::fs::read_to_string(root().join("Cargo.toml"))?;
    let Some(members) = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
    else {
        return Ok(None);
    };
    for m in members.split(',').map(|m| m.trim().trim_matches('"')) {
        if let Some(parent) = m.strip_suffix("/*")
            && rel.rsplit_once('/').is_some_and(|(p, _)| p == parent)
        {
            return Ok(Some(parent.to_owned()));
        }
        if !m.is_empty() && m == rel {
            return Ok(Some(rel.rsplit_once('/').map_or("", |(p, _)| p).to_owned()));
        }
    }
    eprintln!(
        "note: {} is inside the Turnout checkout but not a workspace member: \
         it becomes a workspace of its own",
        dir.display()
    );
    Ok(None)
}

/// Removes `.` and `..` lexically (the directory may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `dir` relative to the current directory when inside it.
fn shown(dir: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| dir.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| dir.to_path_buf())
        .display()
        .to_string()
}

/// The target directory cargo uses for the crate at `dir` (honours
/// `CARGO_TARGET_DIR` and the crate's workspace).
fn target_dir_of(dir: &Path) -> Result<PathBuf> {
    let out = cargo()
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed for {}:\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json = String::from_utf8_lossy(&out.stdout);
    let Some(value) = json
        .split_once("\"target_directory\":\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v.replace("\\\\", "\\"))
    else {
        bail!("cargo metadata did not name a target directory");
    };
    Ok(PathBuf::from(value))
}

/// Builds into `$TURNOUT_WASM_TARGET_DIR`, else `<target dir>/wasm`: where
/// the test harness builds the same crate, so one build serves both.
fn build_wasm(dir: &Path) -> Result<PathBuf> {
    let target = match std::env::var_os("TURNOUT_WASM_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => target_dir_of(dir)?.join("wasm"),
    };
    step(&format!(
        "building {} for wasm32-wasip2 (profile `plugin`, into {})",
        shown(dir),
        target.display()
    ));
    let wasm = cargo_build_wasm(dir, &target).map_err(anyhow::Error::msg)?;
    Ok(wasm)
}

/// The name to deploy under: `package.metadata.turnout.plugin` (what
/// `new-plugin` writes), else the `.wasm`'s name without the workspace's
/// package prefixes.
fn plugin_name(dir: &Path, wasm: &Path) -> String {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    if let Some((_, rest)) = manifest.split_once("[package.metadata.turnout]")
        && let Some(line) = rest
            .lines()
            .take_while(|l| !l.trim_start().starts_with('['))
            .find(|l| l.trim_start().starts_with("plugin ="))
        && let Some(name) = line.split('"').nth(1)
    {
        return name.to_owned();
    }
    let stem = wasm
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    ["turnout_plugin_", "example_", "guest_"]
        .iter()
        .find_map(|p| stem.strip_prefix(p))
        .unwrap_or(&stem)
        .to_owned()
}
