//! The plugin runtime: the only module that touches wasmtime.
//!
//! * [`engine`] — one `Engine` and `Linker` with fixed safe defaults, the
//!   epoch ticker; `cache` — the compilation cache on disk.
//! * [`loaded`] — one plugin version: `InstancePre`, warm-instance pool,
//!   deadline and memory cap per call, failure classification.
//! * [`chain`] — the ordered chain and its semantics.
//! * [`registry`] — embedded defaults plus the watched plugins directory.
//! * `bindings` / `host_api` — the WIT bindings and the host imports.

mod bindings;
mod cache;
pub mod chain;
pub mod engine;
mod error;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod host_api;
pub mod loaded;
mod metrics;
pub mod registry;
pub(crate) mod request;
mod validate;

pub use chain::{Admission, Approval, Chain, Routing};
pub use engine::{Runtime, RuntimeConfig, default_cache_dir};
pub use error::{CallFailure, FailureKind, LoadError};
pub use host_api::{Counters, NoCounters, NotShared, SharedKv};
pub use loaded::{FailurePolicy, LoadedPlugin, Origin, WIT_VERSION};
pub use metrics::{CALL_TIME_BUCKETS_US, PluginMetrics, PluginMetricsSnapshot};
pub use registry::{EmbeddedPlugin, PluginSet, PluginSettings, Refused, ReloadEvent};
pub use request::{HeadSlots, Requested};

/// The default plugins compiled into this binary (built by `build.rs` from
/// the crates under `plugins/`).
pub fn embedded() -> Vec<EmbeddedPlugin> {
    EMBEDDED.to_vec()
}

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

#[cfg(feature = "testing")]
pub use wasm_build::build_plugin;

/// Shells out to cargo: for tests (feature `testing`), never the binary.
#[cfg(feature = "testing")]
mod wasm_build {
    include!("wasm_build.rs");

    /// Builds the plugin crate at `manifest_dir` for `wasm32-wasip2` (cargo's
    /// own caching makes a repeat cheap) and returns the `.wasm` path.
    pub fn build_plugin(manifest_dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
        let start = std::env::current_exe().unwrap_or_else(|_| manifest_dir.to_path_buf());
        cargo_build_wasm(manifest_dir, &wasm_target_dir(&start))
    }
}
