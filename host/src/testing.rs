//! Run a plugin's harness tests against its compiled `.wasm`.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // in a plugin crate's tests, with `turnout` as a dev-dependency:
//! let mut h = turnout::testing::wasm_harness(env!("CARGO_MANIFEST_DIR"), "{}")?;
//! println!("{}", h.info().name);
//! # Ok(())
//! # }
//! ```
//!
//! The plugin is built with `cargo build --target wasm32-wasip2` (cached by
//! cargo) and loaded in the same runtime the proxy uses, with a
//! [`FakeHost`] standing in for the proxy's counters, clock and store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use turnout_plugin_sdk::testing::{CallError, FakeHost, Harness, Request, Target};
use turnout_plugin_sdk::*;

use crate::plugins::{
    CallFailure, FailureKind, FailurePolicy, LoadError, LoadedPlugin, Runtime, RuntimeConfig,
};

fn runtime() -> Result<Arc<Runtime>, CallError> {
    static RUNTIME: OnceLock<Result<Arc<Runtime>, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Runtime::new(RuntimeConfig {
                // Tests share two cores with the compiler; a generous deadline
                // still stops a runaway plugin without flaking.
                call_deadline: Duration::from_secs(2),
                init_deadline: Duration::from_secs(5),
                ..RuntimeConfig::default()
            })
            .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(CallError::Load)
}

/// Builds the plugin crate at `manifest_dir` once per test process.
pub fn built_wasm(manifest_dir: impl AsRef<Path>) -> Result<PathBuf, CallError> {
    static BUILT: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let dir = manifest_dir.as_ref().to_path_buf();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(&dir) {
        return Ok(p.clone());
    }
    let wasm = crate::plugins::build_plugin(&dir).map_err(CallError::Load)?;
    built.insert(dir, wasm.clone());
    Ok(wasm)
}

fn to_call_error(f: CallFailure) -> CallError {
    match f.kind {
        FailureKind::Trap | FailureKind::Instantiate => CallError::Trap(f.message),
        FailureKind::Deadline => CallError::Deadline,
        FailureKind::MemoryLimit => CallError::MemoryLimit,
        FailureKind::Malformed => CallError::Malformed(f.message),
        FailureKind::Init => CallError::Init(f.message),
    }
}

fn load_error(e: LoadError) -> CallError {
    match e {
        LoadError::Init { failure, .. } => to_call_error(failure),
        other => CallError::Load(other.to_string()),
    }
}

/// A [`Target`] backed by a `.wasm` in wasmtime.
pub struct WasmTarget {
    plugin: Arc<LoadedPlugin>,
}

impl WasmTarget {
    /// Loads `wasm` with `config`, its host imports answered by `host`.
    pub fn load(wasm: &Path, host: Arc<FakeHost>, config: &str) -> Result<Self, CallError> {
        let bytes = std::fs::read(wasm)
            .map_err(|e| CallError::Load(format!("cannot read {}: {e}", wasm.display())))?;
        let name = wasm
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin");
        let plugin = runtime()?
            .load_plugin(name, &bytes, config, FailurePolicy::Closed, host)
            .map_err(load_error)?;
        Ok(Self { plugin })
    }

    /// The loaded plugin (metrics, info).
    pub fn plugin(&self) -> &Arc<LoadedPlugin> {
        &self.plugin
    }
}

impl Target for WasmTarget {
    fn info(&self) -> &PluginInfo {
        self.plugin.info()
    }
    fn admit(&mut self, peer: &Peer) -> Result<AdmitDecision, CallError> {
        self.plugin.admit(peer).map_err(to_call_error)
    }
    fn route(&mut self, conn: &Connection) -> Result<RouteDecision, CallError> {
        self.plugin.route(conn).map_err(to_call_error)
    }
    fn policy(
        &mut self,
        conn: &Connection,
        route: &Routed,
        defaults: &Policy,
    ) -> Result<PolicyDecision, CallError> {
        self.plugin
            .policy(conn, route, defaults)
            .map_err(to_call_error)
    }
    fn on_idle(&mut self, conn: &Connection, stats: &IdleStats) -> Result<IdleDecision, CallError> {
        self.plugin.on_idle(conn, stats).map_err(to_call_error)
    }
    fn request(&mut self, request: &Request) -> Result<RequestDecision, CallError> {
        // What the HTTP server does: the whole header map for `header`, the
        // declared slots in the head.
        let mut headers = http::HeaderMap::new();
        for (name, value) in request.headers() {
            let (Ok(name), Ok(value)) = (
                http::header::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_bytes(value),
            ) else {
                return Err(CallError::Malformed(format!(
                    "test request header {name:?} is not a valid HTTP header"
                )));
            };
            headers.append(name, value);
        }
        let mut head = request.head_for(&self.plugin.info().interest);
        head.headers = self.plugin.request_slot_values(&headers);
        self.plugin
            .request(&mut head, &mut headers)
            .map_err(to_call_error)
    }
    fn response(&mut self, head: &ResponseHead) -> Result<ResponseDecision, CallError> {
        self.plugin.response(head).map_err(to_call_error)
    }
    fn approve_certificate(
        &mut self,
        name: &str,
        client: std::net::SocketAddr,
    ) -> Result<CertificateDecision, CallError> {
        self.plugin
            .approve_certificate(name, client)
            .map_err(to_call_error)
    }
}

/// Builds the plugin crate at `manifest_dir` and returns a harness running
/// its `.wasm` with a fresh [`FakeHost`].
pub fn wasm_harness(manifest_dir: impl AsRef<Path>, config: &str) -> Result<Harness, CallError> {
    wasm_harness_with_host(manifest_dir, Arc::new(FakeHost::new()), config)
}

/// Same, with this host.
pub fn wasm_harness_with_host(
    manifest_dir: impl AsRef<Path>,
    host: Arc<FakeHost>,
    config: &str,
) -> Result<Harness, CallError> {
    let wasm = built_wasm(manifest_dir)?;
    let target = WasmTarget::load(&wasm, host.clone(), config)?;
    Ok(Harness::from_target(Box::new(target), host))
}

/// Declares two tests per case — `native::<case>` (the plugin compiled
/// into the test) and `wasm::<case>` (its built `.wasm`, found from the
/// calling crate's manifest directory) — for case functions of the shape
/// `fn case(make: &dyn Fn(&str) -> Result<Harness, CallError>)`, so the
/// same test body runs both ways:
///
/// ```ignore
/// turnout::natively_and_as_wasm!(Guard: info, defaults, ip_lists);
/// ```
///
/// `Guard` must be in scope where the macro is called.
#[macro_export]
macro_rules! natively_and_as_wasm {
    ($plugin:ident: $($case:ident),* $(,)?) => {
        mod native {
            $(
                #[test]
                fn $case() {
                    super::$case(&$crate::testing::native::<super::$plugin>);
                }
            )*
        }
        mod wasm {
            $(
                #[test]
                fn $case() {
                    super::$case(&|config| {
                        $crate::testing::wasm_harness(env!("CARGO_MANIFEST_DIR"), config)
                    });
                }
            )*
        }
    };
}

/// `Harness::native::<P>` as a function, for [`natively_and_as_wasm!`].
pub fn native<P: Plugin>(config: &str) -> Result<Harness, CallError> {
    Harness::native::<P>(config)
}
