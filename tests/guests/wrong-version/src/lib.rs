//! A component built against `turnout:plugin@0.3.0`; this host (0.2, 0.1) must
//! refuse it with a message naming both versions.

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({ world: "plugin", path: "wit" });

    struct Future;

    impl exports::turnout::plugin::hooks::Guest for Future {
        fn init(config: String) -> Result<String, String> {
            Ok(config)
        }
    }

    export!(Future);
}
