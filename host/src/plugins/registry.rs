//! The set of plugins the proxy runs: the embedded defaults, overridden and
//! extended by `.wasm` files in the plugins directory, watched for changes.
//!
//! A change builds a new [`Chain`] and swaps it in atomically; connections
//! keep the chain they started with. A file that fails to load is reported
//! and the version already serving (file or embedded) stays.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use turnout_plugin_sdk::host::HostApi;
use turnout_plugin_sdk::kv::KvLimits;

use super::chain::Chain;
use super::engine::Runtime;
use super::error::LoadError;
use super::host_api::{Counters, PluginHost, SharedKv};
use super::loaded::{FailurePolicy, LoadArgs, LoadedPlugin, Origin};
use crate::watch::{StableFiles, with_extension};

/// A plugin compiled into the binary.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedPlugin {
    /// Its name (the directory under `plugins/`).
    pub name: &'static str,
    /// The component.
    pub bytes: &'static [u8],
}

/// How the operator configured plugins.
#[derive(Debug, Clone, Default)]
pub struct PluginSettings {
    /// Directory of `.wasm` files; a file `NAME.wasm` adds plugin NAME or
    /// overrides the embedded one.
    pub dir: Option<PathBuf>,
    /// Chain order by name; plugins not listed run after, by name.
    pub order: Vec<String>,
    /// Each plugin's `init` configuration (JSON text), by name.
    pub configs: HashMap<String, String>,
    /// Failure policies by name (default `closed`).
    pub failure: HashMap<String, FailurePolicy>,
    /// Bounds of each plugin's key-value store.
    pub kv_limits: KvLimits,
    /// The store shared by every instance (`cluster`); `None`: in memory.
    pub shared_kv: Option<Arc<dyn SharedKv>>,
}

/// Why a [`PluginSet::reconfigure_then`] changed nothing.
#[derive(Debug)]
pub enum Refused<E> {
    /// Plugins that would not load or initialise (all of them).
    Plugins(Vec<LoadError>),
    /// The gate's answer.
    Gate(E),
}

/// The chain order: `order` first, then the rest by name.
fn ordered(
    settings: &PluginSettings,
    loaded: &BTreeMap<String, Arc<LoadedPlugin>>,
) -> Vec<Arc<LoadedPlugin>> {
    let mut out: Vec<Arc<LoadedPlugin>> = settings
        .order
        .iter()
        .filter_map(|n| loaded.get(n).cloned())
        .collect();
    out.extend(
        loaded
            .iter()
            .filter(|(n, _)| !settings.order.contains(n))
            .map(|(_, p)| p.clone()),
    );
    out
}

/// What a rescan did.
#[derive(Debug)]
pub enum ReloadEvent {
    /// A plugin version now serves new connections.
    Loaded {
        /// Name.
        name: String,
        /// Version from `init`.
        version: String,
        /// Where from.
        origin: Origin,
    },
    /// A directory plugin was removed (an embedded one of the same name, if
    /// any, serves again).
    Removed {
        /// Name.
        name: String,
    },
    /// A file failed to load; the previous version keeps serving.
    Failed(LoadError),
}

/// The plugins the proxy runs, and the chain new connections use.
pub struct PluginSet {
    runtime: Arc<Runtime>,
    settings: arc_swap::ArcSwap<PluginSettings>,
    embedded: Vec<EmbeddedPlugin>,
    counters: Arc<dyn Counters>,
    hosts: Mutex<HashMap<String, Arc<PluginHost>>>,
    loaded: Mutex<BTreeMap<String, Arc<LoadedPlugin>>>,
    /// The plugins directory's watcher (`None` without a directory). Its
    /// lock is held across every rebuild of `loaded` — a rescan, a
    /// reconfigure — because each reads `loaded`, compiles for a while and
    /// writes back: two at once would lose what the other loaded (or keep
    /// a file loaded with the settings a reconfigure just replaced).
    rebuild: Mutex<Option<StableFiles>>,
    chain: ArcSwap<Chain>,
    #[cfg(test)]
    hooks: tests::Hooks,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chain = self.chain();
        let names: Vec<&str> = chain.plugins().iter().map(|p| p.name()).collect();
        f.debug_struct("PluginSet")
            .field("chain", &names)
            .finish_non_exhaustive()
    }
}

