//! The routes plugin through the SDK harness, natively and as `.wasm`:
//! every case function runs against both.

mod cases;

use turnout_plugin_routes::Routes;
use turnout_plugin_sdk::testing::Harness;

#[test]
fn native() {
    cases::all(&|config| Harness::native::<Routes>(config));
}

#[test]
fn wasm() {
    let dir = env!("CARGO_MANIFEST_DIR");
    cases::all(&|config| turnout::testing::wasm_harness(dir, config));
}
