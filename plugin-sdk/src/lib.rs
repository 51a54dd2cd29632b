//! Write [Turnout](https://example.invalid/turnout) proxy plugins in Rust.
//!
//! A plugin is a type implementing [`Plugin`]; [`export_plugin!`] turns it into
//! a WebAssembly component (`cargo build --target wasm32-wasip2`) that the
//! `turnout` host loads from its plugins directory.
//!
//! Map of the crate:
//! * [`Plugin`] — one method per hook, each defaulting to "no opinion";
//!   the hook order is drawn on the trait.
//! * [`types`] — what hooks receive and return (mirrors `wit/plugin.wit`).
//! * [`host`] — logging, clocks, the host's connection counters and the
//!   per-plugin key-value store.
//! * [`config`] — reading a JSON plugin config with errors that name the key path.
//! * [`matching`] — SmartProxy's domain-wildcard, IP-pattern and path rules.
//! * `testing` (native builds) — [`testing::Harness`] and [`testing::FakeHost`]:
//!   unit-test a plugin natively with `cargo test`, and run the very same
//!   cases against the compiled `.wasm` with `turnout::testing::wasm_harness`.
//!
//! ```
//! use turnout_plugin_sdk::prelude::*;
//!
//! /// Sends every connection for `*.example.com` to one backend.
//! struct Example;
//!
//! impl Plugin for Example {
//!     fn init(_config: &str) -> Result<Self, InitError> {
//!         Ok(Example)
//!     }
//!     fn info(&self) -> PluginInfo {
//!         PluginInfo::new("example", "0.1.0")
//!             .hooks(Hooks::ROUTE)
//!             .listen_tls([PortRange::single(8443)])
//!     }
//!     fn route(&self, conn: &Connection) -> RouteDecision {
//!         match conn.sni() {
//!             Some(sni) if glob_match("*.example.com", sni) => RouteDecision::Forward(
//!                 Forward::new("example", vec![Target::new("127.0.0.1", 9443)]),
//!             ),
//!             _ => RouteDecision::Pass,
//!         }
//!     }
//! }
//!
//! turnout_plugin_sdk::export_plugin!(Example);
//! ```
//!
//! A plugin crate is `crate-type = ["cdylib", "rlib"]` so it builds both as
//! a component and as a native library for tests. The SDK never panics on
//! anything the host sends.

#![deny(missing_docs)]

// The wasm32 bindings name their runtime by absolute path
// (`::turnout_plugin_sdk::…`), which must also resolve inside this crate.
#[allow(unused_extern_crates)]
extern crate self as turnout_plugin_sdk;

pub mod config;
mod convert;
mod convert_http;
pub mod host;
mod http;
pub mod kv;
pub mod matching;
pub mod packed;
mod plugin;
pub mod types;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod export;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

// The wasm plugin's global allocator; its unit tests run natively.
#[cfg(any(
    test,
    all(
        target_family = "wasm",
        not(target_feature = "atomics"),
        feature = "fast-alloc"
    )
))]
mod alloc;

pub use plugin::{Hooks, InitError, Plugin, PluginInfo, PortRange};
pub use types::*;

/// The version of the WIT package this SDK speaks (`turnout:plugin@…`).
pub const WIT_VERSION: &str = "0.3.0";

/// Everything a plugin usually needs: `use turnout_plugin_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::host;
    pub use crate::matching::{DomainPattern, IpList, IpPattern, PathPattern, glob_match};
    pub use crate::plugin::{Hooks, InitError, Plugin, PluginInfo, PortRange};
    pub use crate::types::*;
}

#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use crate::export::{Adapter, bindings};
    pub use wit_bindgen;
}

/// Exports a [`Plugin`] implementation as the component's `hooks`.
///
/// Expands to nothing in native builds, so the same crate links natively
/// for unit tests.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type __TurnoutPluginExport = $crate::__private::Adapter<$plugin>;
            $crate::__private::bindings::__export_turnout_hooks!(
                __TurnoutPluginExport with_types_in $crate::__private::bindings
            );
        };
    };
}