impl PluginSet {
    /// Loads the embedded plugins and every `.wasm` in the directory. Every
    /// failure is returned (for `turnout check` to list); the set is only
    /// built when there are none.
    pub fn load(
        runtime: Arc<Runtime>,
        settings: PluginSettings,
        embedded: Vec<EmbeddedPlugin>,
        counters: Arc<dyn Counters>,
    ) -> Result<Arc<Self>, Vec<LoadError>> {
        let watcher = settings
            .dir
            .clone()
            .map(|dir| StableFiles::in_dir(dir, with_extension("wasm")));
        let set = Arc::new(Self {
            runtime,
            settings: arc_swap::ArcSwap::from_pointee(settings),
            embedded,
            counters,
            hosts: Mutex::default(),
            loaded: Mutex::default(),
            rebuild: Mutex::new(watcher),
            chain: ArcSwap::from_pointee(Chain::default()),
            #[cfg(test)]
            hooks: tests::Hooks::default(),
        });
        let mut errors = Vec::new();
        let settings = set.settings.load_full();
        for e in set.embedded.clone() {
            match set.load_one(e.name, Arc::from(e.bytes), Origin::Embedded, &settings) {
                Ok(p) => {
                    lock(&set.loaded).insert(e.name.to_owned(), p);
                }
                Err(err) => errors.push(err),
            }
        }
        let events = match lock(&set.rebuild).as_mut() {
            Some(watcher) => set.scan_dir(watcher, true),
            None => Vec::new(),
        };
        for event in events {
            if let ReloadEvent::Failed(err) = event {
                errors.push(err);
            }
        }
        let embedded_names: Vec<&str> = set.embedded.iter().map(|e| e.name).collect();
        for name in &settings.order {
            if !lock(&set.loaded).contains_key(name) {
                errors.push(LoadError::NotFound {
                    plugin: name.clone(),
                    embedded: embedded_names.join(", "),
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        set.publish();
        Ok(set)
    }

    /// The chain for new connections.
    pub fn chain(&self) -> Arc<Chain> {
        self.chain.load_full()
    }

    /// The plugins directory, if any.
    pub fn dir(&self) -> Option<PathBuf> {
        self.settings.load().dir.clone()
    }

    /// Re-initialises every loaded plugin with new settings (SIGHUP): all
    /// or nothing — if any plugin refuses its new config, every plugin keeps
    /// its current version and config. The plugins directory itself is not
    /// changed by a reconfigure.
    ///
    /// It compiles and initialises every plugin, which takes a while: call
    /// it from a blocking thread. A rescan waits until it is done.
    pub fn reconfigure(&self, settings: PluginSettings) -> Result<(), Vec<LoadError>> {
        self.reconfigure_then(settings, |_| Ok::<(), std::convert::Infallible>(()))
            .map_err(|e| match e {
                Refused::Plugins(errors) => errors,
                Refused::Gate(never) => match never {},
            })
    }

    /// [`PluginSet::reconfigure`], with a last check: once every plugin has
    /// accepted its new config, `gate` sees the chain that would serve and
    /// may still refuse (binding the ports it declares, say); only when it
    /// answers `Ok` is the new chain swapped in.
    pub fn reconfigure_then<T, E>(
        &self,
        mut settings: PluginSettings,
        gate: impl FnOnce(&Chain) -> Result<T, E>,
    ) -> Result<T, Refused<E>> {
        let _rebuild = self.lock_rebuild();
        let current = self.settings.load_full();
        settings.dir = current.dir.clone();
        // The shared store is fixed at start, as the directory is.
        settings.shared_kv = current.shared_kv.clone();
        let plugins: Vec<(String, Origin)> = lock(&self.loaded)
            .iter()
            .map(|(n, p)| (n.clone(), p.origin().clone()))
            .collect();
        let mut fresh = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, origin) in plugins {
            let bytes: Result<Arc<[u8]>, LoadError> = match &origin {
                Origin::Embedded => self
                    .embedded
                    .iter()
                    .find(|e| e.name == name)
                    .map(|e| Arc::from(e.bytes))
                    .ok_or_else(|| LoadError::Link {
                        plugin: name.clone(),
                        message: "embedded plugin vanished".to_owned(),
                    }),
                Origin::File(path) => {
                    std::fs::read(path)
                        .map(Arc::from)
                        .map_err(|source| LoadError::Read {
                            plugin: name.clone(),
                            path: path.display().to_string(),
                            source,
                        })
                }
            };
            match bytes.and_then(|b| self.load_one(&name, b, origin, &settings)) {
                Ok(p) => {
                    fresh.insert(name, p);
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(Refused::Plugins(errors));
        }
        let passed = gate(&Chain::new(ordered(&settings, &fresh))).map_err(Refused::Gate)?;
        #[cfg(test)]
        self.hooks.before_publish();
        self.settings.store(Arc::new(settings));
        *lock(&self.loaded) = fresh;
        self.publish();
        Ok(passed)
    }

    fn host_for(&self, name: &str, settings: &PluginSettings) -> Arc<dyn HostApi> {
        lock(&self.hosts)
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(PluginHost::new(
                    name,
                    self.counters.clone(),
                    settings.kv_limits,
                    settings.shared_kv.clone(),
                ))
            })
            .clone()
    }

    fn load_one(
        &self,
        name: &str,
        bytes: Arc<[u8]>,
        origin: Origin,
        settings: &PluginSettings,
    ) -> Result<Arc<LoadedPlugin>, LoadError> {
        LoadedPlugin::load(
            &self.runtime,
            LoadArgs {
                name: name.to_owned(),
                bytes,
                origin,
                config: settings
                    .configs
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| "{}".to_owned()),
                failure_policy: settings.failure.get(name).copied().unwrap_or_default(),
                host: self.host_for(name, settings),
            },
        )
    }

    fn publish(&self) {
        let settings = self.settings.load();
        let chain = Chain::new(ordered(&settings, &lock(&self.loaded)));
        self.chain.store(Arc::new(chain));
    }

    /// Takes the rebuild lock (the `rebuild` field says why).
    fn lock_rebuild(&self) -> MutexGuard<'_, Option<StableFiles>> {
        #[cfg(test)]
        if let Err(std::sync::TryLockError::WouldBlock) = self.rebuild.try_lock() {
            self.hooks.contended();
        }
        lock(&self.rebuild)
    }

    /// Looks at the plugins directory once and applies what changed. A file
    /// is loaded once its size and mtime are the same on two scans in a row,
    /// so a copy in progress is not mistaken for a broken plugin.
    pub fn rescan(&self) -> Vec<ReloadEvent> {
        let events = match self.lock_rebuild().as_mut() {
            Some(watcher) => {
                let events = self.scan_dir(watcher, false);
                if events.iter().any(|e| !matches!(e, ReloadEvent::Failed(_))) {
                    self.publish();
                }
                events
            }
            None => Vec::new(),
        };
        for e in &events {
            match e {
                ReloadEvent::Loaded {
                    name,
                    version,
                    origin,
                } => {
                    tracing::info!(plugin = %name, version = %version, origin = ?origin, "plugin loaded")
                }
                ReloadEvent::Removed { name } => {
                    tracing::info!(plugin = %name, "plugin file removed")
                }
                ReloadEvent::Failed(err) => {
                    let serving = err
                        .plugin()
                        .is_some_and(|p| self.chain().plugins().iter().any(|l| l.name() == p));
                    if serving {
                        tracing::error!("{err}; the previous version keeps serving")
                    } else {
                        tracing::error!("{err}; not loaded")
                    }
                }
            }
        }
        events
    }

    /// Applies what `watcher` reports to `loaded`; the caller holds the
    /// rebuild lock (`watcher` is behind it). `now`: at start-up, every file
    /// present is taken as stable.
    fn scan_dir(&self, watcher: &mut StableFiles, now: bool) -> Vec<ReloadEvent> {
        let settings = self.settings.load_full();
        let mut events = Vec::new();
        let scanned = if now {
            watcher.scan_now()
        } else {
            watcher.scan()
        };
        let changes = match scanned {
            Ok(changes) => changes,
            Err(e) => {
                events.push(ReloadEvent::Failed(LoadError::Read {
                    plugin: "*".to_owned(),
                    path: watcher
                        .dir()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default(),
                    source: e,
                }));
                return events;
            }
        };
        // `with_extension` passes only UTF-8 stems.
        let name_of = |path: &PathBuf| path.file_stem().and_then(|s| s.to_str()).map(str::to_owned);
        for path in &changes.changed {
            let Some(name) = name_of(path) else { continue };
            let loaded = std::fs::read(path)
                .map_err(|source| LoadError::Read {
                    plugin: name.clone(),
                    path: path.display().to_string(),
                    source,
                })
                .and_then(|bytes| {
                    self.load_one(
                        &name,
                        Arc::from(bytes),
                        Origin::File(path.clone()),
                        &settings,
                    )
                });
            match loaded {
                Ok(p) => {
                    events.push(ReloadEvent::Loaded {
                        name: name.clone(),
                        version: p.info().version.clone(),
                        origin: p.origin().clone(),
                    });
                    lock(&self.loaded).insert(name, p);
                }
                Err(err) => events.push(ReloadEvent::Failed(err)),
            }
        }
        // Files that disappeared: fall back to the embedded plugin, if any.
        for path in &changes.removed {
            let Some(name) = name_of(path) else { continue };
            let was_file = lock(&self.loaded)
                .get(&name)
                .is_some_and(|p| matches!(p.origin(), Origin::File(_)));
            if !was_file {
                continue;
            }
            lock(&self.loaded).remove(&name);
            events.push(ReloadEvent::Removed { name: name.clone() });
            if let Some(e) = self.embedded.iter().find(|e| e.name == name) {
                match self.load_one(e.name, Arc::from(e.bytes), Origin::Embedded, &settings) {
                    Ok(p) => {
                        lock(&self.loaded).insert(name, p);
                    }
                    Err(err) => events.push(ReloadEvent::Failed(err)),
                }
            }
        }
        events
    }

    /// Rescans every `interval` until the task is dropped or aborted.
    /// Loading compiles, so it runs on the blocking pool.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        if self.settings.load().dir.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let set = self.clone();
            if tokio::task::spawn_blocking(move || set.rescan())
                .await
                .is_err()
            {
                tracing::error!("plugin rescan panicked; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Condvar;

    use super::*;
    use crate::plugins::{NoCounters, RuntimeConfig};

    type Hook = Box<dyn Fn() + Send + Sync>;

    /// Seams for tests: what runs in `reconfigure` between building the new
    /// versions and publishing them, and what runs when a rebuild finds the
    /// rebuild lock taken.
    #[derive(Default)]
    pub(super) struct Hooks {
        before_publish: Mutex<Option<Hook>>,
        contended: Mutex<Option<Hook>>,
    }

    impl Hooks {
        pub(super) fn before_publish(&self) {
            if let Some(f) = lock(&self.before_publish).take() {
                f();
            }
        }

        pub(super) fn contended(&self) {
            if let Some(f) = lock(&self.contended).as_ref() {
                f();
            }
        }
    }

    #[derive(Default)]
    struct Seen {
        rescan_done: bool,
        rescan_waiting: bool,
    }

    #[test]
    fn a_plugin_file_loaded_during_a_reconfigure_survives_it() {
        let guard = crate::plugins::embedded()
            .into_iter()
            .find(|e| e.name == "guard")
            .expect("guard is embedded");
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: None,
            pooling: false,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let settings = PluginSettings {
            dir: Some(dir.path().to_path_buf()),
            ..PluginSettings::default()
        };
        let set =
            PluginSet::load(runtime, settings.clone(), vec![guard], Arc::new(NoCounters)).unwrap();
        std::fs::write(dir.path().join("extra.wasm"), guard.bytes).unwrap();
        assert!(set.rescan().is_empty(), "first sight: waits one scan");

        // The scan that loads `extra` runs while the reconfigure is between
        // its snapshot of the plugins and publishing their new versions, and
        // the reconfigure goes on only once that scan has either finished or
        // is waiting for it.
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let signal = |seen: &Arc<(Mutex<Seen>, Condvar)>, f: fn(&mut Seen)| {
            f(&mut lock(&seen.0));
            seen.1.notify_all();
        };
        *lock(&set.hooks.contended) = Some(Box::new({
            let seen = seen.clone();
            move || signal(&seen, |s| s.rescan_waiting = true)
        }));
        let scan = Arc::new(Mutex::new(None));
        *lock(&set.hooks.before_publish) = Some(Box::new({
            let (set, seen, scan) = (set.clone(), seen.clone(), scan.clone());
            move || {
                let (set, seen2) = (set.clone(), seen.clone());
                *lock(&scan) = Some(std::thread::spawn(move || {
                    let events = set.rescan();
                    signal(&seen2, |s| s.rescan_done = true);
                    events
                }));
                let state = lock(&seen.0);
                drop(
                    seen.1
                        .wait_while(state, |s| !s.rescan_done && !s.rescan_waiting)
                        .unwrap(),
                );
            }
        }));
        set.reconfigure(settings).unwrap();
        let events = lock(&scan).take().expect("the hook ran").join().unwrap();
        assert!(
            matches!(&events[..], [ReloadEvent::Loaded { name, .. }] if name == "extra"),
            "{events:?}"
        );
        let names: Vec<String> = set
            .chain()
            .plugins()
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        assert_eq!(names, ["extra", "guard"], "the directory plugin survives");
        assert!(set.rescan().is_empty(), "and is not loaded again");
    }
}
