//! The plugins directory: load at start, hot add / replace / remove while
//! "connections" hold the old chain, and a broken file never replaces a
//! working version.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use turnout::plugins::{
    EmbeddedPlugin, LoadError, NoCounters, Origin, PluginSet, PluginSettings, ReloadEvent, Routing,
    Runtime, RuntimeConfig,
};
use turnout_plugin_sdk::testing::tls_conn;
use turnout_tests::guest_bytes;

fn runtime() -> Arc<Runtime> {
    Runtime::new(RuntimeConfig {
        cache_dir: None,
        call_deadline: Duration::from_secs(2),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

fn leak(bytes: Vec<u8>) -> &'static [u8] {
    Box::leak(bytes.into_boxed_slice())
}

fn route_plugin(set: &PluginSet) -> Option<String> {
    match set
        .chain()
        .route(&tls_conn("10.0.0.1:1", 443, "svc1.example.com"))
    {
        Routing::Forward { plugin, .. } => Some(plugin),
        _ => None,
    }
}

fn names(set: &PluginSet) -> Vec<String> {
    set.chain()
        .plugins()
        .iter()
        .map(|p| p.name().to_owned())
        .collect()
}

fn copy_in(dir: &Path, fixture: &str, as_name: &str) {
    // Write then rename, as the docs tell operators to.
    let tmp = dir.join(format!(".{as_name}.tmp"));
    std::fs::write(&tmp, guest_bytes(fixture)).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{as_name}.wasm"))).unwrap();
}

/// Rescans until something other than "nothing yet" happens (files are
/// loaded once stable over two scans), at most a few times.
fn rescan_until_change(set: &PluginSet) -> Vec<ReloadEvent> {
    for _ in 0..3 {
        let events = set.rescan();
        if !events.is_empty() {
            return events;
        }
    }
    Vec::new()
}

#[test]
fn directory_plugins_add_override_and_fall_back_without_touching_live_chains() {
    let dir = tempfile::tempdir().unwrap();
    copy_in(dir.path(), "probe", "probe");
    let settings = PluginSettings {
        dir: Some(dir.path().to_path_buf()),
        order: vec!["table".into()],
        configs: [("table".to_owned(), r#"{"routes": 10}"#.to_owned())].into(),
        ..PluginSettings::default()
    };
    let embedded = vec![EmbeddedPlugin {
        name: "table",
        bytes: leak(guest_bytes("table")),
    }];
    let set = PluginSet::load(runtime(), settings, embedded, Arc::new(NoCounters)).unwrap();
    assert_eq!(
        names(&set),
        ["table", "probe"],
        "ordered first, then the rest by name"
    );
    assert_eq!(route_plugin(&set).as_deref(), Some("table"));
    let live = set.chain(); // what a connection accepted now holds

    // Override the embedded `table` with a file.
    copy_in(dir.path(), "trivial", "table");
    let events = rescan_until_change(&set);
    assert!(
        matches!(&events[..], [ReloadEvent::Loaded { name, origin: Origin::File(_), .. }] if name == "table"),
        "{events:?}"
    );
    assert_eq!(set.chain().plugins()[0].info().name, "trivial");
    assert_eq!(
        live.plugins()[0].info().name,
        "table",
        "the live connection keeps its chain"
    );

    // A broken replacement is refused; the file version keeps serving.
    std::fs::write(dir.path().join("table.wasm"), b"not wasm at all").unwrap();
    let events = rescan_until_change(&set);
    assert!(
        matches!(&events[..], [ReloadEvent::Failed(LoadError::Compile { plugin, .. })] if plugin == "table"),
        "{events:?}"
    );
    assert_eq!(set.chain().plugins()[0].info().name, "trivial");
    assert!(
        set.rescan().is_empty(),
        "a failed version is not retried until it changes"
    );

    // Removing the file brings the embedded one back.
    std::fs::remove_file(dir.path().join("table.wasm")).unwrap();
    let events = set.rescan();
    assert!(
        matches!(&events[..], [ReloadEvent::Removed { name }] if name == "table"),
        "{events:?}"
    );
    assert_eq!(set.chain().plugins()[0].info().name, "table");
    assert_eq!(set.chain().plugins()[0].origin(), &Origin::Embedded);

    // Removing a plugin with no embedded fallback drops it from the chain.
    std::fs::remove_file(dir.path().join("probe.wasm")).unwrap();
    set.rescan();
    assert_eq!(names(&set), ["table"]);
}

#[test]
fn start_up_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.wasm"), b"junk").unwrap();
    copy_in(dir.path(), "wrong-version", "future");
    let settings = PluginSettings {
        dir: Some(dir.path().to_path_buf()),
        order: vec!["missing".into()],
        ..PluginSettings::default()
    };
    let errors = match PluginSet::load(runtime(), settings, Vec::new(), Arc::new(NoCounters)) {
        Ok(_) => panic!("must fail"),
        Err(errors) => errors,
    };
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 3, "{text:#?}");
    assert!(
        text[0].contains("\"broken\" is not WebAssembly"),
        "{text:#?}"
    );
    assert!(
        text[1].contains("\"future\" was built against turnout:plugin@0.9.0"),
        "{text:#?}"
    );
    assert!(
        text[2].contains("\"missing\" is named in plugins.order but is neither embedded"),
        "{text:#?}"
    );
}
